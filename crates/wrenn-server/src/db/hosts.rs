//! Hosts, their tags and tokens (registration and refresh tokens: SHA-256 only), and what the
//! host monitor changes.

use sqlx::{AnyConnection, Row};
use wrenn_types::api::hosts::{HostKind, HostLoad, HostSpecs, HostStatus};

use super::tx::{audit_success, lock_team};
use super::*;
use crate::error::{ApiError, Result};

/// A `hosts` row.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub id: String,
    pub kind: HostKind,
    pub team_id: Option<String>,
    pub provider: String,
    pub availability_zone: String,
    pub status: HostStatus,
    pub draining: bool,
    pub builtin: bool,
    pub address: String,
    pub specs: HostSpecs,
    pub load: HostLoad,
    pub last_heartbeat_at: Option<i64>,
    pub cert_fingerprint: Option<String>,
    pub cert_expires_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(super) const HOST_COLUMNS: &str =
    "id, kind, team_id, provider, availability_zone, status, draining, \
     builtin, address, arch, cpu_cores, memory_mb, disk_mb, slots, vmm, accel, load, \
     last_heartbeat_at, cert_fingerprint, cert_expires_at, created_by, created_at, updated_at";

/// Capsule statuses that hold a host's resources (not `stopped`, not `error`).
pub(super) const LIVE: &str = "('pending', 'starting', 'running', 'paused', 'missing')";

