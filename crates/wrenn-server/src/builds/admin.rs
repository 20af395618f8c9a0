//! `/v1/admin/builds`: platform admins build platform templates (every team sees and uses
//! them, none but the platform team deletes them) and see every team's builds.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use wrenn_types::api::builds::{Build, CreateBuildBody};

use super::handlers::{queue_build, BuildPath};
use crate::{
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    quotas::handlers::require_platform_admin,
    responses::{Authed, Checked},
    state::AppState,
};

async fn admin_only(state: &AppState, caller: &Caller) -> Result<()> {
    require_platform_admin(
        &state.db,
        caller,
        "only platform admins build platform templates and see every team's builds",
    )
    .await
}

/// Queue a platform template's build
///
/// As `POST /v1/builds`, for platform admins: the template is the platform team's, marked
/// `platform`, listed to every team and usable by every team (a team's own template of the
/// same name comes first for that team); only the platform team deletes it. Follow, cancel
/// and read the log with the `/v1/builds/{id}` routes.
#[utoipa::path(
    post,
    path = "/v1/admin/builds",
    operation_id = "create_platform_build",
    tag = "builds",
    request_body = CreateBuildBody,
    responses(
        (status = 201, description = "The queued build", body = Build),
        Checked,
        (status = 403, description = "`forbidden`: not a platform admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no base template of that name", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is a base template's", body = ErrorBody),
        (status = 413, description = "`too_large`: the archive is over 100 MiB", body = ErrorBody),
        (status = 429, response = crate::responses::QuotaExceeded),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(b): JsonBody<CreateBuildBody>,
) -> Result<(StatusCode, Json<Build>)> {
    admin_only(&state, &caller).await?;
    queue_build(&state, &caller, b, true).await
}

/// List every team's builds
///
/// Newest first (at most 100); platform admins only.
#[utoipa::path(
    get,
    path = "/v1/admin/builds",
    operation_id = "list_all_builds",
    tag = "builds",
    responses(
        (status = 200, description = "The builds", body = [Build]),
        Authed,
        (status = 403, description = "`forbidden`: not a platform admin", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Build>>> {
    admin_only(&state, &caller).await?;
    let rows = state.db.all_builds(100).await?;
    Ok(Json(rows.iter().map(Build::from).collect()))
}

/// Get any team's build
///
/// Platform admins only.
#[utoipa::path(
    get,
    path = "/v1/admin/builds/{id}",
    operation_id = "get_any_build",
    tag = "builds",
    params(BuildPath),
    responses(
        (status = 200, description = "The build", body = Build),
        Authed,
        (status = 403, description = "`forbidden`: not a platform admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such build", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Build>> {
    admin_only(&state, &caller).await?;
    let row = state
        .db
        .any_build(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build {id} not found")))?;
    Ok(Json(Build::from(&row)))
}
