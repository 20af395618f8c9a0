//! Per-team quotas: live capsules, vCPUs and memory of running capsules, disk of running and
//! paused capsules, and snapshots (team templates).
//!
//! Limits. The platform's defaults are set by `wrenn up` / `wrenn server` at each start
//! ([`set_defaults`], kept in `settings`); a team may have overrides (`team_quotas`), set by a
//! platform admin (`PUT /v1/teams/{id}/quotas`). `None` is no limit.
//!
//! Enforcement. Create, resume and snapshot create *reserve* what they add before they ask the
//! host: in one transaction, under the team's row lock, the team's use (its capsule rows plus
//! the reservations in flight) is compared with its limits and a reservation row is written.
//! Concurrent requests of a team therefore never exceed a quota together. The reservation is
//! removed when the request ends ([`Reservation::release`], or on drop); one left by a control
//! plane that died is ignored after [`RESERVATION_TTL_MS`]. A refusal is 429 `quota_exceeded`
//! naming the quota, its limit, the use and what the request asked.
//!
//! Platform admins: the owners and admins of the platform's team (the team of the admin user
//! `wrenn up` makes, [`crate::ADMIN_EMAIL`]) and that team's API keys. They read and set any
//! team's quotas; a team's owners read their own team's.

use axum::{
    extract::{Path, State},
    Json,
};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;
use wrenn_proto::agent::v1::ListTemplatesRequest;
use wrenn_types::{Id, IdKind};

use crate::{
    db::{now_ms, Caller, CapsuleRow, Db, Role},
    error::{ApiError, ErrorBody, Result},
    responses::{BadRequest, Internal, Unauthorized},
    state::AppState,
};

/// A reservation older than this (its control plane died mid-request) no longer counts.
pub const RESERVATION_TTL_MS: i64 = 15 * 60 * 1000;

/// The `settings` row that holds the platform's default limits (JSON of [`Limits`]).
const DEFAULTS_SETTING: &str = "quota_defaults";

/// Limits of one team (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Live capsules (pending, starting, running or paused).
    #[schema(minimum = 0)]
    pub capsules: Option<i64>,
    /// vCPUs of running capsules.
    #[schema(minimum = 0)]
    pub vcpus: Option<i64>,
    /// Memory of running capsules, MB.
    #[schema(minimum = 0)]
    pub memory_mb: Option<i64>,
    /// Disk of running and paused capsules, MB.
    #[schema(minimum = 0)]
    pub disk_mb: Option<i64>,
    /// Snapshots (the team's templates).
    #[schema(minimum = 0)]
    pub snapshots: Option<i64>,
}

impl Limits {
    /// Each override where set, else the default.
    fn over(self, defaults: Limits) -> Limits {
        Limits {
            capsules: self.capsules.or(defaults.capsules),
            vcpus: self.vcpus.or(defaults.vcpus),
            memory_mb: self.memory_mb.or(defaults.memory_mb),
            disk_mb: self.disk_mb.or(defaults.disk_mb),
            snapshots: self.snapshots.or(defaults.snapshots),
        }
    }

    fn validate(&self) -> Result<()> {
        for (name, v) in self.named() {
            if v.is_some_and(|v| v < 0) {
                return Err(ApiError::InvalidRequest(format!(
                    "quota {name} must be at least 0 (or null for the platform default)"
                )));
            }
        }
        Ok(())
    }

    fn named(&self) -> [(&'static str, Option<i64>); 5] {
        [
            ("capsules", self.capsules),
            ("vcpus", self.vcpus),
            ("memory_mb", self.memory_mb),
            ("disk_mb", self.disk_mb),
            ("snapshots", self.snapshots),
        ]
    }
}

/// An amount of each resource: a team's use, or what a request adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Amounts {
    pub capsules: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub snapshots: i64,
}

