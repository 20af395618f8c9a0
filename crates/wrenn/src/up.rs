//! `wrenn up`: a single-node Wrenn in one process: the host agent on a local Unix socket and
//! the control plane over it, with an embedded SQLite database in the data folder.

use anyhow::Context;
use wrenn_rpc::{
    client::AgentEndpoint,
    listen::{Listen, ListenAddr},
};
use wrenn_server::accounts::SignupPolicy;

use crate::args::UpArgs;

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

/// `wrenn up`: builds missing templates, starts the agent on `DATA_DIR/agent.sock` and the
/// control plane over it; on SIGINT or SIGTERM pauses the running capsules (they resume after
/// the next start).
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = args.common.data_dir.clone();
    let agent_config = args
        .host
        .agent_config(data_dir.clone(), data_dir.join("images"))?;
    // Refuse to start (one line naming all that is missing) rather than fail a first request.
    crate::require(&wrenn_agent::prereq::Needs {
        qemu: agent_config.qemu.clone(),
        images_dir: agent_config.images_dir.clone(),
        path: std::env::var_os("PATH"),
        templates: wrenn_agent::prereq::TemplateNeed::Named {
            names: args.templates.clone(),
            envd: args.host.envd.clone(),
        },
    });
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // Everything in the data folder is private: looser modes found are fixed, with a warning.
    crate::private::check_and_fix(&data_dir)?;
    crate::images::ensure(
        &args.templates,
        &agent_config.images_dir,
        args.host.envd.as_deref(),
    )
    .await?;

    // The agent, on a socket only this user can open.
    let manager = wrenn_agent::start(agent_config)
        .await
        .context("starting the agent")?;
    args.host.apply(&manager).await;
    let socket = data_dir.join("agent.sock");
    let listener = Listen::bind(&ListenAddr::Unix(socket.clone()))
        .await
        .context("binding the agent socket")?;
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent_server = tokio::spawn(wrenn_agent::run(
        manager.clone(),
        listener,
        None,
        async move {
            let _ = agent_stopped.await;
        },
    ));
    let endpoint = AgentEndpoint::Unix(socket);
    let agent = wrenn_rpc::connect(&endpoint, None)
        .await
        .context("connecting to the agent")?;
    let builtin = wrenn_server::BuiltinAgent {
        address: endpoint.to_string(),
        client: agent,
    };

    // The control plane.
    let config = args.control.server_config(data_dir, SignupPolicy::Closed);
    let https = args.control.https(&config.pki_dir());
    let started = crate::control::start(&config, args.control.listen, https, Some(builtin)).await?;
    let reconcile = started.state.clone();
    // What the last shutdown paused resumes now, in the background: the API is up at once.
    let resuming = resume_in_background(started.state.clone(), manager.paused_for_restart());
    crate::control::serve(
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
    let _ = agent_server.await;
    println!("stopped ({paused} capsules paused)");
    Ok(())
}
