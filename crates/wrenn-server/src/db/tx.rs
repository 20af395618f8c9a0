//! What every audited change of a team does inside its transaction: lock the team, append to
//! its log.

use sqlx::AnyConnection;

use wrenn_types::{Id, IdKind};

use super::{now_ms, Caller};
use crate::error::Result;

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

/// One audit row to write.
pub(super) struct AuditEntry<'a> {
    pub(super) caller: &'a Caller,
    pub(super) action: &'a str,
    pub(super) resource: (&'a str, &'a str),
    pub(super) outcome: &'a str,
    pub(super) detail: &'a str,
}

/// Appends a successful action by `caller` on `resource` (`(type, id)`) to its team's log
/// (call with the team locked).
pub(super) async fn audit_success(
    conn: &mut AnyConnection,
    caller: &Caller,
    action: &str,
    resource: (&str, &str),
    detail: &str,
) -> Result<()> {
    let entry = AuditEntry {
        caller,
        action,
        resource,
        outcome: "success",
        detail,
    };
    insert_audit(conn, &entry).await
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
    .bind(e.caller.actor_type.as_str())
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
