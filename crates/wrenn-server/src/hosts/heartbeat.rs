//! `POST /v1/hosts/{id}/heartbeat`: a host says it is alive and what it holds.

use std::collections::HashMap;

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use wrenn_types::api::hosts::{HeartbeatBody, HostStatus};

use super::{access::system_host_event, identity::HostAuth};
use crate::{
    db::now_ms,
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    state::AppState,
};

/// Send a heartbeat
///
/// With the host's own `X-Host-Token`: stores its specs and load and the time. A host that was
/// `unreachable` is `online` again (event and audit `host.up`). A deleted host gets
/// `not_found`: its agent then pauses its capsules and stops.
#[utoipa::path(
    post,
    path = "/v1/hosts/{id}/heartbeat",
    operation_id = "host_heartbeat",
    tag = "hosts",
    security(("host_token" = [])),
    params(("id" = String, Path, description = "Host id (`host-…`)")),
    request_body = HeartbeatBody,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, response = crate::responses::BadRequest),
        (status = 401, description = "`unauthorized`: missing, invalid or expired host token", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token is another host's", body = ErrorBody),
        (status = 404, description = "`not_found`: the host was deleted", body = ErrorBody),
        (status = 500, response = crate::responses::Internal),
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    HostAuth(me): HostAuth,
    Path(id): Path<String>,
    body: std::result::Result<JsonBody<HeartbeatBody>, ApiError>,
) -> Result<StatusCode> {
    if me != id {
        return Err(ApiError::Forbidden(
            "a host token acts only as its own host".into(),
        ));
    }
    let JsonBody(b) = body?;
    let before = state
        .db
        .host_heartbeat(&id, &b.specs, &b.load, now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "host {id} not found: it was deleted (its identity is revoked)"
            ))
        })?;
    if before == HostStatus::Unreachable {
        if let Some(host) = state.db.host(&id).await? {
            tracing::info!(host = %id, "host is back online");
            system_host_event(&state, &host, "host.up", HashMap::new()).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
