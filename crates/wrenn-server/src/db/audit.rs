//! The teams' audit log.

use sqlx::{AnyConnection, Row};
use wrenn_types::{Id, IdKind};

use super::teams::lock_team;
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

/// One audit row to write.
pub(super) struct AuditEntry<'a> {
    pub(super) caller: &'a Caller,
    pub(super) action: &'a str,
    pub(super) resource: (&'a str, &'a str),
    pub(super) outcome: &'a str,
    pub(super) detail: &'a str,
}

/// Appends to a team's log with the next sequence number (call with the team locked).
pub(super) async fn insert_audit(conn: &mut AnyConnection, e: &AuditEntry<'_>) -> Result<()> {
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
