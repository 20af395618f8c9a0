//! Storage of account security: user sessions (a user token is valid while its session row
//! exists), invitations to sign up into a team, and the bootstrap admin key's replacement.

use sqlx::{FromRow, Row};

use super::{
    hash_key,
    keys::insert_api_key,
    now_ms,
    teams::insert_membership,
    tx::{audit_success, lock_team},
    users::insert_user,
    ApiKeyRow, Caller, Db, Role, Team, User,
};
use crate::error::{ApiError, Result};

/// Who the audit log names for what the server does by itself at start.
pub const BOOTSTRAP_ACTOR: &str = "bootstrap";

/// An invitation to sign up into a team (never its token: only the token's SHA-256 is kept).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Invitation {
    pub id: String,
    pub team_id: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_by: Option<String>,
    pub used_at: Option<i64>,
}

fn invitation_of(r: &sqlx::any::AnyRow) -> Result<Invitation> {
    Ok(sqlx::FromRow::from_row(r)?)
}

const INVITATION_COLUMNS: &str =
    "id, team_id, role, created_by, created_at, expires_at, used_by, used_at";

fn system() -> Caller {
    Caller {
        team_id: String::new(),
        actor_type: wrenn_types::Actor::System,
        actor_id: BOOTSTRAP_ACTOR.into(),
        actor_name: BOOTSTRAP_ACTOR.into(),
    }
}

impl Db {
    // -----------------------------------------------------------------------------------------
    // Sessions.

    /// A new session of `user_id` until `expires_at` (Unix ms); its id goes into the token.
    /// The user's expired sessions are dropped on the way.
    pub async fn create_session(&self, user_id: &str, expires_at: i64) -> Result<String> {
        let id = format!("ses-{}", wrenn_types::secret::hex(16)?);
        let now = now_ms();
        sqlx::query("DELETE FROM user_sessions WHERE user_id = $1 AND expires_at <= $2")
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO user_sessions (id, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Whether session `id` of `user_id` is live (not logged out, not expired).
    pub async fn session_is_live(&self, id: &str, user_id: &str) -> Result<bool> {
        let r = sqlx::query(
            "SELECT 1 AS one FROM user_sessions WHERE id = $1 AND user_id = $2 AND expires_at > $3",
        )
        .bind(id)
        .bind(user_id)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.is_some())
    }

    /// Ends one session (log out); whether it was live.
    pub async fn end_session(&self, id: &str, user_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM user_sessions WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends every session of a user (log out everywhere); how many there were.
    pub async fn end_all_sessions(&self, user_id: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM user_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    // -----------------------------------------------------------------------------------------
    // Invitations.

    /// A new invitation into `by`'s team as `role`, valid until `expires_at` (Unix ms), audited.
    /// Returns it and its token (`wri_` + 32 hex), which is never stored.
    pub async fn create_invitation(
        &self,
        by: &Caller,
        role: Role,
        expires_at: i64,
    ) -> Result<(Invitation, String)> {
        let token = format!("wri_{}", wrenn_types::secret::hex(16)?);
        let inv = Invitation {
            id: format!("inv-{}", wrenn_types::secret::hex(12)?),
            team_id: by.team_id.clone(),
            role,
            created_by: by.actor_id.clone(),
            created_at: now_ms(),
            expires_at,
            used_by: None,
            used_at: None,
        };
        let mut tx = self.pool.begin().await?;
        if !lock_team(&mut tx, &by.team_id).await? {
            return Err(ApiError::NotFound(format!("team {} not found", by.team_id)));
        }
        sqlx::query(
            "INSERT INTO invitations (id, team_id, token_hash, role, created_by, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&inv.id)
        .bind(&inv.team_id)
        .bind(hash_key(&token))
        .bind(role.as_str())
        .bind(&inv.created_by)
        .bind(inv.created_at)
        .bind(inv.expires_at)
        .execute(&mut *tx)
        .await?;
        audit_success(
            &mut tx,
            by,
            "team.invitation.create",
            ("invitation", &inv.id),
            &format!("role={}", role.as_str()),
        )
        .await?;
        tx.commit().await?;
        Ok((inv, token))
    }

    /// A team's invitations, newest first.
    pub async fn invitations(&self, team_id: &str) -> Result<Vec<Invitation>> {
        let rows = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE team_id = $1 \
             ORDER BY created_at DESC, id"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invitation_of).collect()
    }

    /// Withdraws an invitation of `by`'s team (audited); `not_found` for any other.
    pub async fn delete_invitation(&self, by: &Caller, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock_team(&mut tx, &by.team_id).await?;
        let done = sqlx::query("DELETE FROM invitations WHERE team_id = $1 AND id = $2")
            .bind(&by.team_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::NotFound(format!("invitation {id} not found")));
        }
        audit_success(
            &mut tx,
            by,
            "team.invitation.delete",
            ("invitation", id),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live (unused, unexpired) invitation with this token, if any.
    pub async fn live_invitation(&self, token: &str) -> Result<Option<Invitation>> {
        let r = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1 \
             AND used_at IS NULL AND expires_at > $2"
        ))
        .bind(hash_key(token))
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(invitation_of).transpose()
    }

    /// Signs a user up through an invitation: the user, their membership of the invitation's
    /// team with its role, the invitation marked used, and the audit row, all or nothing.
    /// `conflict` when the email is taken (the invitation stays unused); `not_found` when the
    /// invitation is no longer live (used meanwhile or expired).
    pub async fn create_user_with_invitation(
        &self,
        email: &str,
        name: &str,
        password_hash: &str,
        token: &str,
    ) -> Result<(User, Team, Role)> {
        let mut tx = self.pool.begin().await?;
        let user = insert_user(&mut tx, email, name, password_hash).await?;
        let now = now_ms();
        let gone = || ApiError::NotFound("the invitation is not valid (used or expired)".into());
        let inv = sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1 \
             AND used_at IS NULL AND expires_at > $2"
        ))
        .bind(hash_key(token))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(invitation_of)
        .transpose()?
        .ok_or_else(gone)?;
        if !lock_team(&mut tx, &inv.team_id).await? {
            return Err(gone());
        }
        // Single use: only one sign-up marks it.
        let marked = sqlx::query(
            "UPDATE invitations SET used_by = $1, used_at = $2 WHERE id = $3 AND used_at IS NULL",
        )
        .bind(&user.id)
        .bind(now)
        .bind(&inv.id)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            return Err(gone());
        }
        insert_membership(&mut tx, &inv.team_id, &user.id, inv.role).await?;
        let caller = Caller::user(&inv.team_id, &user);
        audit_success(
            &mut tx,
            &caller,
            "user.signup",
            ("user", &user.id),
            &format!("invitation={} role={}", inv.id, inv.role.as_str()),
        )
        .await?;
        let r = sqlx::query("SELECT id, name, created_at FROM teams WHERE id = $1")
            .bind(&inv.team_id)
            .fetch_one(&mut *tx)
            .await?;
        let team = Team::from_row(&r)?;
        tx.commit().await?;
        Ok((user, team, inv.role))
    }

