//! The E2B lifetimes of capsules made through the E2B-compatible API (`e2b_sandboxes`).

use sqlx::Row;

use super::*;
use crate::error::Result;
use wrenn_types::CapsuleStatus;

/// A sandbox's E2B lifetime: it ends at `end_at` (Unix ms), destroyed or (`auto_pause`) paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E2bLifetime {
    pub end_at: i64,
    pub auto_pause: bool,
}

impl Db {
    /// Sets capsule `id`'s lifetime (made or replaced).
    pub async fn set_e2b_lifetime(&self, id: &str, life: E2bLifetime) -> Result<()> {
        sqlx::query(
            "INSERT INTO e2b_sandboxes (capsule_id, end_at, auto_pause) VALUES ($1, $2, $3) \
             ON CONFLICT (capsule_id) DO UPDATE SET end_at = $2, auto_pause = $3",
        )
        .bind(id)
        .bind(life.end_at)
        .bind(i64::from(life.auto_pause))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Capsule `id`'s lifetime, if it was made through the E2B API.
    pub async fn e2b_lifetime(&self, id: &str) -> Result<Option<E2bLifetime>> {
        let r = sqlx::query("SELECT end_at, auto_pause FROM e2b_sandboxes WHERE capsule_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| lifetime_of(&r)).transpose()
    }

    /// The lifetimes of a team's capsules that have one, by capsule id.
    pub async fn e2b_lifetimes(&self, team_id: &str) -> Result<HashMap<String, E2bLifetime>> {
        let rows = sqlx::query(
            "SELECT e.capsule_id, e.end_at, e.auto_pause FROM e2b_sandboxes e \
             JOIN capsules c ON c.id = e.capsule_id WHERE c.team_id = $1 AND c.status <> $2",
        )
        .bind(team_id)
        .bind(CapsuleStatus::Stopped.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("capsule_id")?, lifetime_of(r)?)))
            .collect()
    }

    /// Running capsules whose lifetime ended by `now` (Unix ms): (team, id, auto-pause).
    pub async fn e2b_expired(&self, now: i64) -> Result<Vec<(String, String, bool)>> {
        let rows = sqlx::query(
            "SELECT c.team_id, e.capsule_id, e.auto_pause FROM e2b_sandboxes e \
             JOIN capsules c ON c.id = e.capsule_id WHERE e.end_at <= $1 AND c.status = $2",
        )
        .bind(now)
        .bind(CapsuleStatus::Running.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let pause: i64 = r.try_get("auto_pause")?;
                Ok((r.try_get("team_id")?, r.try_get("capsule_id")?, pause != 0))
            })
            .collect()
    }

    /// Forgets the lifetimes of capsules that are stopped.
    pub async fn e2b_forget_stopped(&self) -> Result<()> {
        sqlx::query(
            "DELETE FROM e2b_sandboxes WHERE capsule_id IN \
             (SELECT id FROM capsules WHERE status = $1)",
        )
        .bind(CapsuleStatus::Stopped.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn lifetime_of(r: &sqlx::any::AnyRow) -> Result<E2bLifetime> {
    let pause: i64 = r.try_get("auto_pause")?;
    Ok(E2bLifetime {
        end_at: r.try_get("end_at")?,
        auto_pause: pause != 0,
    })
}
