//! `wrenn`: so far `wrenn agent` and `wrenn template build`. The server and the CLI verbs
//! arrive with their issues.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Wrenn: secure sandboxes (capsules) for AI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host agent: capsules on this host, served over gRPC (`agent.v1`).
    Agent {
        /// Address of the gRPC service.
        #[arg(long, env = "WRENN_AGENT_LISTEN", default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
        /// Where capsules live (`capsules/<id>/`).
        #[arg(long, env = "WRENN_DIR", default_value = "/var/lib/wrenn")]
        data_dir: PathBuf,
        /// Where built templates live.
        #[arg(long, env = "WRENN_IMAGES", default_value = "/var/lib/wrenn/images")]
        images: PathBuf,
        /// Most capsules this host runs at once.
        #[arg(long, default_value_t = 64)]
        max_capsules: usize,
    },
    /// Guest templates.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Build a template's image and its ready-to-restore snapshot (skipped when unchanged).
    Build {
        /// Template name (`minimal`, `python`).
        name: String,
        /// Where images live.
        #[arg(long, env = "WRENN_IMAGES", default_value = "/var/lib/wrenn/images")]
        images: PathBuf,
        /// The static envd binary to put into the image.
        #[arg(long, env = "WRENN_ENVD")]
        envd: PathBuf,
        /// vCPUs of the snapshot.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory of the snapshot, MiB.
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
    },
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
    match Cli::parse().command {
        Command::Agent {
            listen,
            data_dir,
            images,
            max_capsules,
        } => {
            let (accel, why) = wrenn_vmm::accel::detect();
            tracing::warn!(accel = accel.as_str(), reason = %why, "VM accelerator");
            let manager = std::sync::Arc::new(
                wrenn_agent::manager::Manager::start(wrenn_agent::manager::AgentConfig {
                    data_dir,
                    images_dir: images,
                    qemu: wrenn_vmm::qemu::default_qemu(),
                    max_capsules,
                    slots: wrenn_agent::manager::DEFAULT_SLOTS,
                })
                .await
                .context("starting the agent")?,
            );
            manager.spawn_reaper();
            manager.spawn_sampler();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            println!("wrenn agent listening on {}", listener.local_addr()?);
            let mut int =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let mut stopping = stop_rx.clone();
            let server = wrenn_agent::service::serve(
                wrenn_agent::service::Listen::Tcp(listener),
                None,
                manager,
                async move {
                    tokio::select! {
                        _ = int.recv() => tracing::warn!("SIGINT: stopping (capsules keep running)"),
                        _ = term.recv() => tracing::warn!("SIGTERM: stopping (capsules keep running)"),
                    }
                    let _ = stop_tx.send(true);
                },
            );
            // Clients that keep connections open get a few seconds, not forever.
            tokio::select! {
                r = server => r.context("serving")?,
                _ = async {
                    let _ = stopping.wait_for(|s| *s).await;
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                } => {}
            }
            tracing::warn!("agent stopped");
        }
        Command::Template {
            command:
                TemplateCommand::Build {
                    name,
                    images,
                    envd,
                    vcpus,
                    memory_mib,
                },
        } => {
            let (accel, why) = wrenn_vmm::accel::detect();
            println!("accelerator: {} ({why})", accel.as_str());
            let req = wrenn_agent::images::BuildRequest {
                template: name.clone(),
                images_dir: images,
                envd: envd.canonicalize().context("the envd binary")?,
                vcpus,
                memory_mib,
                accel,
                qemu: wrenn_vmm::qemu::default_qemu(),
            };
            let built = wrenn_agent::images::build(&req, |p| println!("{}", p.line))
                .await
                .with_context(|| format!("building template {name}"))?;
            println!(
                "template {name}: image {:.1} s, snapshot {:.1} s, at {}",
                built.image_time.as_secs_f64(),
                built.snapshot_time.as_secs_f64(),
                built.snapshot.dir().display()
            );
        }
    }
    Ok(())
}
