//! API keys (only their SHA-256 is stored) and who they authenticate.

use sqlx::{AnyConnection, Row};
use wrenn_types::{Id, IdKind};

use super::tx::{audit_success, lock_team};
use super::*;
use crate::error::{ApiError, Result};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

/// Makes an API key; returns its row and the plaintext (`wrn_` + 32 hex), which is never
/// stored: only its SHA-256 and its first 8 characters (to tell keys apart).
pub(super) async fn insert_api_key(
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

impl Db {
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
            actor_type: wrenn_types::Actor::ApiKey,
            actor_id: id,
            actor_name: r.try_get("name")?,
        }))
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
            .map(|r| Ok(sqlx::FromRow::from_row(r)?))
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
            wrenn_types::Actor::User => Some(by.actor_id.clone()),
            wrenn_types::Actor::ApiKey => {
                sqlx::query("SELECT owner_id FROM api_keys WHERE id = $1")
                    .bind(&by.actor_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get::<Option<String>, _>("owner_id"))
                    .transpose()?
                    .flatten()
            }
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
        audit_success(&mut tx, by, "api_key.create", ("api_key", &made.0.id), name).await?;
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
        audit_success(&mut tx, by, "api_key.delete", ("api_key", id), "").await?;
        tx.commit().await?;
        Ok(())
    }
}
