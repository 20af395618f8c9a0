//! Making, listing, getting and deleting hosts, new registration tokens, and the BYOC flag of
//! teams.

use std::collections::HashMap;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use wrenn_types::api::hosts::{
    ByocBody, CreateHostBody, Host, HostDeletePreview, HostKind, HostStatus, HostWithToken,
    TeamByoc,
};

use super::access::{check_tag, host_for, manages_team, publish_host_event, to_api, Level};
use crate::{
    db::{now_ms, Caller, HostRow},
    error::{ApiError, ErrorBody, Result},
    extract::{JsonBody, QueryParams},
    quotas::handlers::{is_platform_admin, require_platform_admin},
    responses::{Authed, Checked, ManagedHost, NoHost},
    state::AppState,
    time::rfc3339,
};

/// A registration token's lifetime.
const REGISTRATION_TTL_MS: i64 = 3600 * 1000;

/// The `{id}` of a host's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by the OpenAPI derive only
pub struct HostPath {
    /// Host id (`host-…`)
    id: String,
}

fn team_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("team {id} not found"))
}

fn check_label(what: &str, v: &Option<String>) -> Result<String> {
    let v = v.as_deref().unwrap_or("").trim();
    if v.len() > 64 || v.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!(
            "{what}: at most 64 printable characters"
        )));
    }
    Ok(v.to_string())
}

/// A new registration token (`wrnh_` + 64 hex) and when it expires (Unix ms).
fn registration_token() -> Result<(String, i64)> {
    Ok((
        format!("wrnh_{}", wrenn_types::secret::hex(32)?),
        now_ms() + REGISTRATION_TTL_MS,
    ))
}

/// Who owns a new host of `kind`: `None` for a regular host (platform admins only), the BYOC
/// team for a `byoc` host (its owners, admins and API keys, or a platform admin).
async fn owner_of_new_host(
    state: &AppState,
    caller: &Caller,
    kind: HostKind,
    team: Option<&str>,
) -> Result<Option<String>> {
    let admin = is_platform_admin(&state.db, caller).await?;
    match kind {
        HostKind::Regular => {
            if team.is_some() {
                return Err(ApiError::InvalidRequest(
                    "team_id is for byoc hosts; a regular host is the platform's".into(),
                ));
            }
            if !admin {
                return Err(ApiError::Forbidden(
                    "only platform admins create regular hosts (a BYOC team creates byoc hosts)"
                        .into(),
                ));
            }
            Ok(None)
        }
        HostKind::Byoc => {
            let team = team.unwrap_or(&caller.team_id).to_string();
            if !admin && team != caller.team_id {
                return Err(team_not_found(&team));
            }
            let byoc = state
                .db
                .team_is_byoc(&team)
                .await?
                .ok_or_else(|| team_not_found(&team))?;
            if !admin && !manages_team(state, caller, &team).await? {
                return Err(ApiError::Forbidden(
                    "only the team's owners and admins create its hosts".into(),
                ));
            }
            if !byoc {
                return Err(ApiError::Forbidden(format!(
                    "team {team} is not BYOC-enabled: a platform admin enables it with \
                     PUT /v1/admin/teams/{team}/byoc"
                )));
            }
            Ok(Some(team))
        }
    }
}

/// Create a host
///
/// A host to be registered: `regular` (platform admins) or `byoc` (the owners and admins of a
/// BYOC-enabled team). Answers the host (`pending`) and its registration token, shown once:
/// single use, valid one hour; start the agent with `wrenn agent --register TOKEN`.
#[utoipa::path(
    post,
    path = "/v1/hosts",
    operation_id = "create_host",
    tag = "hosts",
    request_body = CreateHostBody,
    responses(
        (status = 201, description = "The host and its registration token", body = HostWithToken),
        Checked,
        (status = 403, description = "`forbidden`: not a platform admin (regular), or the team is not BYOC-enabled or the caller not its owner or admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team within the caller's reach", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(b): JsonBody<CreateHostBody>,
) -> Result<(StatusCode, Json<HostWithToken>)> {
    let kind = b.kind.unwrap_or(HostKind::Regular);
    let provider = check_label("provider", &b.provider)?;
    let availability_zone = check_label("availability_zone", &b.availability_zone)?;
    let mut tags = b.tags.clone();
    tags.sort();
    tags.dedup();
    for t in &tags {
        check_tag(t)?;
    }
    let team_id = owner_of_new_host(&state, &caller, kind, b.team_id.as_deref()).await?;
    let now = now_ms();
    let row = HostRow {
        id: wrenn_types::Id::new(wrenn_types::IdKind::Host).to_string(),
        kind,
        team_id,
        provider,
        availability_zone,
        status: HostStatus::Pending,
        draining: false,
        builtin: false,
        address: String::new(),
        specs: Default::default(),
        load: Default::default(),
        last_heartbeat_at: None,
        cert_fingerprint: None,
        cert_expires_at: None,
        created_by: caller.actor_id.clone(),
        created_at: now,
        updated_at: now,
    };
    let (token, expires_at) = registration_token()?;
    state
        .db
        .create_host(&caller, &row, &tags, &token, expires_at)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(HostWithToken {
            host: to_api(&state, row).await?,
            registration_token: token,
            expires_at: rfc3339(expires_at),
        }),
    ))
}

