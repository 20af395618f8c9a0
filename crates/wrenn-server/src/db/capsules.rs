//! Capsules and their network policy and access.

use sqlx::Row;

use super::*;
use wrenn_types::CapsuleStatus;

use crate::error::{ApiError, Result};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CapsuleRow {
    pub id: String,
    pub team_id: String,
    pub template: String,
    #[sqlx(try_from = "String")]
    pub status: CapsuleStatus,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_size_mb: i64,
    pub timeout_sec: i64,
    #[sqlx(try_from = "MetadataText")]
    pub metadata: HashMap<String, String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub last_active_at: Option<i64>,
    pub updated_at: i64,
    /// The host it runs (or is paused) on.
    pub host_id: Option<String>,
}

pub(super) fn capsule_of(r: &sqlx::any::AnyRow) -> Result<CapsuleRow> {
    Ok(sqlx::FromRow::from_row(r)?)
}

pub(super) const CAPSULE_COLUMNS: &str =
    "id, team_id, template, status, vcpus, memory_mb, disk_size_mb, \
     timeout_sec, metadata, error, created_at, started_at, last_active_at, updated_at, host_id";

impl Db {
    pub async fn insert_capsule(&self, c: &CapsuleRow) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_capsule_on(&mut conn, c).await
    }

    /// A team's capsule (any status), or `not_found`.
    pub async fn capsule(&self, team_id: &str, id: &str) -> Result<CapsuleRow> {
        let r = sqlx::query(&format!(
            "SELECT {CAPSULE_COLUMNS} FROM capsules WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("capsule {id} not found")))?;
        capsule_of(&r)
    }

    /// A team's capsules that are not stopped, newest first.
    pub async fn capsules(&self, team_id: &str) -> Result<Vec<CapsuleRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CAPSULE_COLUMNS} FROM capsules WHERE team_id = $1 AND status <> $2 \
             ORDER BY created_at DESC, id"
        ))
        .bind(team_id)
        .bind(CapsuleStatus::Stopped.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(capsule_of).collect()
    }

    /// Every capsule not stopped (for the reconciler).
    pub async fn live_capsules(&self) -> Result<Vec<CapsuleRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CAPSULE_COLUMNS} FROM capsules WHERE status <> $1"
        ))
        .bind(CapsuleStatus::Stopped.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(capsule_of).collect()
    }

    /// How many capsules (of every team) have each status, by status name.
    pub async fn capsule_status_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM capsules GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// Sets a capsule's status (and error); `started` also stamps `started_at`.
    pub async fn set_capsule_status(
        &self,
        id: &str,
        status: CapsuleStatus,
        error: Option<&str>,
        started: bool,
    ) -> Result<()> {
        let now = now_ms();
        let q = if started {
            sqlx::query(
                "UPDATE capsules SET status = $1, error = $2, updated_at = $3, started_at = $4, \
                 last_active_at = $5 WHERE id = $6",
            )
            .bind(status.as_str())
            .bind(error)
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(id)
        } else {
            sqlx::query(
                "UPDATE capsules SET status = $1, error = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(status.as_str())
            .bind(error)
            .bind(now)
            .bind(id)
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// Records activity (at most once a second per capsule).
    pub async fn touch_capsule(&self, id: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE capsules SET last_active_at = $1 WHERE id = $2 \
             AND (last_active_at IS NULL OR last_active_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 1_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A new capsule's settings beside its row: who may reach its ports (public, the access
    /// token's hash), its egress and the host tags it was placed by (none: nothing recorded).
    pub async fn set_capsule_settings(
        &self,
        id: &str,
        public: bool,
        token_hash: &str,
        egress: bool,
        policy: &wrenn_types::egress::EgressPolicy,
        host_tags: &[String],
    ) -> Result<()> {
        self.set_capsule_access(id, public, token_hash).await?;
        self.set_capsule_network(id, egress, policy).await?;
        if !host_tags.is_empty() {
            self.set_capsule_host_tags(id, host_tags).await?;
        }
        Ok(())
    }

    /// Records a capsule's egress (on/off and its lists, JSON arrays).
    pub async fn set_capsule_network(
        &self,
        id: &str,
        egress: bool,
        policy: &wrenn_types::egress::EgressPolicy,
    ) -> Result<()> {
        let json = |v: &Vec<String>| {
            serde_json::to_string(v).map_err(|e| ApiError::Internal(format!("encoding: {e}")))
        };
        sqlx::query(
            "UPDATE capsules SET egress = $1, egress_allow = $2, egress_deny = $3 WHERE id = $4",
        )
        .bind(i64::from(egress))
        .bind(json(&policy.allow)?)
        .bind(json(&policy.deny)?)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the host tags a capsule was created with (a move keeps to them).
    async fn set_capsule_host_tags(&self, id: &str, tags: &[String]) -> Result<()> {
        let json = serde_json::to_string(tags)
            .map_err(|e| ApiError::Internal(format!("encoding: {e}")))?;
        sqlx::query("UPDATE capsules SET host_tags = $1 WHERE id = $2")
            .bind(json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The host tags a capsule was created with (none for one from before they were kept).
    pub async fn capsule_host_tags(&self, id: &str) -> Result<Vec<String>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT host_tags FROM capsules WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let text = text.ok_or_else(|| ApiError::NotFound(format!("capsule {id} not found")))?;
        serde_json::from_str(&text)
            .map_err(|e| ApiError::Internal(format!("capsule {id}'s host tags: {e}")))
    }

    /// A capsule's egress: on/off and its lists.
    pub async fn capsule_network(
        &self,
        id: &str,
    ) -> Result<(bool, wrenn_types::egress::EgressPolicy)> {
        let r = sqlx::query("SELECT egress, egress_allow, egress_deny FROM capsules WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("capsule {id} not found")))?;
        let egress: i64 = r.try_get("egress")?;
        let list = |col: &str| -> Result<Vec<String>> {
            let text: String = r.try_get(col)?;
            serde_json::from_str(&text)
                .map_err(|e| ApiError::Internal(format!("capsule {id}'s {col}: {e}")))
        };
        Ok((
            egress != 0,
            wrenn_types::egress::EgressPolicy {
                allow: list("egress_allow")?,
                deny: list("egress_deny")?,
            },
        ))
    }

    /// Who may reach a capsule's ports: whether it is public, and its access token's hash.
    async fn set_capsule_access(&self, id: &str, public: bool, token_hash: &str) -> Result<()> {
        sqlx::query("UPDATE capsules SET public = $1, access_token_hash = $2 WHERE id = $3")
            .bind(i64::from(public))
            .bind(token_hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn capsule_access(&self, id: &str) -> Result<(bool, Option<String>)> {
        let r = sqlx::query("SELECT public, access_token_hash FROM capsules WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("capsule {id} not found")))?;
        let public: i64 = r.try_get("public")?;
        Ok((public != 0, r.try_get("access_token_hash")?))
    }

    /// A capsule whatever its team (the proxy checks access itself).
    pub async fn capsule_any(&self, id: &str) -> Result<CapsuleRow> {
        let r = sqlx::query(&format!(
            "SELECT {CAPSULE_COLUMNS} FROM capsules WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("capsule {id} not found")))?;
        capsule_of(&r)
    }
}

/// Inserts capsule row `c` on `conn` (a transaction, or a connection).
pub(super) async fn insert_capsule_on(
    conn: &mut sqlx::AnyConnection,
    c: &CapsuleRow,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO capsules ({CAPSULE_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(&c.id)
    .bind(&c.team_id)
    .bind(&c.template)
    .bind(c.status.as_str())
    .bind(c.vcpus)
    .bind(c.memory_mb)
    .bind(c.disk_size_mb)
    .bind(c.timeout_sec)
    .bind(serde_json::to_string(&c.metadata).unwrap_or_else(|_| "{}".into()))
    .bind(&c.error)
    .bind(c.created_at)
    .bind(c.started_at)
    .bind(c.last_active_at)
    .bind(c.updated_at)
    .bind(&c.host_id)
    .execute(conn)
    .await?;
    Ok(())
}