impl Amounts {
    fn named(&self) -> [(&'static str, i64); 5] {
        [
            ("capsules", self.capsules),
            ("vcpus", self.vcpus),
            ("memory_mb", self.memory_mb),
            ("disk_mb", self.disk_mb),
            ("snapshots", self.snapshots),
        ]
    }
}

/// What a quota refusal says: the first quota `need` would exceed, with its limit and use.
pub fn exceeded(limits: &Limits, used: &Amounts, need: &Amounts) -> Option<String> {
    limits
        .named()
        .into_iter()
        .zip(used.named())
        .zip(need.named())
        .find_map(|(((name, limit), (_, used)), (_, need))| {
            let limit = limit?;
            (need > 0 && used + need > limit).then(|| {
                format!(
                    "quota {name} exceeded: the team's limit is {limit}, it uses {used}, this \
                     request needs {need} more"
                )
            })
        })
}

/// Stores the platform's default limits (each start of `wrenn up` / `wrenn server`).
pub async fn set_defaults(db: &Db, limits: &Limits) -> Result<()> {
    let text = serde_json::to_string(limits).map_err(|e| ApiError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(DEFAULTS_SETTING)
    .bind(text)
    .execute(db.pool())
    .await?;
    Ok(())
}

async fn defaults(conn: &mut AnyConnection) -> Result<Limits> {
    let r = sqlx::query("SELECT value FROM settings WHERE name = $1")
        .bind(DEFAULTS_SETTING)
        .fetch_optional(conn)
        .await?;
    Ok(match r {
        Some(r) => serde_json::from_str(&r.try_get::<String, _>("value")?)
            .map_err(|e| ApiError::Internal(format!("the default quotas: {e}")))?,
        None => Limits::default(),
    })
}

async fn overrides(conn: &mut AnyConnection, team_id: &str) -> Result<Limits> {
    let r = sqlx::query(
        "SELECT capsules, vcpus, memory_mb, disk_mb, snapshots FROM team_quotas \
         WHERE team_id = $1",
    )
    .bind(team_id)
    .fetch_optional(conn)
    .await?;
    let Some(r) = r else {
        return Ok(Limits::default());
    };
    Ok(Limits {
        capsules: r.try_get("capsules")?,
        vcpus: r.try_get("vcpus")?,
        memory_mb: r.try_get("memory_mb")?,
        disk_mb: r.try_get("disk_mb")?,
        snapshots: r.try_get("snapshots")?,
    })
}

/// A team's use: its capsule rows and templates, plus the reservations in flight.
async fn usage(conn: &mut AnyConnection, team_id: &str) -> Result<Amounts> {
    let c = sqlx::query(
        "SELECT COUNT(*) AS capsules, \
         CAST(COALESCE(SUM(CASE WHEN status <> 'paused' THEN vcpus ELSE 0 END), 0) AS BIGINT) \
           AS vcpus, \
         CAST(COALESCE(SUM(CASE WHEN status <> 'paused' THEN memory_mb ELSE 0 END), 0) AS BIGINT) \
           AS memory_mb, \
         CAST(COALESCE(SUM(disk_size_mb), 0) AS BIGINT) AS disk_mb \
         FROM capsules WHERE team_id = $1 \
         AND status IN ('pending', 'starting', 'running', 'paused')",
    )
    .bind(team_id)
    .fetch_one(&mut *conn)
    .await?;
    let t = sqlx::query("SELECT COUNT(*) AS n FROM templates WHERE team_id = $1")
        .bind(team_id)
        .fetch_one(&mut *conn)
        .await?;
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(capsules), 0) AS BIGINT) AS capsules, \
         CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS vcpus, \
         CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) AS memory_mb, \
         CAST(COALESCE(SUM(disk_mb), 0) AS BIGINT) AS disk_mb, \
         CAST(COALESCE(SUM(snapshots), 0) AS BIGINT) AS snapshots \
         FROM quota_reservations WHERE team_id = $1 AND created_at > $2",
    )
    .bind(team_id)
    .bind(now_ms() - RESERVATION_TTL_MS)
    .fetch_one(&mut *conn)
    .await?;
    let get = |row: &sqlx::any::AnyRow, c: &str| row.try_get::<i64, _>(c);
    Ok(Amounts {
        capsules: get(&c, "capsules")? + get(&r, "capsules")?,
        vcpus: get(&c, "vcpus")? + get(&r, "vcpus")?,
        memory_mb: get(&c, "memory_mb")? + get(&r, "memory_mb")?,
        disk_mb: get(&c, "disk_mb")? + get(&r, "disk_mb")?,
        snapshots: get(&t, "n")? + get(&r, "snapshots")?,
    })
}

