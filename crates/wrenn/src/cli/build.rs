//! `wrenn template build --name N -f FILE` (through the API, with a redrawn progress bar and
//! each step's line), `wrenn template builds`, `wrenn template cancel ID`.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use clap::Args;
use wrenn_client::builds::{Build, BuildStatus, BuildStep, CreateBuild};
use wrenn_server::builds::archive::{write_tar, Entry, Kind};

use super::{print::table, print_json, run, CliError, Conn};

/// The API build's flags of `wrenn template build`.
#[derive(Debug, Args)]
pub struct BuildApiArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The template to make (with `-f`).
    #[arg(long = "name", requires = "file")]
    pub build_name: Option<String>,
    /// A recipe or a Dockerfile (a Dockerfile starts with FROM, or its name says Dockerfile).
    #[arg(short = 'f', long = "file", requires = "build_name")]
    pub file: Option<PathBuf>,
    /// What COPY reads: a folder (sent as a tar) or a tar, tar.gz or zip file.
    #[arg(long, requires = "file")]
    archive: Option<PathBuf>,
    /// `[--interval=3s] [--timeout=10s] [--start-period=0s] [--retries=0] <command>`.
    #[arg(long, requires = "file", allow_hyphen_values = true)]
    healthcheck: Option<String>,
    /// A recipe's base template (default `minimal`).
    #[arg(long, requires = "file")]
    base: Option<String>,
    #[arg(long = "build-vcpus", value_name = "N", requires = "file")]
    build_vcpus: Option<u32>,
    #[arg(long = "memory-mb", requires = "file")]
    memory_mb: Option<u32>,
    #[arg(long = "disk-mb", requires = "file")]
    disk_mb: Option<u32>,
    /// Queue it and print its id without waiting.
    #[arg(long, requires = "file")]
    no_wait: bool,
    /// Build a platform template (`/v1/admin/builds`, platform admins only): every team sees
    /// and uses it, read-only.
    #[arg(long, requires = "file")]
    platform: bool,
}

#[derive(Debug, Args)]
pub struct BuildsArgs {
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    conn: Conn,
    /// The build's id (`bld-…`).
    id: String,
}

/// The folder's files as a tar (symlinks kept as they are; the server vets them).
fn tar_folder(root: &Path) -> Result<Vec<u8>, CliError> {
    let mut entries = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| CliError::io(&dir, e))?
            .filter_map(|e| e.ok())
            .collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .map_err(|_| CliError::new("io_error", "a path outside the folder"))?
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&p).map_err(|e| CliError::io(&p, e))?;
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).map_err(|e| CliError::io(&p, e))?;
                Kind::Symlink {
                    target: t.to_string_lossy().into_owned(),
                }
            } else if meta.is_dir() {
                stack.push(p.clone());
                Kind::Dir { mode }
            } else if meta.is_file() {
                Kind::File {
                    data: std::fs::read(&p).map_err(|e| CliError::io(&p, e))?,
                    mode,
                }
            } else {
                continue;
            };
            entries.push(Entry { path: rel, kind });
        }
    }
    Ok(write_tar(&entries))
}

fn step_line(s: &BuildStep, total: u32) -> String {
    let outcome = match (s.ok, s.exit) {
        (true, _) => "ok".to_string(),
        (false, Some(c)) => format!("exit {c}"),
        (false, None) => "failed".to_string(),
    };
    format!(
        "[{}/{}] {} ({outcome}, {:.1} s)",
        s.step,
        total,
        s.cmd,
        s.elapsed_ms as f64 / 1000.0
    )
}

/// A bar of `width` cells, `done` of `total` full.
fn bar(done: u32, total: u32, width: usize) -> String {
    let full = (done as usize * width) / (total.max(1) as usize);
    format!(
        "[{}{}]",
        "#".repeat(full.min(width)),
        " ".repeat(width - full.min(width))
    )
}

