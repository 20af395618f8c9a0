//! User accounts.

use sqlx::{AnyConnection, Row};
use wrenn_types::{Id, IdKind};

use super::*;
use crate::error::{ApiError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// Lower-case.
    pub email: String,
    pub name: String,
    pub created_at: i64,
}

pub(super) fn user_of(r: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        name: r.try_get("user_name")?,
        created_at: r.try_get("user_created_at")?,
    })
}

pub(super) const USER_COLUMNS: &str =
    "u.id AS user_id, u.email, u.name AS user_name, u.created_at AS user_created_at";

/// A new user; `conflict` when the email already has an account.
pub(super) async fn insert_user(
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

impl Db {
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
}
