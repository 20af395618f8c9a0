//! Storage: SQLite (a file in `WRENN_DIR`, the default) or PostgreSQL (`postgres://…`), through
//! sqlx's `Any` driver with portable SQL (text ids, BIGINT Unix milliseconds) and one set of
//! migrations. Every query of a team's resources is scoped by `team_id`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sha2::{Digest, Sha256};
use sqlx::{any::AnyPoolOptions, AnyPool, Row};

use crate::error::{ApiError, Result};

mod admin;
mod audit;
mod builds;
mod capsules;
mod e2b;
mod host_identity;
mod hosts;
mod keys;
mod lease;
mod notify;
mod placement;
mod security;
mod teams;
mod templates;
mod tx;
mod usage;
mod users;

pub use admin::{AdminTeamRow, AdminTemplateRow, AdminUserRow, ADMIN_LIST_LIMIT};
pub use audit::{AuditFilter, AuditRow};
pub use builds::{BuildProgress, BuildRow, BUILD_STALE_MS};
pub use capsules::CapsuleRow;
pub use e2b::E2bLifetime;
pub use host_identity::IssuedIdentity;
pub use hosts::{HostRow, HostTokenKind};
pub use keys::ApiKeyRow;
pub use lease::Lease;
pub use notify::{Heard, Listener};
pub use placement::{HostRecord, RESERVATION_TTL_MS};
pub use security::{Invitation, BOOTSTRAP_ACTOR};
pub use teams::{Member, Membership, Role, Team};
pub use templates::TemplateRow;
pub(crate) use tx::lock_team;
pub use usage::USAGE_SAMPLE_SECS;
pub use users::User;

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

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub team_id: String,
    pub actor_type: wrenn_types::Actor,
    pub actor_id: String,
    pub actor_name: String,
}

/// Has SQLite give the pages of deleted rows (build archives: megabytes each) back to the
/// file system when asked (`PRAGMA incremental_vacuum`, [`Db::drop_build_archive`]). A
/// database made without it is converted once: `VACUUM` rewrites the file.
async fn sqlite_auto_vacuum(pool: &AnyPool) -> Result<()> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(pool)
        .await?;
    if mode != INCREMENTAL {
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(pool)
            .await?;
        sqlx::query("VACUUM").execute(pool).await?;
    }
    Ok(())
}

/// The database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// Secrets never change once made, so each is read from the database once.
    secrets: Arc<Mutex<HashMap<String, String>>>,
    /// PostgreSQL: what replicas share besides tables (notifications). None on SQLite.
    cluster: Option<Arc<notify::Cluster>>,
    /// This process's name among the replicas (random, per open): who holds a [`Lease`].
    instance: Arc<str>,
}

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
        if sqlite {
            sqlite_auto_vacuum(&pool).await?;
        }
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| ApiError::Internal(format!("migrating the database: {e}")))?;
        let cluster = if sqlite {
            None
        } else {
            Some(notify::Cluster::new(url)?)
        };
        let db = Db {
            pool,
            secrets: Arc::default(),
            cluster,
            instance: wrenn_types::secret::hex(8)?.into(),
        };
        // The user-token signing key exists from the first start on.
        db.secret(JWT_SECRET).await?;
        Ok(db)
    }

    /// This control plane's name among replicas (random, made at open; in log lines and
    /// [`Lease`] holders).
    pub fn instance(&self) -> &str {
        &self.instance
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
}

/// The name of the user-token signing key in `settings`.
pub const JWT_SECRET: &str = "jwt";

/// Whether `e` is a unique-constraint violation (SQLite or PostgreSQL).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl Caller {
    /// A signed-in user acting in `team_id`.
    pub fn user(team_id: &str, user: &User) -> Caller {
        Caller {
            team_id: team_id.into(),
            actor_type: wrenn_types::Actor::User,
            actor_id: user.id.clone(),
            actor_name: user.name.clone(),
        }
    }

    /// The user's id when the caller is a signed-in user (not an API key).
    pub fn user_id(&self) -> Option<&str> {
        (self.actor_type == wrenn_types::Actor::User).then_some(self.actor_id.as_str())
    }
}

/// A `metadata` column: a JSON object as text, read into a map (malformed text reads as empty).
/// Row structs take it with `#[sqlx(try_from = "MetadataText")]`.
pub(crate) struct MetadataText(String);

impl sqlx::Type<sqlx::Any> for MetadataText {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for MetadataText {
    fn decode(
        value: sqlx::any::AnyValueRef<'r>,
    ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        Ok(MetadataText(<String as sqlx::Decode<sqlx::Any>>::decode(
            value,
        )?))
    }
}

impl From<MetadataText> for HashMap<String, String> {
    fn from(text: MetadataText) -> HashMap<String, String> {
        serde_json::from_str(&text.0).unwrap_or_default()
    }
}
