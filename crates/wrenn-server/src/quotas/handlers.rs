//! `GET` and `PUT /v1/teams/{id}/quotas`: reading and setting a team's quotas.

use axum::{
    extract::{Path, State},
    Json,
};

use super::{
    reserve::{defaults, overrides, usage},
    *,
};
use crate::extract::JsonBody;
use crate::{
    db::{now_ms, Caller, Db, Role},
    error::{ApiError, ErrorBody, Result},
    responses::{Authed, Checked},
    state::AppState,
};

async fn team_quotas(db: &Db, team_id: &str) -> Result<TeamQuotas> {
    let mut conn = db.pool().acquire().await?;
    let overrides = overrides(&mut conn, team_id).await?;
    let defaults = defaults(&mut conn).await?;
    Ok(TeamQuotas {
        team_id: team_id.into(),
        limits: overrides.over(defaults),
        overrides,
        defaults,
        usage: usage(&mut conn, team_id).await?,
    })
}

/// `Ok` when the caller administers the platform, else 403 `forbidden` with `why` (what only
/// platform admins may do).
pub async fn require_platform_admin(db: &Db, caller: &Caller, why: &str) -> Result<()> {
    if is_platform_admin(db, caller).await? {
        Ok(())
    } else {
        Err(ApiError::Forbidden(why.to_string()))
    }
}

/// Whether the caller administers the platform (see the module's doc).
pub async fn is_platform_admin(db: &Db, caller: &Caller) -> Result<bool> {
    if db.platform_team().await?.as_deref() != Some(caller.team_id.as_str()) {
        return Ok(false);
    }
    Ok(match caller.user_id() {
        None => caller.actor_type == wrenn_types::Actor::ApiKey,
        Some(user) => db
            .role(&caller.team_id, user)
            .await?
            .is_some_and(|r| r >= Role::Admin),
    })
}

fn not_found(team_id: &str) -> ApiError {
    ApiError::NotFound(format!("team {team_id} not found"))
}

/// Whether the team exists.
async fn team_exists(db: &Db, team_id: &str) -> Result<bool> {
    Ok(sqlx::query("SELECT id FROM teams WHERE id = $1")
        .bind(team_id)
        .fetch_optional(db.pool())
        .await?
        .is_some())
}

/// Get a team's quotas
///
/// Its limits (the team's override, else the platform default; `null` is unlimited), the
/// overrides and defaults they come from, and its use now. For platform admins (any team) and
/// the team's owners.
#[utoipa::path(
    get,
    path = "/v1/teams/{id}/quotas",
    operation_id = "get_team_quotas",
    tag = "teams",
    params(crate::responses::TeamPath),
    responses(
        (status = 200, description = "The team's quotas and use", body = TeamQuotas),
        Authed,
        (status = 403, description = "`forbidden`: a member who is not an owner, or an API key of the team", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team within the caller's reach", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(team_id): Path<String>,
) -> Result<Json<TeamQuotas>> {
    if !is_platform_admin(&state.db, &caller).await? {
        let role = match caller.user_id() {
            Some(user) => state.db.role(&team_id, user).await?,
            None => None,
        };
        match role {
            Some(Role::Owner) => {}
            Some(_) => {
                return Err(ApiError::Forbidden(
                    "only the team's owners and platform admins read its quotas".into(),
                ))
            }
            None if caller.team_id == team_id => {
                return Err(ApiError::Forbidden(
                    "only the team's owners and platform admins read its quotas".into(),
                ))
            }
            None => return Err(not_found(&team_id)),
        }
    } else if !team_exists(&state.db, &team_id).await? {
        return Err(not_found(&team_id));
    }
    Ok(Json(team_quotas(&state.db, &team_id).await?))
}

/// Set a team's quotas
///
/// Replaces the team's overrides: each field a number (0 or more) or `null`/absent for the
/// platform default. Platform admins only.
#[utoipa::path(
    put,
    path = "/v1/teams/{id}/quotas",
    operation_id = "set_team_quotas",
    tag = "teams",
    params(crate::responses::TeamPath),
    request_body = Limits,
    responses(
        (status = 200, description = "The team's quotas and use", body = TeamQuotas),
        Checked,
        (status = 403, description = "`forbidden`: not a platform admin (a member of the team)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team within the caller's reach", body = ErrorBody),
    )
)]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(team_id): Path<String>,
    body: std::result::Result<JsonBody<Limits>, ApiError>,
) -> Result<Json<TeamQuotas>> {
    if !is_platform_admin(&state.db, &caller).await? {
        let member = caller.team_id == team_id
            || match caller.user_id() {
                Some(user) => state.db.role(&team_id, user).await?.is_some(),
                None => false,
            };
        return Err(if member {
            ApiError::Forbidden("only platform admins set quotas".into())
        } else {
            not_found(&team_id)
        });
    }
    let JsonBody(limits) = body?;
    super::validate(&limits)?;
    if !team_exists(&state.db, &team_id).await? {
        return Err(not_found(&team_id));
    }
    let mut tx = state.db.pool().begin().await?;
    crate::db::lock_team(&mut tx, &team_id).await?;
    sqlx::query("DELETE FROM team_quotas WHERE team_id = $1")
        .bind(&team_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO team_quotas (team_id, capsules, vcpus, memory_mb, disk_mb, snapshots, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&team_id)
    .bind(limits.capsules)
    .bind(limits.vcpus)
    .bind(limits.memory_mb)
    .bind(limits.disk_mb)
    .bind(limits.snapshots)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // In the acting team's log (the platform's), naming the team changed.
    let detail = serde_json::to_string(&limits).unwrap_or_default();
    state
        .db
        .audit(
            &caller,
            "team.quotas.set",
            ("team", &team_id),
            "success",
            &detail,
        )
        .await?;
    Ok(Json(team_quotas(&state.db, &team_id).await?))
}
