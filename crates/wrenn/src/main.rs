//! `wrenn`: so far, `wrenn template build`. The server, agent and CLI verbs arrive with their
//! issues.

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
