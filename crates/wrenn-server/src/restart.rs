//! After a restart of `wrenn up`: the capsules its shutdown paused are resumed, one after the
//! other, in the background (the API serves at once). Each resume is recorded like a user's
//! (status, audit row, `capsule.resume` event) with the system as its actor; a capsule that
//! cannot resume is `error` with the reason (its row and a `capsule.state.changed` event).
//! Quotas are not checked: these capsules ran when the host stopped.

use wrenn_proto::agent::v1::CapsuleRef;

use crate::{
    capsules::model::{status_of, Capsule, CapsuleStatus},
    db::Caller,
    error::Result,
    events::publish,
    state::AppState,
};

/// How one capsule's resume went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Resumed,
    /// It is in `error` now; the reason.
    Failed(String),
    /// Nothing to do: destroyed, resumed by its user meanwhile, or unknown to the database.
    Skipped(String),
}

/// Progress, for the log of `wrenn up`.
#[derive(Debug, Clone)]
pub struct Progress {
    pub id: String,
    /// 1-based position and count.
    pub n: usize,
    pub of: usize,
    /// `None` when starting on it.
    pub outcome: Option<Outcome>,
}

fn system(team_id: &str) -> Caller {
    Caller {
        team_id: team_id.into(),
        actor_type: wrenn_types::Actor::System,
        actor_id: "restart".into(),
        actor_name: "resume after restart".into(),
    }
}

/// Resumes capsules `ids` (those the last shutdown paused), in order, reporting each step.
pub async fn resume_paused(
    state: &AppState,
    ids: &[String],
    mut progress: impl FnMut(Progress),
) -> Vec<(String, Outcome)> {
    let mut done = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let step = |outcome| Progress {
            id: id.clone(),
            n: i + 1,
            of: ids.len(),
            outcome,
        };
        progress(step(None));
        let outcome = match resume_one(state, id).await {
            Ok(o) => o,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        progress(step(Some(outcome.clone())));
        done.push((id.clone(), outcome));
    }
    done
}

async fn resume_one(state: &AppState, id: &str) -> Result<Outcome> {
    let Some(row) = state
        .db
        .live_capsules()
        .await?
        .into_iter()
        .find(|r| r.id == id)
    else {
        return Ok(Outcome::Skipped("the database has no live capsule".into()));
    };
    let caller = system(&row.team_id);
    let mut agent = state.agent_for(&row).await?;
    match agent.resume_capsule(CapsuleRef { id: id.into() }).await {
        Ok(pb) => {
            let pb = pb.into_inner();
            let error = (!pb.error.is_empty()).then_some(pb.error.as_str());
            state
                .db
                .set_capsule_status(id, status_of(pb.state), error, true)
                .await?;
            let row = state.db.capsule(&row.team_id, id).await?;
            state
                .db
                .audit(&caller, "capsule.resume", ("capsule", id), "success", "")
                .await?;
            publish(
                state,
                crate::events::event::capsule_event(
                    &caller,
                    "capsule.resume",
                    id,
                    Capsule::from(&row),
                ),
            );
            Ok(Outcome::Resumed)
        }
        Err(status) => {
            // What the host says now: resumed by its user meanwhile, gone, or failed.
            let now = agent.get_capsule(CapsuleRef { id: id.into() }).await;
            let pb = match now {
                Ok(pb) => pb.into_inner(),
                Err(_) => return Ok(Outcome::Skipped(status.message().to_string())),
            };
            match status_of(pb.state) {
                CapsuleStatus::Running => return Ok(Outcome::Skipped("already running".into())),
                CapsuleStatus::Error => {}
                other => return Ok(Outcome::Skipped(format!("{other}: {}", status.message()))),
            }
            let why = if pb.error.is_empty() {
                status.message().to_string()
            } else {
                pb.error.clone()
            };
            state
                .db
                .set_capsule_status(id, CapsuleStatus::Error, Some(&why), false)
                .await?;
            state
                .db
                .audit(&caller, "capsule.resume", ("capsule", id), "error", &why)
                .await?;
            let row = state.db.capsule(&row.team_id, id).await?;
            let mut event = crate::events::event::capsule_event(
                &caller,
                "capsule.state.changed",
                id,
                Capsule::from(&row),
            );
            event.outcome = "error".into();
            event.error = Some(why.clone());
            publish(state, event);
            Ok(Outcome::Failed(why))
        }
    }
}
