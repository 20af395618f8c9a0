//! Storage: SQLite (a file in `WRENN_DIR`, the default) or PostgreSQL (`postgres://…`), through
//! sqlx's `Any` driver with portable SQL (text ids, BIGINT Unix milliseconds) and one set of
//! migrations. Every query of a team's resources is scoped by `team_id`.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sqlx::{any::AnyPoolOptions, AnyPool, Row};
use wrenn_types::{Id, IdKind};

use crate::error::{ApiError, Result};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The stored form of an API key: its SHA-256 (keys are 128 random bits, so a fast hash is
/// enough; the plaintext is shown once and never stored).
pub fn hash_key(plaintext: &str) -> String {
    Sha256::digest(plaintext.as_bytes())
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub name: String,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub team_id: String,
    /// `api_key`, `user` or `system`.
    pub actor_type: &'static str,
    pub actor_id: String,
    pub actor_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CapsuleRow {
    pub id: String,
    pub team_id: String,
    pub template: String,
    pub status: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_size_mb: i64,
    pub timeout_sec: i64,
    pub metadata: HashMap<String, String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub last_active_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    /// The template's name on the hosts (team-qualified, so teams never collide).
    pub agent_name: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub size_bytes: i64,
    pub source_capsule: String,
    pub metadata: HashMap<String, String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: String,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub outcome: String,
    pub detail: String,
    pub created_at: i64,
}

/// The database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
}

fn capsule_of(r: &sqlx::any::AnyRow) -> Result<CapsuleRow> {
    let metadata: String = r.try_get("metadata")?;
    Ok(CapsuleRow {
        id: r.try_get("id")?,
        team_id: r.try_get("team_id")?,
        template: r.try_get("template")?,
        status: r.try_get("status")?,
        vcpus: r.try_get("vcpus")?,
        memory_mb: r.try_get("memory_mb")?,
        disk_size_mb: r.try_get("disk_size_mb")?,
        timeout_sec: r.try_get("timeout_sec")?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        last_active_at: r.try_get("last_active_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn template_of(r: &sqlx::any::AnyRow) -> Result<TemplateRow> {
    let metadata: String = r.try_get("metadata")?;
    Ok(TemplateRow {
        id: r.try_get("id")?,
        team_id: r.try_get("team_id")?,
        name: r.try_get("name")?,
        agent_name: r.try_get("agent_name")?,
        vcpus: r.try_get("vcpus")?,
        memory_mb: r.try_get("memory_mb")?,
        size_bytes: r.try_get("size_bytes")?,
        source_capsule: r.try_get("source_capsule")?,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        created_at: r.try_get("created_at")?,
    })
}

const CAPSULE_COLUMNS: &str = "id, team_id, template, status, vcpus, memory_mb, disk_size_mb, \
     timeout_sec, metadata, error, created_at, started_at, last_active_at, updated_at";

impl Db {
    /// Opens (creating a SQLite file if needed) and migrates.
    pub async fn open(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; a single connection avoids `database is locked`.
            .max_connections(if sqlite { 1 } else { 10 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL with NORMAL sync never corrupts the file; it syncs at checkpoints.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 5000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| ApiError::Internal(format!("migrating the database: {e}")))?;
        Ok(Db { pool })
    }

    /// A secret kept in the database (made on first use): e.g. the JWT signing key.
    pub async fn secret(&self, name: &str) -> Result<String> {
        if let Some(r) = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(r.try_get("value")?);
        }
        let value = random_hex(32);
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2)")
            .bind(name)
            .bind(&value)
            .execute(&self.pool)
            .await?;
        Ok(value)
    }

    pub async fn create_team(&self, name: &str) -> Result<Team> {
        let id = Id::new(IdKind::Team).to_string();
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(Team {
            id,
            name: name.into(),
        })
    }

    pub async fn team_count(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM teams")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("n")?)
    }

    /// Makes an API key for `team_id`; returns its row and the plaintext (`wrn_` + 32 hex),
    /// which is never stored.
    pub async fn create_api_key(&self, team_id: &str, name: &str) -> Result<(ApiKeyRow, String)> {
        let plaintext = format!("wrn_{}", random_hex(16));
        let row = ApiKeyRow {
            id: Id::new(IdKind::ApiKey).to_string(),
            team_id: team_id.into(),
            name: name.into(),
            prefix: plaintext[..8].into(),
            created_at: now_ms(),
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, team_id, created_by, name, prefix, key_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.id)
        .bind(&row.team_id)
        .bind(None::<String>)
        .bind(&row.name)
        .bind(&row.prefix)
        .bind(hash_key(&plaintext))
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        Ok((row, plaintext))
    }

    /// The caller a plaintext API key stands for, if it is a live key.
    pub async fn authenticate_key(&self, plaintext: &str) -> Result<Option<Caller>> {
        let Some(r) = sqlx::query("SELECT id, team_id, name FROM api_keys WHERE key_hash = $1")
            .bind(hash_key(plaintext))
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: String = r.try_get("id")?;
        // Recorded at most once a minute: no write on every request.
        let now = now_ms();
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(&id)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(Some(Caller {
            team_id: r.try_get("team_id")?,
            actor_type: "api_key",
            actor_id: id,
            actor_name: r.try_get("name")?,
        }))
    }

    pub async fn insert_capsule(&self, c: &CapsuleRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO capsules ({CAPSULE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&c.id)
        .bind(&c.team_id)
        .bind(&c.template)
        .bind(&c.status)
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
        .execute(&self.pool)
        .await?;
        Ok(())
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
            "SELECT {CAPSULE_COLUMNS} FROM capsules WHERE team_id = $1 AND status <> 'stopped' \
             ORDER BY created_at DESC, id"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(capsule_of).collect()
    }

    /// Every capsule not stopped (for the reconciler).
    pub async fn live_capsules(&self) -> Result<Vec<CapsuleRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CAPSULE_COLUMNS} FROM capsules WHERE status <> 'stopped'"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(capsule_of).collect()
    }

    /// Sets a capsule's status (and error); `started` also stamps `started_at`.
    pub async fn set_capsule_status(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        started: bool,
    ) -> Result<()> {
        let now = now_ms();
        let q = if started {
            sqlx::query(
                "UPDATE capsules SET status = $1, error = $2, updated_at = $3, started_at = $4, \
                 last_active_at = $5 WHERE id = $6",
            )
            .bind(status)
            .bind(error)
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(id)
        } else {
            sqlx::query(
                "UPDATE capsules SET status = $1, error = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(status)
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

    pub async fn insert_template(&self, t: &TemplateRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO templates (id, team_id, name, agent_name, vcpus, memory_mb, size_bytes, \
             source_capsule, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&t.id)
        .bind(&t.team_id)
        .bind(&t.name)
        .bind(&t.agent_name)
        .bind(t.vcpus)
        .bind(t.memory_mb)
        .bind(t.size_bytes)
        .bind(&t.source_capsule)
        .bind(serde_json::to_string(&t.metadata).unwrap_or_else(|_| "{}".into()))
        .bind(t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn template(&self, team_id: &str, name: &str) -> Result<Option<TemplateRow>> {
        let r = sqlx::query(
            "SELECT id, team_id, name, agent_name, vcpus, memory_mb, size_bytes, source_capsule, \
             metadata, created_at FROM templates WHERE team_id = $1 AND name = $2",
        )
        .bind(team_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(template_of).transpose()
    }

    pub async fn templates(&self, team_id: &str) -> Result<Vec<TemplateRow>> {
        let rows = sqlx::query(
            "SELECT id, team_id, name, agent_name, vcpus, memory_mb, size_bytes, source_capsule, \
             metadata, created_at FROM templates WHERE team_id = $1 ORDER BY created_at DESC",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(template_of).collect()
    }

    pub async fn delete_template(&self, team_id: &str, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM templates WHERE team_id = $1 AND name = $2")
            .bind(team_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a mutating action.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        resource: (&str, &str),
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (id, team_id, actor_type, actor_id, action, resource_type, \
             resource_id, outcome, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(Id::new(IdKind::Audit).to_string())
        .bind(&caller.team_id)
        .bind(caller.actor_type)
        .bind(&caller.actor_id)
        .bind(action)
        .bind(resource.0)
        .bind(resource.1)
        .bind(outcome)
        .bind(detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A team's audit log, newest first.
    pub async fn audit_log(&self, team_id: &str, limit: i64) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, actor_type, actor_id, action, resource_type, resource_id, outcome, detail, \
             created_at FROM audit_log WHERE team_id = $1 ORDER BY created_at DESC, id LIMIT $2",
        )
        .bind(team_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    actor_type: r.try_get("actor_type")?,
                    actor_id: r.try_get("actor_id")?,
                    action: r.try_get("action")?,
                    resource_type: r.try_get("resource_type")?,
                    resource_id: r.try_get("resource_id")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Records what a team runs now (one sample covers [`USAGE_SAMPLE_SECS`]).
    pub async fn record_usage(
        &self,
        team_id: &str,
        running: i64,
        vcpus: i64,
        memory_mb: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO usage_samples (team_id, sampled_at, running, vcpus, memory_mb) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(team_id)
        .bind(now_ms())
        .bind(running)
        .bind(vcpus)
        .bind(memory_mb)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A team's samples since `since_ms`, oldest first: (at, running, vcpus, memory_mb).
    pub async fn usage_samples(
        &self,
        team_id: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT sampled_at, running, vcpus, memory_mb FROM usage_samples \
             WHERE team_id = $1 AND sampled_at >= $2 ORDER BY sampled_at",
        )
        .bind(team_id)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("sampled_at")?,
                    r.try_get("running")?,
                    r.try_get("vcpus")?,
                    r.try_get("memory_mb")?,
                ))
            })
            .collect()
    }

    /// Who may reach a capsule's ports: whether it is public, and its access token's hash.
    pub async fn set_capsule_access(&self, id: &str, public: bool, token_hash: &str) -> Result<()> {
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

/// How often usage is sampled.
pub const USAGE_SAMPLE_SECS: i64 = 10;
