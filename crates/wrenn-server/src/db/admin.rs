//! What platform admins read across every team.

use super::*;
use crate::error::Result;
use wrenn_types::CapsuleStatus;

/// Most rows an admin list answers.
pub const ADMIN_LIST_LIMIT: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AdminUserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub teams: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AdminTeamRow {
    pub id: String,
    pub name: String,
    pub members: i64,
    pub capsules: i64,
    pub templates: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AdminTemplateRow {
    pub team_id: String,
    pub team_name: String,
    pub name: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub size_bytes: i64,
    pub created_at: i64,
}

impl Db {
    /// Every user, newest first (at most [`ADMIN_LIST_LIMIT`]).
    pub async fn admin_users(&self) -> Result<Vec<AdminUserRow>> {
        let rows = sqlx::query(
            "SELECT u.id, u.email, u.name, \
             (SELECT COUNT(*) FROM memberships m WHERE m.user_id = u.id) AS teams, u.created_at \
             FROM users u ORDER BY u.created_at DESC, u.id LIMIT $1",
        )
        .bind(ADMIN_LIST_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(sqlx::FromRow::from_row(r)?))
            .collect()
    }

    /// Every team with its counts, newest first (at most [`ADMIN_LIST_LIMIT`]).
    pub async fn admin_teams(&self) -> Result<Vec<AdminTeamRow>> {
        let rows = sqlx::query(
            "SELECT t.id, t.name, \
             (SELECT COUNT(*) FROM memberships m WHERE m.team_id = t.id) AS members, \
             (SELECT COUNT(*) FROM capsules c WHERE c.team_id = t.id AND c.status <> $1) AS capsules, \
             (SELECT COUNT(*) FROM templates p WHERE p.team_id = t.id) AS templates, \
             t.created_at FROM teams t ORDER BY t.created_at DESC, t.id LIMIT $2",
        )
        .bind(CapsuleStatus::Stopped.as_str())
        .bind(ADMIN_LIST_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(sqlx::FromRow::from_row(r)?))
            .collect()
    }

    /// Every team's snapshot templates, newest first (at most [`ADMIN_LIST_LIMIT`]).
    pub async fn admin_templates(&self) -> Result<Vec<AdminTemplateRow>> {
        let rows = sqlx::query(
            "SELECT p.team_id, t.name AS team_name, p.name, p.vcpus, p.memory_mb, p.size_bytes, \
             p.created_at FROM templates p JOIN teams t ON t.id = p.team_id \
             ORDER BY p.created_at DESC, p.id LIMIT $1",
        )
        .bind(ADMIN_LIST_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(sqlx::FromRow::from_row(r)?))
            .collect()
    }
}
