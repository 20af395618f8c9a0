//! The host monitor: an `online` host silent for longer than the heartbeat window
//! (`host_timeout`) becomes `unreachable` and its pending, starting and running capsules
//! `missing` (event and audit `host.down`). [`sweep`] is one pass; [`spawn_host_monitor`] runs
//! it every `host_timeout / 3`.

use std::{collections::HashMap, time::Duration};

use super::access::system_host_event;
use crate::{error::Result, state::AppState};

/// One pass at `now` (Unix ms): the hosts it marked `unreachable`.
pub async fn sweep(state: &AppState, now: i64) -> Result<Vec<String>> {
    let cutoff = now - state.hosts.settings.timeout.as_millis() as i64;
    let mut down = Vec::new();
    for host in state.db.silent_hosts(cutoff).await? {
        // Another pass or a heartbeat may get there first: then nothing changes here.
        let Some(lost) = state.db.lose_host(&host.id, cutoff).await? else {
            continue;
        };
        tracing::warn!(host = %host.id, capsules = lost.len(), "host missed its heartbeats: unreachable, its capsules missing");
        let meta = HashMap::from([
            ("missing_capsules".to_string(), lost.len().to_string()),
            ("capsule_ids".to_string(), lost.join(",")),
        ]);
        system_host_event(state, &host, "host.down", meta).await?;
        down.push(host.id);
    }
    Ok(down)
}

/// Runs [`sweep`] every `host_timeout / 3` (at least every 100 ms apart).
pub fn spawn_host_monitor(state: AppState) -> tokio::task::JoinHandle<()> {
    let every = (state.hosts.settings.timeout / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&state, crate::db::now_ms()).await {
                tracing::warn!(error = %e, "the host monitor's pass");
            }
        }
    })
}
