//! The user-facing verbs (`wrenn capsule …`, `wrenn snapshot create`, `wrenn template
//! list|delete`, `wrenn host …`): parse arguments, call `wrenn-client`, print. Text by default, the API's JSON
//! with `--json`. An error is one line on stderr (`error: <code>: <message>`) and exit code 1;
//! `exec` and `shell` exit with the command's code.

mod build;
mod cp;
mod host;
mod print;
mod shell;

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use print::{capsule_details, capsule_table, template_table};
use serde::Serialize;
use wrenn_client::{Client, ClientError, CreateCapsule, Exec, TemplateKind};

pub use build::{
    template_build, template_builds, template_cancel, BuildApiArgs, BuildsArgs, CancelArgs,
};
pub use host::{host, HostArgs};

/// How to reach the API, and how to print. Accepted before or after the verb.
#[derive(Debug, Args)]
pub struct Conn {
    /// The Wrenn API's URL.
    #[arg(long, global = true, env = "WRENN_BASE_URL", default_value = wrenn_client::DEFAULT_BASE_URL)]
    base_url: String,
    /// The API key (a local `wrenn up` writes one to DATA_DIR/admin-api-key).
    #[arg(long, global = true, env = "WRENN_API_KEY", hide_env_values = true)]
    api_key: Option<crate::args::Secret>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

impl Conn {
    fn client(&self) -> Result<Client, CliError> {
        let key = self.api_key.clone().map(|k| k.0).ok_or_else(|| {
            CliError::new(
                "missing_api_key",
                "no API key: set WRENN_API_KEY or pass --api-key",
            )
        })?;
        Ok(Client::new(&self.base_url, key)?)
    }
}

#[derive(Debug, Args)]
pub struct CapsuleArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: CapsuleCommand,
}

