//! A capsule's life after create: list, get, pause, resume, destroy, ping.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use wrenn_proto::agent::v1::CapsuleRef;

use super::{
    lookup::{live, running},
    model::*,
};
use crate::{
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    events::publish,
    responses::{Authed, NoCapsule, NotRunning, OnHost},
    state::AppState,
};
use wrenn_types::CapsuleStatus;

/// List capsules
///
/// The team's capsules that are not destroyed, newest first.
#[utoipa::path(
    get,
    path = "/v1/capsules",
    operation_id = "list_capsules",
    tag = "capsules",
    responses(
        (status = 200, description = "The team's live capsules", body = Vec<Capsule>),
        Authed,
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Capsule>>> {
    let rows = state.db.capsules(&caller.team_id).await?;
    Ok(Json(rows.iter().map(Capsule::from).collect()))
}

/// Get a capsule
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}",
    operation_id = "get_capsule",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    responses(
        (status = 200, description = "The capsule", body = Capsule),
        Authed,
        (status = 404, description = "`not_found`: no such capsule, or it was destroyed", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Capsule>> {
    Ok(Json(Capsule::from(&live(&state, &caller, &id).await?)))
}

/// Applies what the agent says about a capsule to its row.
async fn record_state(
    state: &AppState,
    id: &str,
    pb: &wrenn_proto::agent::v1::Capsule,
    started: bool,
) -> Result<()> {
    let error = (!pb.error.is_empty()).then_some(pb.error.as_str());
    state
        .db
        .set_capsule_status(id, status_of(pb.state), error, started)
        .await
}

/// After a lifecycle `action` on capsule `id`: its audit row and event, and its JSON.
async fn recorded(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<Json<Capsule>> {
    let row = state.db.capsule(&caller.team_id, id).await?;
    // The action happened: it is in the audit log, or the request fails.
    state
        .db
        .audit(caller, action, ("capsule", id), "success", "")
        .await?;
    let body = Capsule::from(&row);
    publish(
        state,
        crate::events::event::capsule_event(caller, action, id, body.clone()),
    );
    Ok(Json(body))
}

/// Pause a capsule
///
/// Its memory, files and processes are kept; resume continues where it stopped.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/pause",
    operation_id = "pause_capsule",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    responses(
        (status = 200, description = "The capsule, now paused", body = Capsule),
        OnHost, NoCapsule,
        (status = 409, description = "`invalid_state`: it cannot be paused now", body = ErrorBody),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Capsule>> {
    let c = live(&state, &caller, &id).await?;
    let pb = state
        .agent_for(&c)
        .await?
        .pause_capsule(CapsuleRef { id: c.id.clone() })
        .await?
        .into_inner();
    record_state(&state, &c.id, &pb, false).await?;
    recorded(&state, &caller, &c.id, "capsule.pause").await
}

/// Resume a capsule
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/resume",
    operation_id = "resume_capsule",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    responses(
        (status = 200, description = "The capsule, running again", body = Capsule),
        OnHost, NoCapsule,
        (status = 409, description = "`invalid_state`: it cannot be resumed now", body = ErrorBody),
        (status = 429, response = crate::responses::QuotaExceeded),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Capsule>> {
    let c = live(&state, &caller, &id).await?;
    let held = crate::quotas::reserve::reserve_resume(&state, &c).await?;
    let pb = state
        .agent_for(&c)
        .await?
        .resume_capsule(CapsuleRef { id: c.id.clone() })
        .await
        .map_err(ApiError::from);
    let (pb, held) = held.keep_if_ok(pb).await?;
    let pb = pb.into_inner();
    record_state(&state, &c.id, &pb, true).await?;
    held.release().await;
    recorded(&state, &caller, &c.id, "capsule.resume").await
}

/// Destroy a capsule
///
/// Its VM and everything in it are gone; the capsule is `stopped` and answers `not_found`.
#[utoipa::path(
    delete,
    path = "/v1/capsules/{id}",
    operation_id = "destroy_capsule",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    responses(
        (status = 204, description = "Destroyed"),
        OnHost,
        (status = 404, description = "`not_found`: no such capsule, or already destroyed", body = ErrorBody),
    )
)]
pub async fn destroy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let c = live(&state, &caller, &id).await?;
    match state
        .agent_for(&c)
        .await?
        .destroy_capsule(CapsuleRef { id: c.id.clone() })
        .await
    {
        Ok(_) => {}
        // Already gone from its host: the row just catches up.
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(s.into()),
    }
    state
        .db
        .set_capsule_status(&c.id, CapsuleStatus::Stopped, None, false)
        .await?;
    state
        .db
        .audit(
            &caller,
            "capsule.destroy",
            ("capsule", &c.id),
            "success",
            "",
        )
        .await?;
    let mut row = c;
    row.status = CapsuleStatus::Stopped;
    publish(
        &state,
        crate::events::event::capsule_event(
            &caller,
            "capsule.destroy",
            &row.id,
            Capsule::from(&row),
        ),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Keep a capsule alive
///
/// Counts as activity, so its idle timeout starts again.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/ping",
    operation_id = "ping_capsule",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    responses(
        (status = 204, description = "Pinged"),
        OnHost, NoCapsule, NotRunning,
    )
)]
pub async fn ping(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let c = running(&state, &caller, &id).await?;
    state
        .agent_for(&c)
        .await?
        .ping(CapsuleRef { id: c.id.clone() })
        .await?;
    state.db.touch_capsule(&c.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
