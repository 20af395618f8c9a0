//! The teams' audit log.

use sqlx::Row;

use super::tx::{insert_audit, lock_team, AuditEntry};
use super::*;
use crate::error::{ApiError, Result};

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

impl Db {
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
}
