//! A team's capsule from a path id, in the state a handler needs.

use wrenn_types::{Id, IdKind};

use crate::{
    db::{Caller, CapsuleRow},
    error::{ApiError, Result},
    state::AppState,
};
use wrenn_types::CapsuleStatus;

/// A capsule id from a path, or `not_found` (a malformed id names no capsule).
pub fn capsule_id(raw: &str) -> Result<String> {
    Id::parse(IdKind::Capsule, raw)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::NotFound(format!("capsule {raw} not found")))
}

/// A team's live capsule (not stopped), or `not_found`.
pub async fn live(state: &AppState, caller: &Caller, raw: &str) -> Result<CapsuleRow> {
    let id = capsule_id(raw)?;
    let c = state.db.capsule(&caller.team_id, &id).await?;
    if c.status == CapsuleStatus::Stopped {
        return Err(ApiError::NotFound(format!("capsule {id} not found")));
    }
    Ok(c)
}

/// A team's running capsule, or `not_found` / `invalid_state`.
pub async fn running(state: &AppState, caller: &Caller, raw: &str) -> Result<CapsuleRow> {
    let c = live(state, caller, raw).await?;
    if c.status != CapsuleStatus::Running {
        return Err(ApiError::InvalidState(format!(
            "capsule {} is {}, not running",
            c.id, c.status
        )));
    }
    Ok(c)
}
