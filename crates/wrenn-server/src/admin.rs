//! `/v1/admin/…`: what platform admins see across every team (users, teams, every team's
//! templates). Anyone else is `forbidden` (the routes' existence is no secret; nothing of
//! another team is shown).

use axum::{extract::State, Json};

use crate::{
    db::{AdminTeamRow, AdminTemplateRow, AdminUserRow, Caller},
    error::{ErrorBody, Result},
    quotas::handlers::require_platform_admin,
    responses::Authed,
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::admin::{AdminTeam, AdminTemplate, AdminUser};

async fn admin_only(state: &AppState, caller: &Caller) -> Result<()> {
    require_platform_admin(
        &state.db,
        caller,
        "only platform admins (owners and admins of the platform team) see this",
    )
    .await
}

impl From<AdminUserRow> for AdminUser {
    fn from(r: AdminUserRow) -> Self {
        AdminUser {
            id: r.id,
            email: r.email,
            name: r.name,
            teams: r.teams,
            created_at: rfc3339(r.created_at),
        }
    }
}

impl From<AdminTeamRow> for AdminTeam {
    fn from(r: AdminTeamRow) -> Self {
        AdminTeam {
            id: r.id,
            name: r.name,
            members: r.members,
            capsules: r.capsules,
            templates: r.templates,
            created_at: rfc3339(r.created_at),
        }
    }
}

impl From<AdminTemplateRow> for AdminTemplate {
    fn from(r: AdminTemplateRow) -> Self {
        AdminTemplate {
            team_id: r.team_id,
            team_name: r.team_name,
            name: r.name,
            vcpus: r.vcpus,
            memory_mb: r.memory_mb,
            size_bytes: r.size_bytes,
            created_at: rfc3339(r.created_at),
        }
    }
}

/// Every user (platform admins)
///
/// Every user of the server with how many teams they are in, newest first (at most 1,000).
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    operation_id = "admin_list_users",
    tag = "admin",
    responses(
        (status = 200, description = "The users", body = Vec<AdminUser>),
        Authed,
        (status = 403, description = "`forbidden`: not a platform admin", body = ErrorBody),
    )
)]
pub async fn users(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<AdminUser>>> {
    admin_only(&state, &caller).await?;
    let rows = state.db.admin_users().await?;
    Ok(Json(rows.into_iter().map(AdminUser::from).collect()))
}

/// Every team (platform admins)
///
/// Every team with its members, live capsules and snapshot templates, newest first (at most
/// 1,000).
#[utoipa::path(
    get,
    path = "/v1/admin/teams",
    operation_id = "admin_list_teams",
    tag = "admin",
    responses(
        (status = 200, description = "The teams", body = Vec<AdminTeam>),
        Authed,
        (status = 403, description = "`forbidden`: not a platform admin", body = ErrorBody),
    )
)]
pub async fn teams(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<AdminTeam>>> {
    admin_only(&state, &caller).await?;
    let rows = state.db.admin_teams().await?;
    Ok(Json(rows.into_iter().map(AdminTeam::from).collect()))
}

/// Every team's templates (platform admins)
///
/// The snapshot templates of every team, newest first (at most 1,000); the platform's own
/// templates are in `GET /v1/snapshots`.
#[utoipa::path(
    get,
    path = "/v1/admin/templates",
    operation_id = "admin_list_templates",
    tag = "admin",
    responses(
        (status = 200, description = "The templates", body = Vec<AdminTemplate>),
        Authed,
        (status = 403, description = "`forbidden`: not a platform admin", body = ErrorBody),
    )
)]
pub async fn templates(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<AdminTemplate>>> {
    admin_only(&state, &caller).await?;
    let rows = state.db.admin_templates().await?;
    Ok(Json(rows.into_iter().map(AdminTemplate::from).collect()))
}
