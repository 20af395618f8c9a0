//! `wrenn agent` (the host agent alone, on TCP with mutual TLS or a Unix socket) and `wrenn
//! agent-cert` (the control plane's CA issues the agent's certificate).
//!
//! A registered agent (`--register TOKEN --control-plane URL --address HOST:PORT` once, then
//! the credentials file) serves mutual TLS with the certificate its control plane issued and
//! sends heartbeats ([`wrenn_agent::identity`]).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use wrenn_agent::identity::{self, Ending, Heartbeats, StoredCredentials};
use wrenn_rpc::{
    listen::{Listen, ListenAddr},
    pki, tls, ServerTls, SwappableTls,
};

use crate::args::{AgentArgs, DATA_DIR};

/// Prints `error: {msg}` and exits 1.
fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// This host's identity: registered now with `--register`, or loaded from the credentials
/// file; `None` for an agent that is not registered (`--tls-dir` or plaintext).
async fn identity(
    args: &AgentArgs,
    data_dir: &Path,
    config: &wrenn_agent::manager::AgentConfig,
) -> anyhow::Result<Option<StoredCredentials>> {
    let stored = StoredCredentials::load(data_dir)?;
    let registered = stored.is_some() || args.register.is_some();
    if registered && args.tls_dir.is_some() {
        anyhow::bail!(
            "--tls-dir with a registered host: its certificate comes from the control plane"
        );
    }
    if let Some(mut stored) = stored {
        if args.register.is_some() {
            tracing::warn!(
                host_id = stored.host_id(),
                "already registered ({}): the registration token is not used",
                StoredCredentials::path(data_dir).display()
            );
        }
        if let Some(url) = &args.control_plane {
            if url.trim_end_matches('/') != stored.control_plane.trim_end_matches('/') {
                tracing::warn!(old = %stored.control_plane, new = %url, "control plane changed");
                stored.control_plane = url.clone();
                stored.save(data_dir)?;
            }
        }
        return Ok(Some(stored));
    }
    let Some(token) = &args.register else {
        if args.control_plane.is_some() {
            anyhow::bail!(
                "--control-plane without a registration: this host has no credentials in {} \
                 (register it with --register TOKEN; `wrenn host create` makes one)",
                data_dir.display()
            );
        }
        return Ok(None);
    };
    let (Some(control_plane), Some(address)) = (&args.control_plane, &args.address) else {
        anyhow::bail!("--register needs --control-plane URL and --address HOST:PORT");
    };
    if !matches!(address.parse::<ListenAddr>(), Ok(ListenAddr::Tcp(_))) {
        anyhow::bail!(
            "--address {address:?}: expected host:port, where the control plane reaches this agent"
        );
    }
    let specs = wrenn_agent::manager::host_specs(config);
    match identity::register(data_dir, control_plane, &token.0, address, specs).await {
        Ok(stored) => {
            println!("wrenn agent registered as host {}", stored.host_id());
            Ok(Some(stored))
        }
        Err(wrenn_agent::AgentError::ControlPlane(e)) if e.status().is_some() => {
            fail(format!("registration refused: {}", e.message()))
        }
        Err(e) => fail(format!("registration failed: {e}")),
    }
}

/// `wrenn agent`: serves until SIGINT or SIGTERM (the capsules keep running and the next agent
/// adopts them), or until the control plane deletes this registered host (its capsules are
/// paused and its credentials removed).
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = args.common.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    crate::private::check_and_fix(&data_dir)?;
    let config = args
        .host
        .agent_config(data_dir.clone(), Path::new(DATA_DIR).join("images"))?;
    crate::require(&wrenn_agent::prereq::Needs {
        qemu: config.qemu.clone(),
        images_dir: config.images_dir.clone(),
        path: std::env::var_os("PATH"),
        templates: wrenn_agent::prereq::TemplateNeed::Any {
            envd: config.envd.clone(),
        },
    });
    let stored = identity(&args, &data_dir, &config).await?;
    let listen = args.listen_addr(stored.as_ref().map(|s| s.address.as_str()))?;
    let (tls, swappable): (Option<ServerTls>, _) = match (&args.tls_dir, &stored) {
        (_, Some(_)) | (Some(_), _) if matches!(listen, ListenAddr::Unix(_)) => anyhow::bail!(
            "TLS over a Unix socket: TLS is for TCP; the socket is 0600, so only \
             its owner can connect"
        ),
        (_, Some(s)) => {
            let swappable = SwappableTls::new(&s.credentials.ca_cert_pem, &s.identity())
                .context("the host certificate")?;
            (Some(swappable.clone().into()), Some(swappable))
        }
        (Some(dir), None) => (
            Some(
                tls::load_server_tls(dir)
                    .with_context(|| {
                        format!(
                            "loading the agent's TLS from {} (make it with `wrenn agent-cert --dir {}`)",
                            dir.display(),
                            dir.display()
                        )
                    })?
                    .into(),
            ),
            None,
        ),
        (None, None) => (None, None),
    };
    let (accel, why) = wrenn_vmm::accel::detect();
    tracing::warn!(accel = accel.as_str(), reason = %why, "VM accelerator");
    let manager = wrenn_agent::start(config)
        .await
        .context("starting the agent")?;
    args.host.apply(&manager).await;
    let listener = Listen::bind(&listen)
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
    let (deleted_tx, deleted_rx) = tokio::sync::oneshot::channel::<Ending>();
    let heartbeats = match (stored, swappable) {
        (Some(stored), Some(swappable)) => {
            let host_id = stored.host_id().to_string();
            let beats = Heartbeats::new(
                data_dir.clone(),
                stored,
                swappable,
                Arc::clone(&manager),
                Duration::from_secs(args.heartbeat_every),
            )?;
            tracing::info!(%host_id, every_secs = args.heartbeat_every, "heartbeats to the control plane");
            Some(tokio::spawn(async move {
                let _ = deleted_tx.send(beats.run().await);
            }))
        }
        _ => None,
    };
    let signal =
        crate::stop_signal(|signal| tracing::warn!("{signal}: stopping (capsules keep running)"))?;
    let (ended_tx, mut ended) = tokio::sync::watch::channel(None::<Ending>);
    let stop = async move {
        tokio::select! {
            _ = signal => {}
            Ok(ending) = deleted_rx => { let _ = ended_tx.send(Some(ending)); }
        }
    };
    wrenn_agent::run(Arc::clone(&manager), listener, tls, stop)
        .await
        .context("serving")?;
    manager.stop_idle_vmms().await;
    if let Some(h) = heartbeats {
        h.abort();
    }
    if let Some(Ending::Deleted { paused }) = ended.borrow_and_update().clone() {
        tracing::warn!(paused, "host deleted by the control plane: agent stopped");
        println!(
            "wrenn agent: this host was deleted by the control plane: {paused} capsule(s) \
             paused, credentials removed; stopped"
        );
    } else {
        tracing::warn!("agent stopped");
    }
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
