//! Storage: SQLite (a file in `WRENN_DIR`, the default) or PostgreSQL (`postgres://…`), through
//! sqlx's `Any` driver with portable SQL (text ids, BIGINT Unix milliseconds) and one set of
//! migrations. Every query of a team's resources is scoped by `team_id`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sha2::{Digest, Sha256};
use sqlx::{any::AnyPoolOptions, AnyConnection, AnyPool, Row};
use wrenn_types::{Id, IdKind};

use crate::error::{ApiError, Result};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
    pub created_at: i64,
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
    /// The user or API key that made it (`None` for the bootstrap key).
    pub created_by: Option<String>,
    /// The user whose membership the key lives with: the user who made it, or the owner of
    /// the key that made it. `None`: the team's own key (the bootstrap key and keys it made),
    /// which lives as long as the team.
    pub owner_id: Option<String>,
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
    /// Secrets never change once made, so each is read from the database once.
    secrets: Arc<Mutex<HashMap<String, String>>>,
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

mod security;
pub use security::{Invitation, BOOTSTRAP_ACTOR};

impl Db {
    /// Opens (creating a SQLite file if needed) and migrates.
    pub async fn open(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; a single connection avoids `database is locked`.
            .max_connections(if sqlite { 1 } else { 10 })
            // A database server that is down or restarting answers `unavailable` (503) within
            // seconds instead of holding requests for sqlx's default 30 s.
            .acquire_timeout(Duration::from_secs(if sqlite { 30 } else { 5 }))
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
        let db = Db {
            pool,
            secrets: Arc::default(),
        };
        // The user-token signing key exists from the first start on.
        db.secret(JWT_SECRET).await?;
        Ok(db)
    }

    /// The pool, for modules with their own tables (quotas).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A secret kept in the database (made on first use, then kept): e.g. the JWT signing
    /// key. Concurrent first uses (several control planes on one PostgreSQL) agree on one.
    pub async fn secret(&self, name: &str) -> Result<String> {
        if let Some(v) = self.cached_secret(name) {
            return Ok(v);
        }
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(wrenn_types::secret::hex(32)?)
        .execute(&self.pool)
        .await?;
        let r = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        let value: String = r.try_get("value")?;
        if let Ok(mut cache) = self.secrets.lock() {
            cache.insert(name.to_string(), value.clone());
        }
        Ok(value)
    }

    fn cached_secret(&self, name: &str) -> Option<String> {
        self.secrets.lock().ok()?.get(name).cloned()
    }

    pub async fn create_team(&self, name: &str) -> Result<Team> {
        let mut conn = self.pool.acquire().await?;
        insert_team(&mut conn, name).await
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
        let mut conn = self.pool.acquire().await?;
        insert_api_key(&mut conn, team_id, name, None, None).await
    }

    /// The caller a plaintext API key stands for, if it is a live key: one whose owner (if it
    /// has one) is still a member of the key's team.
    pub async fn authenticate_key(&self, plaintext: &str) -> Result<Option<Caller>> {
        let Some(r) = sqlx::query(
            "SELECT k.id, k.team_id, k.name FROM api_keys k WHERE k.key_hash = $1 \
             AND (k.owner_id IS NULL OR EXISTS (SELECT 1 FROM memberships m \
                  WHERE m.team_id = k.team_id AND m.user_id = k.owner_id))",
        )
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

    /// Records a mutating action in the caller's team's log (in the order they happen).
    pub async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        resource: (&str, &str),
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        let entry = AuditEntry {
            caller,
            action,
            resource,
            outcome,
            detail,
        };
        let mut attempt = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            lock_team(&mut tx, &caller.team_id).await?;
            match insert_audit(&mut tx, &entry).await {
                Ok(()) => {
                    tx.commit().await?;
                    return Ok(());
                }
                // A log of a team the teams table does not hold is not locked: a concurrent
                // writer may have taken the same sequence number. Try again.
                Err(ApiError::Db(e)) if is_unique_violation(&e) && attempt < 5 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// A team's audit log, newest first.
    pub async fn audit_log(&self, team_id: &str, limit: i64) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, actor_type, actor_id, action, resource_type, resource_id, outcome, detail, \
             created_at FROM audit_log WHERE team_id = $1 ORDER BY seq DESC LIMIT $2",
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

// ---------------------------------------------------------------------------------------------
// Accounts: users, teams, memberships, API keys. Every change to a team's accounts takes the
// acting `Caller` (its `team_id` is the team changed) and writes its audit row in the same
// transaction, so no change is ever unaudited.

/// The name of the user-token signing key in `settings`.
pub const JWT_SECRET: &str = "jwt";

/// A member's rights in a team: owner > admin > member.
// Declared lowest first, so `Ord` compares rank.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// Lower-case.
    pub email: String,
    pub name: String,
    pub created_at: i64,
}

/// A team as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub team: Team,
    pub role: Role,
    pub joined_at: i64,
}

/// A team's member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: User,
    pub role: Role,
    pub joined_at: i64,
}