#[derive(Debug, Subcommand)]
enum CapsuleCommand {
    /// Create a capsule and print its id.
    Create {
        /// Template (a base template or one of your snapshots; server default `minimal`).
        #[arg(long)]
        template: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        #[arg(long, value_name = "MIB")]
        memory_mb: Option<u32>,
        /// Idle seconds before the capsule is paused (0: never).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u32>,
        /// An environment variable of every process in the capsule (repeat for more).
        #[arg(long = "env", value_name = "K=V", value_parser = key_value)]
        envs: Vec<(String, String)>,
        /// No internet access from the capsule.
        #[arg(long)]
        no_egress: bool,
    },
    /// List capsules.
    #[command(visible_alias = "ls")]
    List,
    /// Show a capsule.
    Get { id: String },
    /// Run a command to completion: its stdout and stderr go to ours, its exit code is ours.
    Exec {
        id: String,
        /// An environment variable of the command (repeat for more).
        #[arg(long = "env", value_name = "K=V", value_parser = key_value)]
        envs: Vec<(String, String)>,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Kill the command after this many seconds (server default 60; 0: never).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u32>,
        /// The command and its arguments (after `--`); no shell: use `sh -c '…'` for one.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// An interactive terminal in a capsule (Ctrl-C goes to the capsule; the shell's `exit`
    /// ends it). Without a TTY, stdin is sent as typed input.
    Shell {
        id: String,
        /// Reattach to the terminal with this tag instead of starting one.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Copy one file to or from a capsule: `cp LOCAL ID:/path` or `cp ID:/path LOCAL`
    /// (`-` is stdin or stdout). Streams; a directory destination keeps the file's name.
    Cp { src: String, dst: String },
    /// Pause a capsule (memory and processes are kept).
    Pause { id: String },
    /// Resume a paused capsule.
    Resume { id: String },
    /// Fork a running or paused capsule: N new capsules that continue from its exact state
    /// (memory, processes, files), on its host. Prints one child id per line.
    Fork {
        id: String,
        /// How many children (1..=32).
        #[arg(short = 'n', long = "count", default_value_t = 1)]
        count: u32,
    },
    /// Destroy capsules.
    #[command(visible_alias = "rm")]
    Destroy {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Make a template from a capsule (the capsule is left paused) and print its name.
    Create {
        id: String,
        /// The template's name (default: the server picks one).
        #[arg(long)]
        name: Option<String>,
        /// Replace a template of the same name.
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Debug, Args)]
pub struct TemplateListArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only `base` or only `snapshot` templates.
    #[arg(long = "type", value_name = "TYPE", value_parser = ["base", "snapshot"])]
    kind: Option<String>,
}

#[derive(Debug, Args)]
pub struct TemplateDeleteArgs {
    #[command(flatten)]
    conn: Conn,
    /// A snapshot template's name.
    name: String,
}

/// What the user sees when something fails.
#[derive(Debug)]
pub struct CliError {
    code: String,
    message: String,
}

impl CliError {
    fn new(code: &str, message: impl Into<String>) -> CliError {
        CliError {
            code: code.into(),
            message: message.into(),
        }
    }

    fn io(what: &std::path::Path, e: std::io::Error) -> CliError {
        CliError::new("io_error", format!("{}: {e}", what.display()))
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        CliError::new(e.code(), e.message())
    }
}

type Outcome = Result<i32, CliError>;

/// Runs `f` and turns its outcome into an exit code, printing an error as one line.
async fn run(f: impl std::future::Future<Output = Outcome>) -> i32 {
    match f.await {
        Ok(code) => code,
        Err(e) => {
            let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("error: {}: {}", e.code, one_line(&e.message));
            1
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

fn print_json(v: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::new("internal_error", e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// The exit code of a command's exit status (out of range: 255, as ssh does).
fn exit_code(code: i32) -> i32 {
    if (0..=255).contains(&code) {
        code
    } else {
        255
    }
}

/// `wrenn capsule …`.
pub async fn capsule(args: CapsuleArgs) -> i32 {
    run(capsule_inner(args)).await
}

async fn capsule_inner(args: CapsuleArgs) -> Outcome {
    let conn = &args.conn;
    let client = conn.client()?;
    match args.command {
        CapsuleCommand::Create {
            template,
            vcpus,
            memory_mb,
            timeout,
            envs,
            no_egress,
        } => {
            let req = CreateCapsule {
                template,
                vcpus,
                memory_mb,
                timeout_sec: timeout,
                envs: (!envs.is_empty()).then(|| envs.into_iter().collect::<BTreeMap<_, _>>()),
                egress: no_egress.then_some(false),
                ..CreateCapsule::default()
            };
            let c = client.create_capsule(&req).await?;
            if conn.json {
                print_json(&c)?;
            } else {
                println!("{}", c.id);
            }
        }
        CapsuleCommand::List => {
            let list = client.list_capsules().await?;
            if conn.json {
                print_json(&list)?;
            } else if list.is_empty() {
                eprintln!("no capsules");
            } else {
                println!("{}", capsule_table(&list));
            }
        }
        CapsuleCommand::Get { id } => {
            let c = client.get_capsule(&id).await?;
            if conn.json {
                print_json(&c)?;
            } else {
                println!("{}", capsule_details(&c));
            }
        }
        CapsuleCommand::Exec {
            id,
            envs,
            cwd,
            timeout,
            command,
        } => {
            let mut parts = command.into_iter();
            let cmd = parts.next().unwrap_or_default();
            let exec = Exec {
                cmd,
                args: parts.collect(),
                envs: envs.into_iter().collect(),
                cwd,
                timeout_sec: timeout,
                ..Exec::default()
            };
            let out = client.exec(&id, &exec).await?;
            if conn.json {
                print_json(&out.raw)?;
            } else {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                let mut stderr = std::io::stderr().lock();
                let _ = stdout.write_all(&out.stdout).and_then(|_| stdout.flush());
                let _ = stderr.write_all(&out.stderr).and_then(|_| stderr.flush());
                if let Some(e) = &out.error {
                    let _ = writeln!(stderr, "wrenn: the command did not finish: {e}");
                }
            }
            return Ok(exit_code(out.exit_code));
        }
        CapsuleCommand::Shell { id, tag } => {
            return shell::run(&client, &id, tag.as_deref()).await;
        }
        CapsuleCommand::Cp { src, dst } => cp::run(&client, &src, &dst, conn.json).await?,
        CapsuleCommand::Pause { id } => {
            let c = client.pause_capsule(&id).await?;
            if conn.json {
                print_json(&c)?;
            } else {
                println!("{} {}", c.id, c.status);
            }
        }
        CapsuleCommand::Resume { id } => {
            let c = client.resume_capsule(&id).await?;
            if conn.json {
                print_json(&c)?;
            } else {
                println!("{} {}", c.id, c.status);
            }
        }
        CapsuleCommand::Fork { id, count } => {
            let f = client.fork_capsule(&id, count).await?;
            if conn.json {
                print_json(&f)?;
            } else {
                for c in &f.capsules {
                    println!("{}", c.id);
                }
            }
        }
        CapsuleCommand::Destroy { ids } => {
            for id in ids {
                client.destroy_capsule(&id).await?;
                if conn.json {
                    print_json(&serde_json::json!({}))?;
                } else {
                    println!("{id} destroyed");
                }
            }
        }
    }
    Ok(0)
}

/// `wrenn snapshot …`.
pub async fn snapshot(args: SnapshotArgs) -> i32 {
    run(async move {
        let client = args.conn.client()?;
        match args.command {
            SnapshotCommand::Create {
                id,
                name,
                overwrite,
            } => {
                let t = client
                    .create_snapshot(&id, name.as_deref(), overwrite)
                    .await?;
                if args.conn.json {
                    print_json(&t)?;
                } else {
                    println!("{}", t.name);
                }
            }
        }
        Ok(0)
    })
    .await
}

/// `wrenn template list`.
pub async fn template_list(args: TemplateListArgs) -> i32 {
    run(async move {
        let client = args.conn.client()?;
        let kind = match args.kind.as_deref() {
            Some("base") => Some(TemplateKind::Base),
            Some(_) => Some(TemplateKind::Snapshot),
            None => None,
        };
        let list = client.list_templates(kind).await?;
        if args.conn.json {
            print_json(&list)?;
        } else if list.is_empty() {
            eprintln!("no templates");
        } else {
            println!("{}", template_table(&list));
        }
        Ok(0)
    })
    .await
}

/// `wrenn template delete NAME`.
pub async fn template_delete(args: TemplateDeleteArgs) -> i32 {
    run(async move {
        let client = args.conn.client()?;
        client.delete_template(&args.name).await?;
        if args.conn.json {
            print_json(&serde_json::json!({}))?;
        } else {
            println!("{} deleted", args.name);
        }
        Ok(0)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::{
        print::{human_bytes, table, when},
        *,
    };

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "STATUS", "X"],
            &[
                vec!["cl-1".into(), "running".into(), "a".into()],
                vec!["cl-22222".into(), "paused".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "ID        STATUS   X\ncl-1      running  a\ncl-22222  paused"
        );
    }

    #[test]
    fn key_values_and_sizes() {
        assert_eq!(key_value("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(key_value("A=").unwrap(), ("A".into(), "".into()));
        assert!(key_value("=x").is_err());
        assert!(key_value("novalue").is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(
            when(Some("2026-05-02T10:00:00.123Z")),
            "2026-05-02 10:00:00"
        );
        assert_eq!(exit_code(3), 3);
        assert_eq!(exit_code(-1), 255);
        assert_eq!(exit_code(300), 255);
    }
}