/// What a request holds against its team's quotas until it ends.
#[must_use = "a reservation counts until it is released or dropped"]
pub struct Reservation {
    db: Db,
    id: Option<String>,
}

impl Reservation {
    /// Ends the reservation at once when `r` failed (nothing was made); keeps it otherwise,
    /// until what was made counts through its own rows.
    pub async fn keep_if_ok<T>(self, r: Result<T>) -> Result<(T, Reservation)> {
        match r {
            Ok(v) => Ok((v, self)),
            Err(e) => {
                self.release().await;
                Err(e)
            }
        }
    }

    /// Ends the reservation (what it made now counts through its own rows).
    pub async fn release(mut self) {
        if let Some(id) = self.id.take() {
            delete_reservation(&self.db, &id).await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let db = self.db.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { delete_reservation(&db, &id).await });
            }
        }
    }
}

async fn delete_reservation(db: &Db, id: &str) {
    let done = sqlx::query("DELETE FROM quota_reservations WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await;
    if let Err(e) = done {
        // It stops counting after RESERVATION_TTL_MS anyway.
        tracing::warn!(error = %e, %id, "removing a quota reservation");
    }
}

/// Checks that `need` fits the team's quotas and holds it, atomically: `quota_exceeded`
/// otherwise. Nothing is written when `need` adds nothing.
pub async fn reserve(db: &Db, team_id: &str, need: Amounts) -> Result<Reservation> {
    if need == Amounts::default() {
        return Ok(Reservation {
            db: db.clone(),
            id: None,
        });
    }
    let mut tx = db.pool().begin().await?;
    crate::db::lock_team(&mut tx, team_id).await?;
    let limits = overrides(&mut tx, team_id)
        .await?
        .over(defaults(&mut tx).await?);
    let used = usage(&mut tx, team_id).await?;
    if let Some(why) = exceeded(&limits, &used, &need) {
        return Err(ApiError::QuotaExceeded(why));
    }
    let id = Id::new(IdKind::Audit).to_string();
    sqlx::query(
        "INSERT INTO quota_reservations (id, team_id, capsules, vcpus, memory_mb, disk_mb, \
         snapshots, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(team_id)
    .bind(need.capsules)
    .bind(need.vcpus)
    .bind(need.memory_mb)
    .bind(need.disk_mb)
    .bind(need.snapshots)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Reservation {
        db: db.clone(),
        id: Some(id),
    })
}

/// Reserves a new capsule from host template `agent_template`: `vcpus`, `memory_mb` and
/// `disk_mb` as asked, the template's own where 0 (from the host's template list).
pub async fn reserve_create(
    state: &AppState,
    team_id: &str,
    agent_template: &str,
    vcpus: u32,
    memory_mb: u32,
    disk_mb: u32,
) -> Result<Reservation> {
    let (mut v, mut m, mut d) = (i64::from(vcpus), i64::from(memory_mb), i64::from(disk_mb));
    if v == 0 || m == 0 || d == 0 {
        let templates = state
            .agent()
            .list_templates(ListTemplatesRequest {})
            .await?
            .into_inner()
            .templates;
        // An unknown template is the create's own error (not_found) a moment later.
        if let Some(t) = templates.iter().find(|t| t.name == agent_template) {
            if v == 0 {
                v = t.vcpus.into();
            }
            if m == 0 {
                m = t.memory_mib.into();
            }
            if d == 0 {
                d = (t.disk_bytes >> 20) as i64;
            }
        }
    }
    let need = Amounts {
        capsules: 1,
        vcpus: v,
        memory_mb: m,
        disk_mb: d,
        snapshots: 0,
    };
    reserve(&state.db, team_id, need).await
}

/// Reserves the vCPUs and memory a paused capsule takes again when it resumes.
pub async fn reserve_resume(state: &AppState, c: &CapsuleRow) -> Result<Reservation> {
    let need = Amounts {
        vcpus: c.vcpus,
        memory_mb: c.memory_mb,
        ..Amounts::default()
    };
    reserve(&state.db, &c.team_id, need).await
}

/// Reserves one more snapshot (a new name; replacing one adds nothing).
pub async fn reserve_snapshot(state: &AppState, team_id: &str, new: bool) -> Result<Reservation> {
    let need = Amounts {
        snapshots: i64::from(new),
        ..Amounts::default()
    };
    reserve(&state.db, team_id, need).await
}

// ---------------------------------------------------------------------------------------------
// Reading and setting them.

/// A team's quotas: its limits (override or default), its own overrides, and its use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TeamQuotas {
    pub team_id: String,
    /// What applies now (`null`: unlimited).
    pub limits: Limits,
    /// The team's overrides (`null`: the platform default applies).
    pub overrides: Limits,
    /// The platform's defaults.
    pub defaults: Limits,
    /// What the team uses now (including requests in flight).
    pub usage: Amounts,
}

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