/// List hosts
///
/// Platform admins see every host; a BYOC team's members see the team's hosts; anyone else an
/// empty list.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    operation_id = "list_hosts",
    tag = "hosts",
    responses((status = 200, description = "The hosts, oldest first", body = Vec<Host>), Authed)
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Host>>> {
    let rows = if is_platform_admin(&state.db, &caller).await? {
        state.db.hosts(None).await?
    } else {
        state.db.hosts(Some(&caller.team_id)).await?
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(to_api(&state, r).await?);
    }
    Ok(Json(out))
}

/// Get a host
#[utoipa::path(
    get,
    path = "/v1/hosts/{id}",
    operation_id = "get_host",
    tag = "hosts",
    params(HostPath),
    responses(
        (status = 200, description = "The host", body = Host),
        Authed,
        NoHost,
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Host>> {
    let host = host_for(&state, &caller, &id, Level::See).await?;
    Ok(Json(to_api(&state, host).await?))
}

/// New registration token
///
/// For a host still `pending` (its token was lost or expired): the earlier tokens stop
/// working.
#[utoipa::path(
    post,
    path = "/v1/hosts/{id}/token",
    operation_id = "new_host_token",
    tag = "hosts",
    params(HostPath),
    responses(
        (status = 201, description = "The host and its new registration token", body = HostWithToken),
        Authed,
        ManagedHost,
        (status = 409, description = "`invalid_state`: the host is already registered", body = ErrorBody),
    )
)]
pub async fn new_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<HostWithToken>)> {
    let host = host_for(&state, &caller, &id, Level::Manage).await?;
    let (token, expires_at) = registration_token()?;
    state
        .db
        .new_registration_token(&id, &token, expires_at)
        .await?;
    state
        .db
        .audit(&caller, "host.token", ("host", &id), "success", "")
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(HostWithToken {
            host: to_api(&state, host).await?,
            registration_token: token,
            expires_at: rfc3339(expires_at),
        }),
    ))
}

/// `DELETE /v1/hosts/{id}`'s query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete even with live capsules (they become `stopped`).
    #[serde(default)]
    pub force: bool,
}

/// Delete a host
///
/// Revokes its identity (its heartbeats then get `not_found`, and its agent pauses its
/// capsules and stops). A host with live capsules is `invalid_state` (naming them) unless
/// `?force=true`, which marks them `stopped`.
#[utoipa::path(
    delete,
    path = "/v1/hosts/{id}",
    operation_id = "delete_host",
    tag = "hosts",
    params(HostPath, DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        Checked,
        ManagedHost,
        (status = 409, description = "`invalid_state`: it has live capsules (without `force`)", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<DeleteQuery>,
) -> Result<StatusCode> {
    let host = host_for(&state, &caller, &id, Level::Manage).await?;
    let stopped = state.db.delete_host(&caller, &id, q.force).await?;
    // Its client goes; its agent finds its identity revoked at its next heartbeat.
    state.pool.forget(&host.id);
    let meta = HashMap::from([("stopped_capsules".to_string(), stopped.join(","))]);
    publish_host_event(&state, &caller, &host, "host.deleted", meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a delete would end
#[utoipa::path(
    get,
    path = "/v1/hosts/{id}/delete-preview",
    operation_id = "host_delete_preview",
    tag = "hosts",
    params(HostPath),
    responses(
        (status = 200, description = "The host and its live capsules", body = HostDeletePreview),
        Authed,
        ManagedHost,
    )
)]
pub async fn delete_preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<HostDeletePreview>> {
    let host = host_for(&state, &caller, &id, Level::Manage).await?;
    let capsule_ids = state.db.live_capsules_on_host(&id).await?;
    Ok(Json(HostDeletePreview {
        host: to_api(&state, host).await?,
        capsule_ids,
    }))
}

/// Enable BYOC for a team
///
/// Platform admins: lets the team create its own (`byoc`) hosts, where only its capsules run.
/// One-way: once enabled it stays enabled (`enabled: false` on an enabled team is
/// `invalid_state`).
#[utoipa::path(
    put,
    path = "/v1/admin/teams/{id}/byoc",
    operation_id = "set_team_byoc",
    tag = "hosts",
    params(crate::responses::TeamPath),
    request_body = ByocBody,
    responses(
        (status = 200, description = "The team's flag", body = TeamByoc),
        Checked,
        (status = 403, description = "`forbidden`: not a platform admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team", body = ErrorBody),
        (status = 409, description = "`invalid_state`: turning an enabled team off", body = ErrorBody),
    )
)]
pub async fn set_byoc(
    State(state): State<AppState>,
    caller: Caller,
    Path(team_id): Path<String>,
    body: std::result::Result<JsonBody<ByocBody>, ApiError>,
) -> Result<Json<TeamByoc>> {
    require_platform_admin(
        &state.db,
        &caller,
        "only platform admins enable BYOC for a team",
    )
    .await?;
    let JsonBody(b) = body?;
    let now = state
        .db
        .team_is_byoc(&team_id)
        .await?
        .ok_or_else(|| team_not_found(&team_id))?;
    match (now, b.enabled) {
        (true, false) => {
            return Err(ApiError::InvalidState(format!(
                "team {team_id} is BYOC-enabled: that cannot be turned off"
            )))
        }
        (false, true) => state.db.set_team_byoc(&caller, &team_id, true).await?,
        _ => {}
    }
    Ok(Json(TeamByoc {
        team_id,
        enabled: now || b.enabled,
    }))
}
