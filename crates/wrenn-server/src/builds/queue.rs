//! The build queue: queued builds run in creation order, at most `limit` at once per host
//! ([`super::hosts`]: a build is taken only while some online host has room, and placed among
//! the hosts below their limit); each replica takes builds with a conditional update, so none
//! runs twice. A
//! `running` build whose runner stopped writing (its control plane stopped) is failed and its
//! build capsule destroyed, so no build stays `running` forever; queued builds survive a
//! restart and run after it.

use std::{sync::Arc, time::Duration};

use wrenn_types::recipe::{self, Format, Healthcheck};

use super::runner::{Run, Stop};
use crate::{
    db::{BuildRow, Caller},
    state::AppState,
};

/// How often the queue looks for work.
const POLL: Duration = Duration::from_secs(1);
/// How often a running build says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Builds at once per host by default.
pub const DEFAULT_LIMIT: usize = 2;

/// Starts the queue on `state` (runs until the process ends), `limit` builds at once per host.
pub fn spawn(state: AppState, limit: usize) {
    let placing = Arc::new(tokio::sync::Mutex::new(()));
    tokio::spawn(async move {
        loop {
            match state.db.fail_stale_builds().await {
                Ok(stale) => {
                    for b in stale {
                        tracing::warn!(build = %b.id, "build failed: its control plane stopped");
                        let mut run = run_of(&state, b, limit, &placing);
                        run.cleanup().await;
                    }
                }
                Err(e) => tracing::warn!("checking for stale builds: {e}"),
            }
            // Build capsules whose destroy failed (a control plane stopping mid-build).
            if let Ok(left) = state.db.builds_with_leftover_capsules().await {
                for b in left {
                    let mut run = run_of(&state, b, limit, &placing);
                    run.cleanup().await;
                }
            }
            loop {
                match super::hosts::room_now(&state, limit).await {
                    Ok(n) if n > 0 => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!("counting the hosts' builds: {e}");
                        break;
                    }
                }
                match state.db.claim_build().await {
                    Ok(Some(b)) => {
                        let run = run_of(&state, b, limit, &placing);
                        tokio::spawn(run_one(run));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("taking a queued build: {e}");
                        break;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

fn run_of(
    state: &AppState,
    row: BuildRow,
    limit: usize,
    placing: &Arc<tokio::sync::Mutex<()>>,
) -> Run {
    let caller = Caller {
        team_id: row.team_id.clone(),
        actor_type: row.actor_type.parse().unwrap_or(wrenn_types::Actor::System),
        actor_id: row.actor_id.clone(),
        actor_name: row.actor_name.clone(),
    };
    Run {
        state: state.clone(),
        capsule: row.capsule_id.clone(),
        caller,
        logs: serde_json::from_str(&row.logs).unwrap_or_default(),
        total: row.total_steps.max(0) as u32,
        ctx: Default::default(),
        row,
        limit,
        placing: placing.clone(),
    }
}

async fn run_one(mut run: Run) {
    let (state, id) = (run.state.clone(), run.row.id.clone());
    tracing::info!(build = %id, name = %run.row.name, "build started");
    // Alive while it runs, whatever the step.
    let beat = {
        let (state, id) = (state.clone(), id.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let _ = state.db.touch_build(&id).await;
            }
        })
    };
    run.capsule = None;
    run.logs.clear();
    let format = if run.row.format == "dockerfile" {
        Format::Dockerfile
    } else {
        Format::Recipe
    };
    let outcome = match recipe::parse(&run.row.source, format) {
        Err(e) => Err(Stop::Failed(e.to_string())),
        Ok(parsed) => {
            let hc = match &run.row.healthcheck {
                Some(h) => Healthcheck::parse(h).ok(),
                None => parsed.healthcheck.clone(),
            };
            run.build(&parsed, hc.as_ref()).await
        }
    };
    // The last steps' output, before the end is written.
    let _ = run.save().await;
    run.cleanup().await;
    beat.abort();
    let ended = match outcome {
        Ok(()) => state.db.finish_build(&id, "success", None).await,
        Err(Stop::Failed(m)) => {
            tracing::info!(build = %id, "build failed: {m}");
            state.db.finish_build(&id, "failed", Some(&m)).await
        }
        Err(Stop::Cancelled) => {
            let _ = state.db.drop_build_archive(&id).await;
            Ok(false)
        }
        Err(Stop::Requeue) => {
            tracing::info!(build = %id, "every host is at its limit of builds: queued again");
            let _ = state.db.requeue_build(&id).await;
            return;
        }
    };
    match ended {
        Ok(true) => tracing::info!(build = %id, "build ended"),
        Ok(false) => tracing::info!(build = %id, "build cancelled"),
        Err(e) => tracing::warn!(build = %id, "recording the build's end: {e}"),
    }
}
