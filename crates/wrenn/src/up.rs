//! `wrenn up`: a single-node Wrenn in one process: the host agent on a local Unix socket and
//! the control plane over it, with an embedded SQLite database in the data folder.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use wrenn_agent::manager::{AgentConfig, Manager};
use wrenn_rpc::{
    client::{self, AgentEndpoint},
    listen::{Listen, ListenAddr},
};

pub struct Up {
    pub data_dir: PathBuf,
    pub listen: std::net::SocketAddr,
    pub images: Option<PathBuf>,
    pub envd: Option<PathBuf>,
    pub database_url: Option<String>,
    pub templates: Vec<String>,
    pub max_capsules: usize,
    pub slots: std::ops::RangeInclusive<u32>,
    /// The port proxy's domain.
    pub domain: String,
    /// The platform's default per-team quotas.
    pub quotas: wrenn_server::quotas::Limits,
    /// Who may sign up (default `closed`: `wrenn up` makes its own admin).
    pub signup: wrenn_server::accounts::SignupPolicy,
    /// The machine shapes the built-in agent offers.
    pub shapes: wrenn_agent::templates::ShapePolicy,
    /// Private IPv4 ranges capsules may reach (`--egress-allow-private`).
    pub egress_allow_private: Vec<String>,
    /// The slot resolvers' upstream name servers (empty: the host's).
    pub dns_upstream: Vec<std::net::SocketAddr>,
}

/// Builds the templates that have no ready snapshot yet (first start), with progress.
async fn ensure_images(up: &Up, images: &std::path::Path) -> anyhow::Result<()> {
    let (accel, why) = wrenn_vmm::accel::detect();
    for name in &up.templates {
        let snap = wrenn_vmm::snapshot::Snapshot {
            template_dir: images.join(name),
        };
        if snap.spec().is_some() {
            continue;
        }
        let envd = up.envd.clone().context(
            "building the guest images needs the static envd binary: pass --envd or set \
             WRENN_ENVD (`make up` does)",
        )?;
        println!("building template {name} ({}: {why})", accel.as_str());
        let req = wrenn_agent::images::BuildRequest {
            template: name.clone(),
            images_dir: images.to_path_buf(),
            envd: envd.canonicalize().context("the envd binary")?,
            vcpus: 1,
            memory_mib: 256,
            accel,
            qemu: wrenn_vmm::qemu::default_qemu(),
        };
        wrenn_agent::images::build(&req, |p| println!("  {}", p.line))
            .await
            .with_context(|| format!("building template {name}"))?;
        // Built with umask 022 (the guest's files keep their modes); the output is ours.
        crate::private::make_private(&images.join(name))
            .with_context(|| format!("making template {name} private"))?;
    }
    Ok(())
}

/// Resumes capsules `ids` (paused by the last shutdown) one by one, printing each step.
fn resume_in_background(
    state: wrenn_server::AppState,
    ids: Vec<String>,
) -> Option<tokio::task::JoinHandle<()>> {
    use wrenn_server::restart::Outcome;
    if ids.is_empty() {
        return None;
    }
    println!(
        "resuming {} capsule{} paused at the last shutdown (in the background)",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" }
    );
    Some(tokio::spawn(async move {
        let done = wrenn_server::restart::resume_paused(&state, &ids, |p| {
            let (id, n, of) = (&p.id, p.n, p.of);
            match &p.outcome {
                None => println!("  resuming {id} ({n}/{of})"),
                Some(Outcome::Resumed) => println!("  resumed {id} ({n}/{of})"),
                Some(Outcome::Failed(why)) => {
                    println!("  {id} could not resume, it is in error now: {why} ({n}/{of})")
                }
                Some(Outcome::Skipped(why)) => println!("  {id} left as is: {why} ({n}/{of})"),
            }
        })
        .await;
        let resumed = done.iter().filter(|(_, o)| *o == Outcome::Resumed).count();
        println!(
            "resumed {resumed} of {} capsules paused at the last shutdown",
            done.len()
        );
    }))
}

pub async fn run(up: Up) -> anyhow::Result<()> {
    let images = up
        .images
        .clone()
        .unwrap_or_else(|| up.data_dir.join("images"));
    // Refuse to start (one line naming all that is missing) rather than fail a first request.
    crate::require(&wrenn_agent::prereq::Needs {
        qemu: wrenn_vmm::qemu::default_qemu(),
        images_dir: images.clone(),
        templates: wrenn_agent::prereq::TemplateNeed::Named {
            names: up.templates.clone(),
            envd: up.envd.clone(),
        },
    });
    std::fs::create_dir_all(&up.data_dir)
        .with_context(|| format!("creating {}", up.data_dir.display()))?;
    // Everything in the data folder is private: looser modes found are fixed, with a warning.
    crate::private::check_and_fix(&up.data_dir)?;
    ensure_images(&up, &images).await?;

    // The agent, on a socket only this user can open.
    let manager = Arc::new(
        Manager::start(AgentConfig {
            data_dir: up.data_dir.clone(),
            images_dir: images,
            qemu: wrenn_vmm::qemu::default_qemu(),
            max_capsules: up.max_capsules,
            slots: up.slots.clone(),
            shapes: up.shapes.clone(),
            dns_upstreams: up.dns_upstream.clone(),
            egress_allow_private: up.egress_allow_private.clone(),
        })
        .await
        .context("starting the agent")?,
    );
    manager.spawn_reaper();
    manager.spawn_sampler();
    let socket = up.data_dir.join("agent.sock");
    let listener = Listen::bind(&ListenAddr::Unix(socket.clone()))
        .await
        .context("binding the agent socket")?;
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent_server = tokio::spawn(wrenn_agent::service::serve(
        listener,
        None,
        manager.clone(),
        async move {
            let _ = agent_stopped.await;
        },
    ));
    let agent = client::connect(&AgentEndpoint::Unix(socket), None)
        .await
        .context("connecting to the agent")?;

    // The control plane.
    let started = crate::control::start(
        &crate::control::ControlPlane {
            data_dir: up.data_dir.clone(),
            listen: up.listen,
            database_url: up.database_url.clone(),
            domain: up.domain.clone(),
            quotas: up.quotas,
            signup: up.signup,
        },
        agent,
    )
    .await?;
    let reconcile = started.state.clone();
    // What the last shutdown paused resumes now, in the background: the API is up at once.
    let resuming = resume_in_background(started.state.clone(), manager.paused_for_restart());
    crate::control::serve_until_signal(
        started,
        "stopping: pausing running capsules (they resume after the next start)",
    )
    .await?;
    if let Some(task) = resuming {
        task.abort();
    }
    let paused = manager.pause_all().await;
    if let Err(e) = wrenn_server::reconcile(&reconcile).await {
        tracing::warn!(error = %e, "recording the paused capsules");
    }
    let _ = stop_agent.send(());
    let _ = tokio::time::timeout(Duration::from_secs(3), agent_server).await;
    println!("stopped ({paused} capsules paused)");
    Ok(())
}
