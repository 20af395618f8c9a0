//! A host's identity in the database: its registration and refresh tokens (SHA-256 only,
//! each spent once), registration, refresh, heartbeats, and the host monitor's change.

use sqlx::Row;
use wrenn_types::{
    api::hosts::{HostLoad, HostSpecs, HostStatus},
    CapsuleStatus, Transition,
};

use super::hosts::{host_of, insert_token, HostTokenKind, HOST_COLUMNS};
use super::*;
use crate::error::{ApiError, Result};

/// Stores the refresh token of a new identity.
async fn insert_refresh_token(
    conn: &mut sqlx::AnyConnection,
    host_id: &str,
    issued: &IssuedIdentity<'_>,
) -> Result<()> {
    insert_token(
        conn,
        host_id,
        HostTokenKind::Refresh,
        issued.refresh_token,
        issued.refresh_expires_at,
    )
    .await
}

/// What a registration or refresh stores about the host's new identity.
pub struct IssuedIdentity<'a> {
    pub cert_fingerprint: &'a str,
    pub cert_expires_at: i64,
    pub refresh_token: &'a str,
    pub refresh_expires_at: i64,
}

impl Db {
    /// A pending host's new registration token: the unused ones before it are spent.
    /// `invalid_state` unless the host is `pending`.
    pub async fn new_registration_token(
        &self,
        host_id: &str,
        token: &str,
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let pending = sqlx::query("UPDATE hosts SET updated_at = $1 WHERE id = $2 AND status = $3")
            .bind(now_ms())
            .bind(host_id)
            .bind(HostStatus::Pending.as_str())
            .execute(&mut *tx)
            .await?;
        if pending.rows_affected() == 0 {
            return Err(ApiError::InvalidState(format!(
                "host {host_id} is already registered: a registration token is only for a \
                 pending host"
            )));
        }
        sqlx::query(
            "UPDATE host_tokens SET used_at = $1 WHERE host_id = $2 AND kind = $3 \
             AND used_at IS NULL",
        )
        .bind(now_ms())
        .bind(host_id)
        .bind(HostTokenKind::Registration.as_str())
        .execute(&mut *tx)
        .await?;
        insert_token(
            &mut tx,
            host_id,
            HostTokenKind::Registration,
            token,
            expires_at,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Spends a token of `kind` (once, before it expires): the host it belongs to, or `None`
    /// (unknown, used or expired). A refresh token presented again revokes every refresh token
    /// of its host (someone else has a copy).
    pub async fn spend_host_token(
        &self,
        kind: HostTokenKind,
        plaintext: &str,
    ) -> Result<Option<String>> {
        let hash = hash_key(plaintext);
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE host_tokens SET used_at = $1 WHERE token_hash = $2 AND kind = $3 \
             AND used_at IS NULL AND expires_at > $4",
        )
        .bind(now)
        .bind(&hash)
        .bind(kind.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row =
            sqlx::query("SELECT host_id FROM host_tokens WHERE token_hash = $1 AND kind = $2")
                .bind(&hash)
                .bind(kind.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let host: Option<String> = row.map(|r| r.try_get("host_id")).transpose()?;
        if done.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(host);
        }
        if let (HostTokenKind::Refresh, Some(h)) = (kind, &host) {
            sqlx::query(
                "UPDATE host_tokens SET used_at = $1 WHERE host_id = $2 AND kind = $3 \
                 AND used_at IS NULL",
            )
            .bind(now)
            .bind(h)
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await?;
            tracing::warn!(host = %h, "a spent refresh token was presented again: revoked every refresh token of the host");
        }
        tx.commit().await?;
        Ok(None)
    }

    /// Registers a pending host: its address and specs, `online`, and its first identity.
    /// `invalid_state` when it is not pending (any more), `not_found` when it is gone.
    pub async fn complete_registration(
        &self,
        host_id: &str,
        address: &str,
        specs: &HostSpecs,
        issued: &IssuedIdentity<'_>,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE hosts SET status = $1, address = $2, arch = $3, cpu_cores = $4, \
             memory_mb = $5, disk_mb = $6, slots = $7, vmm = $8, accel = $9, \
             last_heartbeat_at = $10, cert_fingerprint = $11, cert_expires_at = $12, \
             updated_at = $13 WHERE id = $14 AND status = $15",
        )
        .bind(HostStatus::Online.as_str())
        .bind(address)
        .bind(&specs.arch)
        .bind(i64::from(specs.cpu_cores))
        .bind(specs.memory_mb as i64)
        .bind(specs.disk_mb as i64)
        .bind(&specs.slots)
        .bind(&specs.vmm)
        .bind(&specs.accel)
        .bind(now)
        .bind(issued.cert_fingerprint)
        .bind(issued.cert_expires_at)
        .bind(now)
        .bind(host_id)
        .bind(HostStatus::Pending.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(match self.host(host_id).await? {
                Some(_) => ApiError::InvalidState(format!("host {host_id} is already registered")),
                None => ApiError::NotFound(format!("host {host_id} not found")),
            });
        }
        insert_refresh_token(&mut tx, host_id, issued).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a refreshed identity (certificate and next refresh token); `not_found` when the
    /// host is gone.
    pub async fn store_refreshed(&self, host_id: &str, issued: &IssuedIdentity<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE hosts SET cert_fingerprint = $1, cert_expires_at = $2, updated_at = $3 \
             WHERE id = $4",
        )
        .bind(issued.cert_fingerprint)
        .bind(issued.cert_expires_at)
        .bind(now_ms())
        .bind(host_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::NotFound(format!("host {host_id} not found")));
        }
        insert_refresh_token(&mut tx, host_id, issued).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A heartbeat: stores specs, load and the time; an `unreachable` host is `online` again.
    /// The status before, or `None` when the host is gone.
    pub async fn host_heartbeat(
        &self,
        host_id: &str,
        specs: &HostSpecs,
        load: &HostLoad,
        now: i64,
    ) -> Result<Option<HostStatus>> {
        let Some(before) = self.host(host_id).await? else {
            return Ok(None);
        };
        let status = match before.status {
            HostStatus::Pending => HostStatus::Pending,
            HostStatus::Online | HostStatus::Unreachable => HostStatus::Online,
        };
        let done = sqlx::query(
            "UPDATE hosts SET status = $1, arch = $2, cpu_cores = $3, memory_mb = $4, \
             disk_mb = $5, slots = $6, vmm = $7, accel = $8, load = $9, last_heartbeat_at = $10, \
             updated_at = $11 WHERE id = $12",
        )
        .bind(status.as_str())
        .bind(&specs.arch)
        .bind(i64::from(specs.cpu_cores))
        .bind(specs.memory_mb as i64)
        .bind(specs.disk_mb as i64)
        .bind(&specs.slots)
        .bind(&specs.vmm)
        .bind(&specs.accel)
        .bind(serde_json::to_string(load).unwrap_or_else(|_| "{}".into()))
        .bind(now)
        .bind(now)
        .bind(host_id)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() > 0).then_some(before.status))
    }

    /// Online hosts whose last heartbeat is older than `cutoff` (Unix ms).
    pub async fn silent_hosts(&self, cutoff: i64) -> Result<Vec<HostRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE status = $1 \
             AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $2) ORDER BY id"
        ))
        .bind(HostStatus::Online.as_str())
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(host_of).collect()
    }

    /// Marks a silent host `unreachable` (if it is still online and silent since before
    /// `cutoff`) and its pending, starting and running capsules `missing`. The capsules it
    /// lost, or `None` when another pass (or a heartbeat) got there first.
    pub async fn lose_host(&self, host_id: &str, cutoff: i64) -> Result<Option<Vec<String>>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE hosts SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4 \
             AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $5)",
        )
        .bind(HostStatus::Unreachable.as_str())
        .bind(now)
        .bind(host_id)
        .bind(HostStatus::Online.as_str())
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let rows = sqlx::query("SELECT id, status FROM capsules WHERE host_id = $1 ORDER BY id")
            .bind(host_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut lost = Vec::new();
        for r in rows {
            let id: String = r.try_get("id")?;
            let Ok(status) = r.try_get::<String, _>("status")?.parse::<CapsuleStatus>() else {
                continue;
            };
            let Ok(next) = status.apply(Transition::Lose) else {
                continue;
            };
            if next == status {
                continue;
            }
            sqlx::query("UPDATE capsules SET status = $1, updated_at = $2 WHERE id = $3")
                .bind(next.as_str())
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            lost.push(id);
        }
        tx.commit().await?;
        Ok(Some(lost))
    }
}
