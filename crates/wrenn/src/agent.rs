//! `wrenn agent` (the host agent alone, on TCP with mutual TLS or a Unix socket) and `wrenn
//! agent-cert` (the control plane's CA issues the agent's certificate).

use std::path::Path;

use anyhow::Context;
use wrenn_rpc::{
    listen::{Listen, ListenAddr},
    pki, tls,
};

use crate::args::{AgentArgs, DATA_DIR};

/// `wrenn agent`: serves until SIGINT or SIGTERM; the capsules keep running and the next agent
/// adopts them.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = args.common.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    crate::private::check_and_fix(&data_dir)?;
    let listen = &args.listen;
    let tls = match &args.tls_dir {
        Some(_) if matches!(listen, ListenAddr::Unix(_)) => anyhow::bail!(
            "--tls-dir with a Unix socket: TLS is for TCP; the socket is 0600, so only \
             its owner can connect"
        ),
        Some(dir) => Some(tls::load_server_tls(dir).with_context(|| {
            format!(
                "loading the agent's TLS from {} (make it with `wrenn agent-cert --dir {}`)",
                dir.display(),
                dir.display()
            )
        })?),
        None => None,
    };
    let config = args
        .host
        .agent_config(data_dir, Path::new(DATA_DIR).join("images"))?;
    crate::require(&wrenn_agent::prereq::Needs {
        qemu: config.qemu.clone(),
        images_dir: config.images_dir.clone(),
        path: std::env::var_os("PATH"),
        templates: wrenn_agent::prereq::TemplateNeed::Any,
    });
    let (accel, why) = wrenn_vmm::accel::detect();
    tracing::warn!(accel = accel.as_str(), reason = %why, "VM accelerator");
    let manager = wrenn_agent::start(config)
        .await
        .context("starting the agent")?;
    let listener = Listen::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr()?;
    if let (Listen::Tcp(l), None) = (&listener, &tls) {
        if !l.local_addr()?.ip().is_loopback() {
            tracing::warn!(
                %bound,
                "serving without TLS on a non-loopback address: whoever reaches it \
                 controls this host's capsules (use --tls-dir)"
            );
        }
    }
    tracing::info!(%bound, tls = tls.is_some(), "agent listening");
    println!("wrenn agent listening on {bound}");
    let stop =
        crate::stop_signal(|signal| tracing::warn!("{signal}: stopping (capsules keep running)"))?;
    wrenn_agent::run(manager, listener, tls, stop)
        .await
        .context("serving")?;
    tracing::warn!("agent stopped");
    // Exit without running destructors: they would kill the capsules' VMMs, which keep running
    // and are re-adopted by the next agent.
    std::process::exit(0);
}

/// `wrenn agent-cert`: the CA in `dir` (made when missing) issues the agent's server
/// certificate for `names` and a client certificate named `client_name`.
pub fn issue_cert(dir: &Path, names: Vec<String>, client_name: &str) -> anyhow::Result<()> {
    let names = if names.is_empty() {
        pki::default_server_names()
    } else {
        names
    };
    let pki =
        pki::Pki::load_or_create(dir).with_context(|| format!("the CA in {}", dir.display()))?;
    let agent = pki
        .issue_server(&names)
        .context("issuing the agent's certificate")?;
    agent.write(dir, tls::AGENT_STEM)?;
    let client = pki
        .issue_client(client_name)
        .context("issuing the client certificate")?;
    client.write(dir, tls::CLIENT_STEM)?;
    println!(
        "{}: ca.pem, agent.pem/.key (names: {}), client.pem/.key (CN {client_name})",
        dir.display(),
        names.join(", ")
    );
    Ok(())
}
