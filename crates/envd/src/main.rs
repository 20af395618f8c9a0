//! The `envd` binary: arguments, logging, then [`envd::server::serve`].

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// Wrenn's guest agent (E2B envd wire protocol).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:49983")]
    listen: SocketAddr,
    /// Port to listen on; overrides the port of --listen.
    #[arg(long)]
    port: Option<u16>,
    /// User for requests that name none, until /init sets another.
    #[arg(long, default_value = "root")]
    default_user: String,
    /// Let /init set the system clock (inside a capsule; never on a developer's machine).
    #[arg(long)]
    set_clock: bool,
    /// Log as JSON lines (for the guest console) instead of text.
    #[arg(long)]
    json_logs: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.json_logs {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut addr = args.listen;
    if let Some(port) = args.port {
        addr.set_port(port);
    }
    let envd = envd::server::build(envd::Config {
        default_user: args.default_user,
        set_clock: args.set_clock,
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "envd ready");
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "envd listening on {local}")?;
        out.flush()?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    envd::server::serve(listener, envd, async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}
