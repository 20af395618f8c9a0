//! A host's tags and its drain flag.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use wrenn_types::api::hosts::{DrainBody, DrainResult, Host, TagBody};

use super::{
    access::{check_tag, host_for, publish_host_event, to_api, Level},
    manage::HostPath,
};
use crate::{
    db::{Caller, HostRow},
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    responses::{Authed, Checked, ManagedHost, NoHost},
    state::AppState,
};

/// A host's tags
#[utoipa::path(
    get,
    path = "/v1/hosts/{id}/tags",
    operation_id = "list_host_tags",
    tag = "hosts",
    params(HostPath),
    responses(
        (status = 200, description = "Its tags, sorted", body = Vec<String>),
        Authed,
        NoHost,
    )
)]
pub async fn tags(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<String>>> {
    host_for(&state, &caller, &id, Level::See).await?;
    Ok(Json(state.db.host_tags(&id).await?))
}

/// Tag a host
///
/// Adds a tag (`[a-z0-9][a-z0-9._:-]{0,62}`; already there: nothing changes). Capsules created
/// with `host_tags` land only on hosts that have all of them.
#[utoipa::path(
    post,
    path = "/v1/hosts/{id}/tags",
    operation_id = "add_host_tag",
    tag = "hosts",
    params(HostPath),
    request_body = TagBody,
    responses(
        (status = 200, description = "Its tags, sorted", body = Vec<String>),
        Checked,
        ManagedHost,
    )
)]
pub async fn add_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: std::result::Result<JsonBody<TagBody>, ApiError>,
) -> Result<Json<Vec<String>>> {
    host_for(&state, &caller, &id, Level::Manage).await?;
    let JsonBody(b) = body?;
    check_tag(&b.tag)?;
    state.db.add_host_tag(&caller, &id, &b.tag).await?;
    Ok(Json(state.db.host_tags(&id).await?))
}

/// Untag a host
#[utoipa::path(
    delete,
    path = "/v1/hosts/{id}/tags/{tag}",
    operation_id = "remove_host_tag",
    tag = "hosts",
    params(HostPath, ("tag" = String, Path, description = "The tag")),
    responses(
        (status = 204, description = "Removed"),
        Authed,
        (status = 403, description = "`forbidden`: may see the host but not change it", body = ErrorBody),
        (status = 404, description = "`not_found`: no such host within the caller's reach, or it has no such tag", body = ErrorBody),
    )
)]
pub async fn remove_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode> {
    host_for(&state, &caller, &id, Level::Manage).await?;
    if !state.db.remove_host_tag(&caller, &id, &tag).await? {
        return Err(ApiError::NotFound(format!("host {id} has no tag {tag:?}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Drain a host
///
/// No new capsules are placed on it; its running capsules stay until they end or are paused.
/// With `move_paused`, its paused capsules move to other hosts (the answer says which moved and
/// which could not). The body may be empty.
#[utoipa::path(
    post,
    path = "/v1/hosts/{id}/drain",
    operation_id = "drain_host",
    tag = "hosts",
    params(HostPath),
    request_body(content = DrainBody, description = "Optional: an empty body is `{}`"),
    responses(
        (status = 200, description = "What moved", body = DrainResult),
        Checked,
        ManagedHost,
    )
)]
pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<DrainResult>> {
    let host = host_for(&state, &caller, &id, Level::Manage).await?;
    let b: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidRequest(format!("the drain body: {e}")))?
    };
    state.db.set_host_draining(&caller, &id, true).await?;
    let meta = HashMap::from([("move_paused".to_string(), b.move_paused.to_string())]);
    publish_host_event(&state, &caller, &host, "host.drained", meta).await?;
    let result = if b.move_paused {
        move_paused_off(&state, &caller, &host).await
    } else {
        DrainResult::default()
    };
    Ok(Json(result))
}

/// Moves the paused capsules of a draining `host` to other hosts: which moved, and why the
/// others stayed (`transfer::move_paused_off`).
pub async fn move_paused_off(state: &AppState, by: &Caller, host: &HostRow) -> DrainResult {
    crate::transfer::move_paused_off(state, by, &host.id).await
}

/// Undrain a host
///
/// New capsules may be placed on it again.
#[utoipa::path(
    post,
    path = "/v1/hosts/{id}/undrain",
    operation_id = "undrain_host",
    tag = "hosts",
    params(HostPath),
    responses(
        (status = 200, description = "The host", body = Host),
        Authed,
        ManagedHost,
    )
)]
pub async fn undrain(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Host>> {
    host_for(&state, &caller, &id, Level::Manage).await?;
    state.db.set_host_draining(&caller, &id, false).await?;
    let host = host_for(&state, &caller, &id, Level::See).await?;
    Ok(Json(to_api(&state, host).await?))
}