/// The platform's team: the first team the admin user `wrenn up` makes owns.
async fn platform_team(db: &Db) -> Result<Option<String>> {
    let r = sqlx::query(
        "SELECT m.team_id FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE u.email = $1 AND m.role = 'owner' ORDER BY m.created_at LIMIT 1",
    )
    .bind(crate::ADMIN_EMAIL)
    .fetch_optional(db.pool())
    .await?;
    Ok(match r {
        Some(r) => Some(r.try_get("team_id")?),
        None => None,
    })
}

/// Whether the caller administers the platform (see the module's doc).
pub async fn is_platform_admin(db: &Db, caller: &Caller) -> Result<bool> {
    if platform_team(db).await?.as_deref() != Some(caller.team_id.as_str()) {
        return Ok(false);
    }
    Ok(match caller.user_id() {
        None => caller.actor_type == "api_key",
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
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    responses(
        (status = 200, description = "The team's quotas and use", body = TeamQuotas),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a member who is not an owner, or an API key of the team", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team within the caller's reach", body = ErrorBody),
        (status = 500, response = Internal),
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
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    request_body = Limits,
    responses(
        (status = 200, description = "The team's quotas and use", body = TeamQuotas),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a platform admin (a member of the team)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team within the caller's reach", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(team_id): Path<String>,
    body: std::result::Result<Json<Limits>, axum::extract::rejection::JsonRejection>,
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
    let Json(limits) = body?;
    limits.validate()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_exceeded_quota_is_named_with_limit_and_use() {
        let limits = Limits {
            capsules: Some(2),
            vcpus: Some(4),
            memory_mb: None,
            disk_mb: Some(1000),
            snapshots: Some(0),
        };
        let used = Amounts {
            capsules: 1,
            vcpus: 3,
            memory_mb: 1 << 30,
            disk_mb: 0,
            snapshots: 0,
        };
        let one = |vcpus, disk_mb| Amounts {
            capsules: 1,
            vcpus,
            memory_mb: 512,
            disk_mb,
            snapshots: 0,
        };
        assert_eq!(exceeded(&limits, &used, &one(1, 1000)), None);
        assert_eq!(
            exceeded(&limits, &used, &one(2, 1000)).unwrap(),
            "quota vcpus exceeded: the team's limit is 4, it uses 3, this request needs 2 more"
        );
        assert!(exceeded(&limits, &used, &one(1, 1001))
            .unwrap()
            .starts_with("quota disk_mb exceeded: the team's limit is 1000"));
        // A limit of 0 refuses any; asking nothing of a resource never trips its quota.
        let snap = Amounts {
            snapshots: 1,
            ..Amounts::default()
        };
        assert!(exceeded(&limits, &used, &snap)
            .unwrap()
            .starts_with("quota snapshots exceeded"));
        assert_eq!(exceeded(&limits, &used, &Amounts::default()), None);
    }

    #[test]
    fn overrides_win_over_defaults() {
        let d = Limits {
            capsules: Some(10),
            vcpus: Some(8),
            ..Limits::default()
        };
        let o = Limits {
            vcpus: Some(2),
            snapshots: Some(1),
            ..Limits::default()
        };
        assert_eq!(
            o.over(d),
            Limits {
                capsules: Some(10),
                vcpus: Some(2),
                memory_mb: None,
                disk_mb: None,
                snapshots: Some(1),
            }
        );
        assert!(Limits {
            disk_mb: Some(-1),
            ..Limits::default()
        }
        .validate()
        .is_err());
    }
}
