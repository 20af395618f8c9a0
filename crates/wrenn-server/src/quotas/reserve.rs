//! Reserving what a create, resume or snapshot adds, against the team's limits.

use sqlx::{AnyConnection, Row};
use wrenn_proto::agent::v1::ListTemplatesRequest;
use wrenn_types::{api::hosts::HostStatus, CapsuleStatus, Id, IdKind};

use super::*;
use crate::{
    db::{now_ms, CapsuleRow, Db},
    error::{ApiError, Result},
    state::AppState,
};

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

pub(super) async fn defaults(conn: &mut AnyConnection) -> Result<Limits> {
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

pub(super) async fn overrides(conn: &mut AnyConnection, team_id: &str) -> Result<Limits> {
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
pub(super) async fn usage(conn: &mut AnyConnection, team_id: &str) -> Result<Amounts> {
    let c = sqlx::query(
        "SELECT COUNT(*) AS capsules, \
         CAST(COALESCE(SUM(CASE WHEN status <> $2 THEN vcpus ELSE 0 END), 0) AS BIGINT) \
           AS vcpus, \
         CAST(COALESCE(SUM(CASE WHEN status <> $2 THEN memory_mb ELSE 0 END), 0) AS BIGINT) \
           AS memory_mb, \
         CAST(COALESCE(SUM(disk_size_mb), 0) AS BIGINT) AS disk_mb \
         FROM capsules WHERE team_id = $1 \
         AND status IN ($3, $4, $5, $2)",
    )
    .bind(team_id)
    .bind(CapsuleStatus::Paused.as_str())
    .bind(CapsuleStatus::Pending.as_str())
    .bind(CapsuleStatus::Starting.as_str())
    .bind(CapsuleStatus::Running.as_str())
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
/// `disk_mb` as asked, the template's own where 0 (from the first online host that lists it).
/// The reservation, and what it holds (what the capsule needs of its host).
pub async fn reserve_create(
    state: &AppState,
    team_id: &str,
    agent_template: &str,
    vcpus: u32,
    memory_mb: u32,
    disk_mb: u32,
) -> Result<(Reservation, crate::scheduler::Claims)> {
    let (mut v, mut m, mut d) = (i64::from(vcpus), i64::from(memory_mb), i64::from(disk_mb));
    if v == 0 || m == 0 || d == 0 {
        // An unknown template is the create's own error (not_found) a moment later.
        if let Some(t) = find_template(state, agent_template).await? {
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
    let held = reserve(&state.db, team_id, need).await?;
    Ok((
        held,
        crate::scheduler::Claims::new(v.max(0) as u64, m.max(0) as u64, d.max(0) as u64),
    ))
}

/// Host template `name` as the first online host that lists it describes it.
async fn find_template(
    state: &AppState,
    name: &str,
) -> Result<Option<wrenn_proto::agent::v1::Template>> {
    let hosts = state.db.host_records().await?;
    let mut failed = None;
    for h in hosts.iter().filter(|h| h.status == HostStatus::Online) {
        let listed = match state.pool.client(h) {
            Ok(mut agent) => agent
                .list_templates(ListTemplatesRequest {})
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        match listed {
            Ok(l) => {
                if let Some(t) = l
                    .into_inner()
                    .templates
                    .into_iter()
                    .find(|t| t.name == name)
                {
                    return Ok(Some(t));
                }
            }
            Err(e) => failed = Some(e),
        }
    }
    // No host has it: if one could not say, that is the answer (the host is down, not the
    // template unknown).
    match failed {
        Some(e) => Err(e),
        None => Ok(None),
    }
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
