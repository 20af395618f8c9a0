//! The teams' audit log.

use super::tx::{insert_audit, lock_team, AuditEntry};
use super::*;
use crate::error::{ApiError, Result};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
    /// Its place in the team's log (1, 2, …): the paging cursor.
    pub seq: i64,
}

/// Which entries of a team's log to read: older than `before` (a `seq`), of an action
/// (exactly, or all under a dotted prefix: `capsule` takes `capsule.create`), of a resource
/// type and id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub before: Option<i64>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
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
        self.audit_page(team_id, &AuditFilter::default(), limit)
            .await
    }

    /// A page of a team's audit log, newest first, as `filter` says.
    pub async fn audit_page(
        &self,
        team_id: &str,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        let mut sql = String::from(
            "SELECT id, actor_type, actor_id, action, resource_type, resource_id, outcome, detail, \
             created_at, seq FROM audit_log WHERE team_id = $1",
        );
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if filter.before.is_some() {
            sql += &format!(" AND seq < ${}", next());
        }
        if filter.action.is_some() {
            let (a, b) = (next(), next());
            sql += &format!(" AND (action = ${a} OR action LIKE ${b} ESCAPE '\\')");
        }
        if filter.resource_type.is_some() {
            sql += &format!(" AND resource_type = ${}", next());
        }
        if filter.resource_id.is_some() {
            sql += &format!(" AND resource_id = ${}", next());
        }
        sql += &format!(" ORDER BY seq DESC LIMIT ${}", next());
        let mut q = sqlx::query(&sql).bind(team_id);
        if let Some(b) = filter.before {
            q = q.bind(b);
        }
        if let Some(a) = &filter.action {
            let escaped = a
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q = q.bind(a.clone()).bind(format!("{escaped}.%"));
        }
        if let Some(t) = &filter.resource_type {
            q = q.bind(t.clone());
        }
        if let Some(r) = &filter.resource_id {
            q = q.bind(r.clone());
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(sqlx::FromRow::from_row(r)?))
            .collect()
    }
}
