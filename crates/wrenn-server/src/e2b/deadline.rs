//! E2B's lifetime: a sandbox ends at its deadline (`e2b_sandboxes.end_at`), destroyed, or
//! paused when its create asked for auto-pause. Checked every second on the replica that
//! holds the lease, through the capsule handlers (so the end is audited and announced, as
//! `system`).

use std::time::Duration;

use axum::extract::{Path, State};
use tokio::task::JoinHandle;

use crate::{
    capsules::lifecycle,
    db::{now_ms, Caller},
    state::AppState,
};

/// How often deadlines are checked.
pub const EVERY: Duration = Duration::from_secs(1);

/// The lease the deadline work runs under.
const LEASE: &str = "e2b-deadlines";

/// The actor that ends sandboxes at their deadline.
fn system(team_id: &str) -> Caller {
    Caller {
        team_id: team_id.to_string(),
        actor_type: wrenn_types::Actor::System,
        actor_id: "e2b-deadline".into(),
        actor_name: "E2B sandbox deadline".into(),
    }
}

/// Ends every running sandbox whose deadline passed; forgets the deadlines of stopped ones.
pub async fn enforce(state: &AppState) {
    let expired = match state.db.e2b_expired(now_ms()).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "reading the E2B deadlines");
            return;
        }
    };
    for (team, id, pause) in expired {
        let caller = system(&team);
        let done = if pause {
            lifecycle::pause(State(state.clone()), caller, Path(id.clone()))
                .await
                .map(|_| ())
        } else {
            lifecycle::destroy(State(state.clone()), caller, Path(id.clone()))
                .await
                .map(|_| ())
        };
        match done {
            Ok(()) => {
                tracing::info!(capsule = %id, paused = pause, "E2B sandbox reached its deadline")
            }
            Err(e) => {
                tracing::warn!(capsule = %id, error = %e, "ending an E2B sandbox at its deadline")
            }
        }
    }
    if let Err(e) = state.db.e2b_forget_stopped().await {
        tracing::warn!(error = %e, "forgetting the deadlines of stopped sandboxes");
    }
}

/// Starts the deadline work (once across replicas).
pub fn spawn(state: AppState) -> JoinHandle<()> {
    let db = state.db.clone();
    crate::background::every_once(
        &db,
        LEASE,
        EVERY,
        crate::background::ttl_for(EVERY),
        move || {
            let state = state.clone();
            async move { enforce(&state).await }
        },
    )
}