/// `wrenn template build --name N -f FILE …`.
pub async fn template_build(args: BuildApiArgs) -> i32 {
    run(async move {
        let client = args.conn.client()?;
        let file = args.file.clone().unwrap_or_default();
        let text = std::fs::read_to_string(&file).map_err(|e| CliError::io(&file, e))?;
        let named_docker = file.file_name().is_some_and(|n| {
            n.to_string_lossy()
                .to_ascii_lowercase()
                .contains("dockerfile")
        });
        let docker = named_docker
            || wrenn_types::recipe::detect(&text) == wrenn_types::recipe::Format::Dockerfile;
        let archive = match &args.archive {
            Some(p) if p.is_dir() => Some(tar_folder(p)?),
            Some(p) => Some(std::fs::read(p).map_err(|e| CliError::io(p, e))?),
            None => None,
        };
        let body = CreateBuild {
            name: args.build_name.clone().unwrap_or_default(),
            recipe: (!docker).then(|| text.lines().map(str::to_owned).collect()),
            dockerfile: docker.then(|| text.clone()),
            base_template: args.base.clone(),
            healthcheck: args.healthcheck.clone(),
            vcpus: args.build_vcpus,
            memory_mb: args.memory_mb,
            disk_mb: args.disk_mb,
            archive: archive.map(|a| base64::engine::general_purpose::STANDARD.encode(a)),
        };
        let b = if args.platform {
            client.create_platform_build(&body).await?
        } else {
            client.create_build(&body).await?
        };
        if args.no_wait {
            if args.conn.json {
                print_json(&b)?;
            } else {
                println!("{}", b.id);
            }
            return Ok(0);
        }
        let tty = std::io::stderr().is_terminal() && !args.conn.json;
        let mut printed = 0usize;
        let b = loop {
            let b = client.get_build(&b.id).await?;
            // Each finished step once, then the bar under it.
            let finished = b
                .logs
                .iter()
                .take_while(|s| s.ok || b.status.is_final())
                .count();
            if !args.conn.json {
                for s in &b.logs[printed..finished] {
                    if tty {
                        eprint!("\r\x1b[2K");
                    }
                    eprintln!("{}", step_line(s, b.total_steps));
                    if !s.ok && !s.stderr.is_empty() {
                        for l in s
                            .stderr
                            .lines()
                            .rev()
                            .take(10)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                        {
                            eprintln!("    {l}");
                        }
                    }
                }
            }
            printed = printed.max(finished);
            if b.status.is_final() {
                break b;
            }
            if tty {
                let current = b.logs.last().map(|s| s.cmd.as_str()).unwrap_or("queued");
                let current: String = current.chars().take(50).collect();
                eprint!(
                    "\r\x1b[2K{} {}/{} {}",
                    bar(b.current_step, b.total_steps, 30),
                    b.current_step,
                    b.total_steps,
                    current
                );
                let _ = std::io::stderr().flush();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if tty {
            eprint!("\r\x1b[2K");
        }
        if args.conn.json {
            print_json(&b)?;
        }
        match b.status {
            BuildStatus::Success => {
                if !args.conn.json {
                    println!("template {} built ({})", b.name, b.id);
                }
                Ok(0)
            }
            BuildStatus::Cancelled => Err(CliError::new(
                "cancelled",
                format!("build {} was cancelled", b.id),
            )),
            _ => Err(CliError::new(
                "build_failed",
                b.error.unwrap_or_else(|| "the build failed".into()),
            )),
        }
    })
    .await
}

fn build_rows(list: &[Build]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                b.name.clone(),
                serde_json::to_value(b.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                format!("{}/{}", b.current_step, b.total_steps),
                b.created_at.clone(),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATUS", "STEPS", "CREATED"], &rows)
}

/// `wrenn template builds`.
pub async fn template_builds(args: BuildsArgs) -> i32 {
    run(async move {
        let list = args.conn.client()?.list_builds().await?;
        if args.conn.json {
            print_json(&list)?;
        } else if list.is_empty() {
            eprintln!("no builds");
        } else {
            println!("{}", build_rows(&list));
        }
        Ok(0)
    })
    .await
}

/// `wrenn template cancel ID`.
pub async fn template_cancel(args: CancelArgs) -> i32 {
    run(async move {
        let b = args.conn.client()?.cancel_build(&args.id).await?;
        if args.conn.json {
            print_json(&b)?;
        } else {
            println!("{} cancelled", b.id);
        }
        Ok(0)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_step_lines() {
        assert_eq!(bar(0, 4, 8), "[        ]");
        assert_eq!(bar(2, 4, 8), "[####    ]");
        assert_eq!(bar(9, 4, 8), "[########]");
        let s = BuildStep {
            step: 2,
            phase: "recipe".into(),
            line: 1,
            cmd: "RUN make".into(),
            stdout: String::new(),
            stderr: String::new(),
            exit: Some(2),
            ok: false,
            elapsed_ms: 1500,
        };
        assert_eq!(step_line(&s, 5), "[2/5] RUN make (exit 2, 1.5 s)");
    }

    #[test]
    fn folders_become_vetted_tars() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f.txt"), "x").unwrap();
        let tar = tar_folder(d.path()).unwrap();
        let entries = wrenn_server::builds::archive::read(&tar).unwrap();
        assert!(entries.iter().any(|e| e.path == "a/b/f.txt"));
    }
}