/// One audit row to write.
struct AuditEntry<'a> {
    caller: &'a Caller,
    action: &'a str,
    resource: (&'a str, &'a str),
    outcome: &'a str,
    detail: &'a str,
}

/// Whether `e` is a unique-constraint violation (SQLite or PostgreSQL).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

fn role_of(r: &sqlx::any::AnyRow) -> Result<Role> {
    let role: String = r.try_get("role")?;
    Role::parse(&role).ok_or_else(|| ApiError::Internal(format!("unknown role {role:?} stored")))
}

fn user_of(r: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        name: r.try_get("user_name")?,
        created_at: r.try_get("user_created_at")?,
    })
}

const USER_COLUMNS: &str =
    "u.id AS user_id, u.email, u.name AS user_name, u.created_at AS user_created_at";

/// Takes the team's row lock until the transaction ends (PostgreSQL; SQLite has one writer
/// anyway), so checks and changes of one team's members and log never interleave. Whether the
/// team exists.
pub(crate) async fn lock_team(conn: &mut AnyConnection, team_id: &str) -> Result<bool> {
    let done = sqlx::query("UPDATE teams SET name = name WHERE id = $1")
        .bind(team_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Appends to a team's log with the next sequence number (call with the team locked).
async fn insert_audit(conn: &mut AnyConnection, e: &AuditEntry<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, team_id, actor_type, actor_id, action, resource_type, \
         resource_id, outcome, detail, created_at, seq) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, COALESCE(MAX(seq), 0) + 1 \
         FROM audit_log WHERE team_id = $11",
    )
    .bind(Id::new(IdKind::Audit).to_string())
    .bind(&e.caller.team_id)
    .bind(e.caller.actor_type)
    .bind(&e.caller.actor_id)
    .bind(e.action)
    .bind(e.resource.0)
    .bind(e.resource.1)
    .bind(e.outcome)
    .bind(e.detail)
    .bind(now_ms())
    .bind(&e.caller.team_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A new user; `conflict` when the email already has an account.
async fn insert_user(
    conn: &mut AnyConnection,
    email: &str,
    name: &str,
    password_hash: &str,
) -> Result<User> {
    let user = User {
        id: Id::new(IdKind::User).to_string(),
        email: email.into(),
        name: name.into(),
        created_at: now_ms(),
    };
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(password_hash)
    .bind(user.created_at)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(user),
        Err(e) if is_unique_violation(&e) => Err(ApiError::Conflict(
            "an account with this email already exists".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn insert_team(conn: &mut AnyConnection, name: &str) -> Result<Team> {
    let team = Team {
        id: Id::new(IdKind::Team).to_string(),
        name: name.into(),
        created_at: now_ms(),
    };
    sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&team.id)
        .bind(&team.name)
        .bind(team.created_at)
        .execute(conn)
        .await?;
    Ok(team)
}

async fn insert_membership(
    conn: &mut AnyConnection,
    team_id: &str,
    user_id: &str,
    role: Role,
) -> Result<i64> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO memberships (team_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(team_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(now)
}

/// Makes an API key; returns its row and the plaintext (`wrn_` + 32 hex), which is never
/// stored: only its SHA-256 and its first 8 characters (to tell keys apart).
async fn insert_api_key(
    conn: &mut AnyConnection,
    team_id: &str,
    name: &str,
    created_by: Option<&str>,
    owner_id: Option<&str>,
) -> Result<(ApiKeyRow, String)> {
    let plaintext = format!("wrn_{}", wrenn_types::secret::hex(16)?);
    let row = ApiKeyRow {
        id: Id::new(IdKind::ApiKey).to_string(),
        team_id: team_id.into(),
        name: name.into(),
        prefix: plaintext[..8].into(),
        created_by: created_by.map(str::to_string),
        owner_id: owner_id.map(str::to_string),
        created_at: now_ms(),
        last_used_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, team_id, created_by, name, prefix, key_hash, created_at, \
         owner_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&row.id)
    .bind(&row.team_id)
    .bind(&row.created_by)
    .bind(&row.name)
    .bind(&row.prefix)
    .bind(hash_key(&plaintext))
    .bind(row.created_at)
    .bind(&row.owner_id)
    .execute(conn)
    .await?;
    Ok((row, plaintext))
}

/// A member's current role, read under the team lock.
async fn role_in(conn: &mut AnyConnection, team_id: &str, user_id: &str) -> Result<Option<Role>> {
    sqlx::query("SELECT role FROM memberships WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(role_of)
        .transpose()
}

impl Db {
    /// Signs a user up: the user, a personal team they own, and the audit row, all or nothing.
    /// A taken email is `conflict`.
    pub async fn create_user_with_team(
        &self,
        email: &str,
        name: &str,
        password_hash: &str,
        team_name: &str,
    ) -> Result<(User, Team)> {
        let mut tx = self.pool.begin().await?;
        let user = insert_user(&mut tx, email, name, password_hash).await?;
        let team = insert_team(&mut tx, team_name).await?;
        insert_membership(&mut tx, &team.id, &user.id, Role::Owner).await?;
        let caller = Caller::user(&team.id, &user);
        insert_audit(
            &mut tx,
            &AuditEntry {
                caller: &caller,
                action: "user.signup",
                resource: ("user", &user.id),
                outcome: "success",
                detail: "",
            },
        )
        .await?;
        tx.commit().await?;
        Ok((user, team))
    }

    /// A user and their password hash, by (lower-case) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>> {
        let r = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| Ok((user_of(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        let r = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(user_of).transpose()
    }

    /// The teams a user belongs to, in the order they joined (the personal team first).
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<Membership>> {
        let rows = sqlx::query(
            "SELECT t.id, t.name, t.created_at, m.role, m.created_at AS joined_at \
             FROM memberships m JOIN teams t ON t.id = m.team_id \
             WHERE m.user_id = $1 ORDER BY m.created_at, CASE WHEN m.role = 'owner' THEN 0 ELSE 1 END, t.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Membership {
                    team: Team {
                        id: r.try_get("id")?,
                        name: r.try_get("name")?,
                        created_at: r.try_get("created_at")?,
                    },
                    role: role_of(r)?,
                    joined_at: r.try_get("joined_at")?,
                })
            })
            .collect()
    }

    /// A user's role in a team, `None` when not a member (or no such team).
    pub async fn role(&self, team_id: &str, user_id: &str) -> Result<Option<Role>> {
        let mut conn = self.pool.acquire().await?;
        role_in(&mut conn, team_id, user_id).await
    }

    /// A new team owned by `user` (audited in the new team's log).
    pub async fn create_owned_team(&self, user: &User, name: &str) -> Result<Membership> {
        let mut tx = self.pool.begin().await?;
        let team = insert_team(&mut tx, name).await?;
        let joined_at = insert_membership(&mut tx, &team.id, &user.id, Role::Owner).await?;
        let caller = Caller::user(&team.id, user);
        insert_audit(
            &mut tx,
            &AuditEntry {
                caller: &caller,
                action: "team.create",
                resource: ("team", &team.id),
                outcome: "success",
                detail: name,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Membership {
            team,
            role: Role::Owner,
            joined_at,
        })
    }

    /// A team's members, in the order they joined.
    pub async fn members(&self, team_id: &str) -> Result<Vec<Member>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, m.role, m.created_at AS joined_at \
             FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.team_id = $1 ORDER BY m.created_at, u.email"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user: user_of(r)?,
                    role: role_of(r)?,
                    joined_at: r.try_get("joined_at")?,
                })
            })
            .collect()
    }

    /// One member of a team, `None` when the user is not in it.
    pub async fn member(&self, team_id: &str, user_id: &str) -> Result<Option<Member>> {
        let r = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, m.role, m.created_at AS joined_at \
             FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.team_id = $1 AND m.user_id = $2"
        ))
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(Member {
                user: user_of(&r)?,
                role: role_of(&r)?,
                joined_at: r.try_get("joined_at")?,
            })
        })
        .transpose()
    }

    /// Adds `user_id` to `by`'s team as `role`; `conflict` when already a member.
    pub async fn add_member(&self, by: &Caller, user_id: &str, role: Role) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if !lock_team(&mut tx, &by.team_id).await? {
            return Err(ApiError::NotFound(format!("team {} not found", by.team_id)));
        }
        if role_in(&mut tx, &by.team_id, user_id).await?.is_some() {
            return Err(ApiError::Conflict(
                "this user is already a member of the team".into(),
            ));
        }
        insert_membership(&mut tx, &by.team_id, user_id, role).await?;
        insert_audit(
            &mut tx,
            &AuditEntry {
                caller: by,
                action: "team.member.add",
                resource: ("user", user_id),
                outcome: "success",
                detail: &format!("role={}", role.as_str()),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes a member's role from `from` (what the caller's permission check saw) to `to`.
    /// `not_found` when not a member; `conflict` when the role changed meanwhile or when this
    /// would leave the team without an owner.
    pub async fn set_member_role(
        &self,
        by: &Caller,
        user_id: &str,
        from: Role,
        to: Role,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        match role_in(&mut tx, &by.team_id, user_id).await? {
            None => return Err(member_not_found(user_id)),
            Some(now) if now != from => return Err(role_changed()),
            Some(_) => {}
        }
        if from == Role::Owner && to != Role::Owner && owners(&mut tx, &by.team_id).await? <= 1 {
            return Err(ApiError::Conflict(
                "the team's last owner cannot step down; make another member owner first".into(),
            ));
        }
        sqlx::query("UPDATE memberships SET role = $1 WHERE team_id = $2 AND user_id = $3")
            .bind(to.as_str())
            .bind(&by.team_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        insert_audit(
            &mut tx,
            &AuditEntry {
                caller: by,
                action: "team.member.role",
                resource: ("user", user_id),
                outcome: "success",
                detail: &format!("role={}->{}", from.as_str(), to.as_str()),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a member whose role is `from` (what the permission check saw). Owners are never
    /// removed (demote first), so a team always keeps an owner.
    pub async fn remove_member(&self, by: &Caller, user_id: &str, from: Role) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        match role_in(&mut tx, &by.team_id, user_id).await? {
            None => return Err(member_not_found(user_id)),
            Some(Role::Owner) => {
                return Err(ApiError::Conflict(
                    "an owner cannot be removed; change their role first".into(),
                ))
            }
            Some(now) if now != from => return Err(role_changed()),
            Some(_) => {}
        }
        sqlx::query("DELETE FROM memberships WHERE team_id = $1 AND user_id = $2")
            .bind(&by.team_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        insert_audit(
            &mut tx,
            &AuditEntry {
                caller: by,
                action: "team.member.remove",
                resource: ("user", user_id),
                outcome: "success",
                detail: &format!("role={}", from.as_str()),
            },
        )
        .await?;
        // Their API keys in this team die with their membership.
        let keys = sqlx::query("SELECT id FROM api_keys WHERE team_id = $1 AND owner_id = $2")
            .bind(&by.team_id)
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        for k in &keys {
            let id: String = k.try_get("id")?;
            sqlx::query("DELETE FROM api_keys WHERE team_id = $1 AND id = $2")
                .bind(&by.team_id)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            insert_audit(
                &mut tx,
                &AuditEntry {
                    caller: by,
                    action: "api_key.delete",
                    resource: ("api_key", &id),
                    outcome: "success",
                    detail: &format!("its owner {user_id} left the team"),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A team's API keys (never their hashes), newest first.
    pub async fn api_keys(&self, team_id: &str) -> Result<Vec<ApiKeyRow>> {
        let rows = sqlx::query(
            "SELECT id, team_id, name, prefix, created_by, owner_id, created_at, last_used_at \
             FROM api_keys WHERE team_id = $1 ORDER BY created_at DESC, id",
        )
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyRow {
                    id: r.try_get("id")?,
                    team_id: r.try_get("team_id")?,
                    name: r.try_get("name")?,
                    prefix: r.try_get("prefix")?,
                    created_by: r.try_get("created_by")?,
                    owner_id: r.try_get("owner_id")?,
                    created_at: r.try_get("created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    /// Makes an API key of `by`'s team (audited); returns the row and the plaintext.
    pub async fn create_api_key_as(&self, by: &Caller, name: &str) -> Result<(ApiKeyRow, String)> {
        let mut tx = self.pool.begin().await?;
        if !lock_team(&mut tx, &by.team_id).await? {
            return Err(ApiError::NotFound(format!("team {} not found", by.team_id)));
        }
        // A user's key is theirs; a key made by a key belongs to that key's owner.
        let owner = match by.actor_type {
            "user" => Some(by.actor_id.clone()),
            "api_key" => sqlx::query("SELECT owner_id FROM api_keys WHERE id = $1")
                .bind(&by.actor_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<Option<String>, _>("owner_id"))
                .transpose()?
                .flatten(),
            _ => None,
        };
        let made = insert_api_key(
            &mut tx,
            &by.team_id,
            name,
            Some(&by.actor_id),
            owner.as_deref(),
        )
        .await?;
        insert_audit(
            &mut tx,
            &AuditEntry {
                caller: by,
                action: "api_key.create",
                resource: ("api_key", &made.0.id),
                outcome: "success",
                detail: name,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(made)
    }

    /// Deletes an API key of `by`'s team (audited); `not_found` for any other key.
    pub async fn delete_api_key(&self, by: &Caller, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        let found = sqlx::query("SELECT created_by FROM api_keys WHERE team_id = $1 AND id = $2")
            .bind(&by.team_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(r) = found {
            if r.try_get::<Option<String>, _>("created_by")?.is_none() {
                return Err(ApiError::Conflict(format!(
                    "API key {id} is the admin key the server made at its first start (in \
                     WRENN_DIR/admin-api-key): it cannot be deleted through the API. To replace \
                     it, delete that file and restart the server: it makes a new admin key and \
                     deletes this one"
                )));
            }
        }
        let done = sqlx::query("DELETE FROM api_keys WHERE team_id = $1 AND id = $2")
            .bind(&by.team_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::NotFound(format!("API key {id} not found")));
        }
        insert_audit(
            &mut tx,
            &AuditEntry {
                caller: by,
                action: "api_key.delete",
                resource: ("api_key", id),
                outcome: "success",
                detail: "",
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn owners(conn: &mut AnyConnection, team_id: &str) -> Result<i64> {
    let r = sqlx::query("SELECT COUNT(*) AS n FROM memberships WHERE team_id = $1 AND role = $2")
        .bind(team_id)
        .bind(Role::Owner.as_str())
        .fetch_one(conn)
        .await?;
    Ok(r.try_get("n")?)
}

fn member_not_found(user_id: &str) -> ApiError {
    ApiError::NotFound(format!("user {user_id} is not a member of this team"))
}

fn role_changed() -> ApiError {
    ApiError::Conflict("the member's role changed meanwhile; try again".into())
}

impl Caller {
    /// A signed-in user acting in `team_id`.
    pub fn user(team_id: &str, user: &User) -> Caller {
        Caller {
            team_id: team_id.into(),
            actor_type: "user",
            actor_id: user.id.clone(),
            actor_name: user.name.clone(),
        }
    }

    /// The user's id when the caller is a signed-in user (not an API key).
    pub fn user_id(&self) -> Option<&str> {
        (self.actor_type == "user").then_some(self.actor_id.as_str())
    }
}
