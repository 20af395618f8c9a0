//! `/v1/audit`: the team's audit log (every mutating action, numbered per team).

use axum::{extract::State, Json};

use crate::{
    db::{AuditRow, Caller},
    error::Result,
    responses::Authed,
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::events::{AuditActor, AuditEntry, AuditLog, AuditResource};

/// How many entries `/v1/audit` shows.
const AUDIT_LIMIT: i64 = 500;

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> AuditEntry {
        AuditEntry {
            id: r.id,
            actor: AuditActor {
                kind: r.actor_type,
                id: r.actor_id,
            },
            action: r.action,
            resource: AuditResource {
                kind: r.resource_type,
                id: r.resource_id,
            },
            outcome: r.outcome,
            detail: r.detail,
            created_at: rfc3339(r.created_at),
        }
    }
}

/// The audit log
///
/// The caller's team's audit log, newest first (the last 500 entries).
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "audit_log",
    tag = "audit",
    responses(
        (status = 200, description = "The log", body = AuditLog),
        Authed,
    )
)]
pub async fn audit(State(state): State<AppState>, caller: Caller) -> Result<Json<AuditLog>> {
    let rows = state.db.audit_log(&caller.team_id, AUDIT_LIMIT).await?;
    Ok(Json(AuditLog {
        entries: rows.into_iter().map(AuditEntry::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::assert_same_json;

    #[test]
    fn entry_shape_is_unchanged() {
        let r = AuditRow {
            id: "log-1".into(),
            actor_type: "api_key".into(),
            actor_id: "key-1".into(),
            action: "capsule.create".into(),
            resource_type: "capsule".into(),
            resource_id: "cl-1".into(),
            outcome: "success".into(),
            detail: String::new(),
            created_at: 1_700_000_000_000,
        };
        // Before: the `json!` of `/v1/audit`.
        let old = json!({
            "id": r.id,
            "actor": { "type": r.actor_type, "id": r.actor_id },
            "action": r.action,
            "resource": { "type": r.resource_type, "id": r.resource_id },
            "outcome": r.outcome,
            "detail": r.detail,
            "created_at": rfc3339(r.created_at),
        });
        assert_same_json(
            &AuditLog {
                entries: vec![AuditEntry::from(r)],
            },
            json!({ "entries": [old] }),
        );
    }
}
