//! `wrenn`: parses the command line and dispatches. `wrenn up` (single node, [`up`]), `wrenn
//! server` ([`control`]), `wrenn agent` ([`agent`]), `wrenn agent-cert` and `wrenn template
//! build` ([`images`]); the API's verbs (`wrenn capsule …`, `wrenn snapshot create`, `wrenn
//! template list|delete`) are in [`cli`]. Flags are in [`args`], their file and variables in
//! [`config`].

use std::path::PathBuf;

mod agent;
mod args;
mod cli;
mod config;
mod control;
mod images;
mod private;
mod quota;
mod shapes;
mod up;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Wrenn: secure sandboxes (capsules) for AI",
    after_help = "`up`, `server` and `agent` also read a TOML configuration file (--config FILE, \
                  default DATA_DIR/wrenn.toml when it exists) whose keys are their flags' names; \
                  flags beat WRENN_* variables, which beat the file, which beats the defaults."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single-node Wrenn: the control plane (REST API) and a host agent in one process.
    Up(args::UpArgs),
    /// Run the control plane alone, in front of a host agent elsewhere (mTLS).
    Server(args::ServerArgs),
    /// Run the host agent: capsules on this host, served over gRPC (`agent.v1`).
    Agent(args::AgentArgs),
    /// Create the agent PKI's CA in `--dir` if missing, and issue the agent's server
    /// certificate (`agent.pem`/`agent.key`) and a client certificate (`client.pem`/
    /// `client.key`) from it. Existing agent and client certificates are replaced.
    AgentCert {
        /// The PKI folder (created 0700; keys are 0600).
        #[arg(long, env = "WRENN_AGENT_TLS_DIR", value_name = "DIR")]
        dir: PathBuf,
        /// A DNS name or IP address of the agent (repeat for more). Default: localhost,
        /// 127.0.0.1 and this host's name.
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// The common name of the client certificate.
        #[arg(long, default_value = "wrenn-control-plane")]
        client_name: String,
    },
    /// Capsules: create, list, get, exec, shell, cp, pause, resume, destroy.
    Capsule(cli::CapsuleArgs),
    /// Snapshots: templates made from capsules.
    Snapshot(cli::SnapshotArgs),
    /// Hosts: create (with a registration token), list, get, token, tag, untag, drain,
    /// undrain, delete.
    Host(cli::HostArgs),
    /// Guest templates.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Build a template: `--name N -f Recipe|Dockerfile [--archive dir|file] [--healthcheck …]`
    /// through the API; or `TEMPLATE` (`minimal`, `python`): its guest image and snapshot on
    /// this machine (skipped when unchanged).
    Build(Box<images::BuildArgs>),
    /// List the team's template builds (through the API).
    Builds(cli::BuildsArgs),
    /// Cancel a template build (through the API).
    Cancel(cli::CancelArgs),
    /// List the templates capsules can be created from (through the API).
    #[command(visible_alias = "ls")]
    List(cli::TemplateListArgs),
    /// Delete a snapshot template (through the API).
    #[command(visible_alias = "rm")]
    Delete(cli::TemplateDeleteArgs),
}

/// The command line, with the configuration file and the `WRENN_*` variables under it. A bad
/// configuration is one line and exit code 2.
fn parse() -> Cli {
    let args: Vec<_> = std::env::args_os().collect();
    let cmd = config::layered(Cli::command(), &args, &|name| std::env::var(name).ok())
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2);
        });
    let matches = cmd.get_matches_from(&args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = parse().command;
    if matches!(
        command,
        Command::Up { .. } | Command::Server { .. } | Command::Agent { .. }
    ) {
        // Whatever these make (database, keys, capsules, snapshots) is private.
        private::set_umask();
    }
    match command {
        Command::Up(args) => up::run(args).await,
        Command::Server(args) => control::run(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::AgentCert {
            dir,
            names,
            client_name,
        } => agent::issue_cert(&dir, names, &client_name),
        Command::Template {
            command: TemplateCommand::Build(args),
        } => images::build(*args).await,
        // The API's verbs print their own errors and exit with their own codes.
        Command::Capsule(args) => std::process::exit(cli::capsule(args).await),
        Command::Snapshot(args) => std::process::exit(cli::snapshot(args).await),
        Command::Host(args) => std::process::exit(cli::host(args).await),
        Command::Template {
            command: TemplateCommand::List(args),
        } => std::process::exit(cli::template_list(args).await),
        Command::Template {
            command: TemplateCommand::Delete(args),
        } => std::process::exit(cli::template_delete(args).await),
        Command::Template {
            command: TemplateCommand::Builds(args),
        } => std::process::exit(cli::template_builds(args).await),
        Command::Template {
            command: TemplateCommand::Cancel(args),
        } => std::process::exit(cli::template_cancel(args).await),
    }
}

/// Exits with one line (`error: cannot start, missing: …`) and code 1 unless the host has
/// everything `needs` lists.
pub(crate) fn require(needs: &wrenn_agent::prereq::Needs) {
    if let Err(e) = wrenn_agent::prereq::check(needs) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Resolves on SIGINT or SIGTERM, after `on_stop(signal name)`.
pub(crate) fn stop_signal(
    on_stop: impl FnOnce(&str) + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        on_stop(name);
    })
}