pub(super) fn host_of(r: &sqlx::any::AnyRow) -> Result<HostRow> {
    let bad = |what: &str, e: wrenn_types::ParseError| {
        ApiError::Internal(format!("a host row's {what}: {e}"))
    };
    let u = |n: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(n)?.max(0) as u64) };
    Ok(HostRow {
        id: r.try_get("id")?,
        kind: r
            .try_get::<String, _>("kind")?
            .parse()
            .map_err(|e| bad("kind", e))?,
        team_id: r.try_get("team_id")?,
        provider: r.try_get("provider")?,
        availability_zone: r.try_get("availability_zone")?,
        status: r
            .try_get::<String, _>("status")?
            .parse()
            .map_err(|e| bad("status", e))?,
        draining: r.try_get::<i64, _>("draining")? != 0,
        builtin: r.try_get::<i64, _>("builtin")? != 0,
        address: r.try_get("address")?,
        specs: HostSpecs {
            arch: r.try_get("arch")?,
            cpu_cores: u("cpu_cores")? as u32,
            memory_mb: u("memory_mb")?,
            disk_mb: u("disk_mb")?,
            slots: r.try_get("slots")?,
            vmm: r.try_get("vmm")?,
            accel: r.try_get("accel")?,
        },
        load: serde_json::from_str(&r.try_get::<String, _>("load")?).unwrap_or_default(),
        last_heartbeat_at: r.try_get("last_heartbeat_at")?,
        cert_fingerprint: r.try_get("cert_fingerprint")?,
        cert_expires_at: r.try_get("cert_expires_at")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A token kind of `host_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostTokenKind {
    Registration,
    Refresh,
}

impl HostTokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HostTokenKind::Registration => "registration",
            HostTokenKind::Refresh => "refresh",
        }
    }
}

/// Stores a new token of `kind` for `host_id` (its SHA-256 only).
pub(super) async fn insert_token(
    conn: &mut AnyConnection,
    host_id: &str,
    kind: HostTokenKind,
    plaintext: &str,
    expires_at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO host_tokens (id, host_id, kind, token_hash, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(format!("htk-{}", wrenn_types::secret::hex(12)?))
    .bind(host_id)
    .bind(kind.as_str())
    .bind(hash_key(plaintext))
    .bind(expires_at)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

impl Db {
    /// Makes a host (with its tags) and its first registration token, audited in `by`'s team.
    pub async fn create_host(
        &self,
        by: &Caller,
        host: &HostRow,
        tags: &[String],
        token: &str,
        token_expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        sqlx::query(
            "INSERT INTO hosts (id, kind, team_id, provider, availability_zone, status, draining, \
             builtin, address, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&host.id)
        .bind(host.kind.as_str())
        .bind(&host.team_id)
        .bind(&host.provider)
        .bind(&host.availability_zone)
        .bind(host.status.as_str())
        .bind(i64::from(host.draining))
        .bind(i64::from(host.builtin))
        .bind(&host.address)
        .bind(&host.created_by)
        .bind(host.created_at)
        .bind(host.updated_at)
        .execute(&mut *tx)
        .await?;
        for tag in tags {
            insert_tag(&mut tx, &host.id, tag).await?;
        }
        insert_token(
            &mut tx,
            &host.id,
            HostTokenKind::Registration,
            token,
            token_expires_at,
        )
        .await?;
        audit_success(
            &mut tx,
            by,
            "host.create",
            ("host", &host.id),
            host.kind.as_str(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn host(&self, id: &str) -> Result<Option<HostRow>> {
        let r = sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(host_of).transpose()
    }

    /// Every host (`team_id` `None`), or the `byoc` hosts of one team; oldest first.
    pub async fn hosts(&self, team_id: Option<&str>) -> Result<Vec<HostRow>> {
        let rows = match team_id {
            None => {
                sqlx::query(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts ORDER BY created_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE kind = 'byoc' AND team_id = $1 \
                     ORDER BY created_at, id"
                ))
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(host_of).collect()
    }

    /// A host's tags, sorted.
    pub async fn host_tags(&self, host_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT tag FROM host_tags WHERE host_id = $1 ORDER BY tag")
            .bind(host_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("tag")?)).collect()
    }

    /// Adds a tag (already there: nothing changes); audited in `by`'s team.
    pub async fn add_host_tag(&self, by: &Caller, host_id: &str, tag: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        let there = sqlx::query("SELECT 1 AS x FROM host_tags WHERE host_id = $1 AND tag = $2")
            .bind(host_id)
            .bind(tag)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !there {
            insert_tag(&mut tx, host_id, tag).await?;
            audit_success(&mut tx, by, "host.tag", ("host", host_id), tag).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a tag; whether it was there. Audited in `by`'s team.
    pub async fn remove_host_tag(&self, by: &Caller, host_id: &str, tag: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        let done = sqlx::query("DELETE FROM host_tags WHERE host_id = $1 AND tag = $2")
            .bind(host_id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() > 0 {
            audit_success(&mut tx, by, "host.untag", ("host", host_id), tag).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets or clears `draining`; audited in `by`'s team.
    pub async fn set_host_draining(&self, by: &Caller, host_id: &str, on: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        sqlx::query("UPDATE hosts SET draining = $1, updated_at = $2 WHERE id = $3")
            .bind(i64::from(on))
            .bind(now_ms())
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        let action = if on { "host.drain" } else { "host.undrain" };
        audit_success(&mut tx, by, action, ("host", host_id), "").await?;
        tx.commit().await?;
        Ok(())
    }

    /// The host's capsules that hold its resources (not stopped or failed), oldest first.
    pub async fn live_capsules_on_host(&self, host_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(&format!(
            "SELECT id FROM capsules WHERE host_id = $1 AND status IN {LIVE} \
             ORDER BY created_at, id"
        ))
        .bind(host_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Deletes a host and every token it had (audited in `by`'s team). Without `force`, a host
    /// with live capsules is `invalid_state` (naming them); with it, they become `stopped`.
    /// The capsules stopped.
    pub async fn delete_host(
        &self,
        by: &Caller,
        host_id: &str,
        force: bool,
    ) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT id FROM capsules WHERE host_id = $1 AND status IN {LIVE} ORDER BY id"
        ))
        .bind(host_id)
        .fetch_all(&mut *tx)
        .await?;
        let live: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<std::result::Result<_, _>>()?;
        if !live.is_empty() && !force {
            return Err(ApiError::InvalidState(format!(
                "host {host_id} has {} live capsule(s): {}; stop them, or delete with \
                 ?force=true (they become stopped)",
                live.len(),
                live.join(", ")
            )));
        }
        let now = now_ms();
        sqlx::query(&format!(
            "UPDATE capsules SET status = 'stopped', updated_at = $1 WHERE host_id = $2 \
             AND status IN {LIVE}"
        ))
        .bind(now)
        .bind(host_id)
        .execute(&mut *tx)
        .await?;
        for table in ["host_tokens", "host_tags", "host_reservations"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE host_id = $1"))
                .bind(host_id)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM hosts WHERE id = $1")
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::NotFound(format!("host {host_id} not found")));
        }
        let detail = if live.is_empty() {
            String::new()
        } else {
            format!("stopped {}", live.join(","))
        };
        audit_success(&mut tx, by, "host.delete", ("host", host_id), &detail).await?;
        tx.commit().await?;
        Ok(live)
    }

    /// Whether the team may have `byoc` hosts.
    pub async fn team_is_byoc(&self, team_id: &str) -> Result<Option<bool>> {
        let r = sqlx::query("SELECT is_byoc FROM teams WHERE id = $1")
            .bind(team_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some(r.try_get::<i64, _>("is_byoc")? != 0),
            None => None,
        })
    }

    /// Sets a team's BYOC flag (audited in `by`'s team); `not_found` for no such team.
    pub async fn set_team_byoc(&self, by: &Caller, team_id: &str, on: bool) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        let done = sqlx::query("UPDATE teams SET is_byoc = $1 WHERE id = $2")
            .bind(i64::from(on))
            .bind(team_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::NotFound(format!("team {team_id} not found")));
        }
        let detail = if on { "enabled" } else { "disabled" };
        audit_success(&mut tx, by, "team.byoc", ("team", team_id), detail).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_tag(conn: &mut AnyConnection, host_id: &str, tag: &str) -> Result<()> {
    sqlx::query("INSERT INTO host_tags (host_id, tag) VALUES ($1, $2)")
        .bind(host_id)
        .bind(tag)
        .execute(conn)
        .await?;
    Ok(())
}