    // -----------------------------------------------------------------------------------------
    // The bootstrap admin key.

    /// Whether `plaintext` is a live key of the team's own (no creator: the admin key).
    pub async fn is_bootstrap_key(&self, plaintext: &str) -> Result<bool> {
        let r =
            sqlx::query("SELECT 1 AS one FROM api_keys WHERE key_hash = $1 AND created_by IS NULL")
                .bind(hash_key(plaintext))
                .fetch_optional(&self.pool)
                .await?;
        Ok(r.is_some())
    }

    /// Makes a new admin key for `team_id` and deletes the previous ones (keys with no
    /// creator), audited as the server's own action, in one transaction.
    pub async fn replace_bootstrap_key(&self, team_id: &str) -> Result<(ApiKeyRow, String)> {
        let mut tx = self.pool.begin().await?;
        if !lock_team(&mut tx, team_id).await? {
            return Err(ApiError::NotFound(format!("team {team_id} not found")));
        }
        let by = Caller {
            team_id: team_id.into(),
            ..system()
        };
        let old = sqlx::query("SELECT id FROM api_keys WHERE team_id = $1 AND created_by IS NULL")
            .bind(team_id)
            .fetch_all(&mut *tx)
            .await?;
        for r in &old {
            let id: String = r.try_get("id")?;
            sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            audit_success(
                &mut tx,
                &by,
                "api_key.delete",
                ("api_key", &id),
                "replaced: the admin key file was missing or its key no longer worked",
            )
            .await?;
        }
        let made = insert_api_key(&mut tx, team_id, "admin", None, None).await?;
        audit_success(
            &mut tx,
            &by,
            "api_key.create",
            ("api_key", &made.0.id),
            "admin",
        )
        .await?;
        tx.commit().await?;
        Ok(made)
    }
}
