//! `/v1/audit`: the team's audit log (every mutating action, numbered per team).

use axum::{extract::State, Json};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    db::{AuditFilter, AuditRow, Caller},
    error::{ApiError, Result},
    extract::QueryParams,
    responses::Checked,
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::events::{AuditActor, AuditEntry, AuditLog, AuditResource};

/// How many entries `/v1/audit` shows at most (and by default).
const AUDIT_LIMIT: i64 = 500;

/// Longest filter value taken.
const MAX_FILTER_CHARS: usize = 200;

/// Paging and filters of `/v1/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The `next_cursor` of the previous page: entries older than it.
    pub cursor: Option<String>,
    /// Entries per page, 1–500 (default 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// An action (`capsule.create`), or every action under a prefix (`capsule`).
    pub action: Option<String>,
    /// A resource type (`capsule`, `template`, `api_key`, …).
    pub resource_type: Option<String>,
    /// A resource's id (`cl-…`).
    pub resource_id: Option<String>,
}

fn bad(m: &str) -> ApiError {
    ApiError::InvalidRequest(m.into())
}

/// A filter value: trimmed, empty as none, not too long.
fn filter_value(v: &Option<String>, name: &str) -> Result<Option<String>> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > MAX_FILTER_CHARS || v.chars().any(char::is_control) => {
            Err(bad(&format!(
                "{name} must be at most {MAX_FILTER_CHARS} printable characters"
            )))
        }
        Some(v) => Ok(Some(v.to_string())),
    }
}

impl AuditQuery {
    fn filter(&self) -> Result<(AuditFilter, i64)> {
        let limit = self.limit.unwrap_or(AUDIT_LIMIT);
        if !(1..=AUDIT_LIMIT).contains(&limit) {
            return Err(bad("limit must be between 1 and 500"));
        }
        let before = match self.cursor.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("cursor is not a cursor from this log's next_cursor"))?,
            ),
        };
        Ok((
            AuditFilter {
                before,
                action: filter_value(&self.action, "action")?,
                resource_type: filter_value(&self.resource_type, "resource_type")?,
                resource_id: filter_value(&self.resource_id, "resource_id")?,
            },
            limit,
        ))
    }
}

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
/// The caller's team's audit log, newest first: pages of up to `limit` entries (500 at
/// most), the next one asked for with the answer's `next_cursor`; filtered by action (exact,
/// or a prefix such as `capsule`), resource type and resource id.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "audit_log",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "The log", body = AuditLog),
        Checked,
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Json<AuditLog>> {
    let (filter, limit) = q.filter()?;
    // One more than asked tells whether there is a next page.
    let mut rows = state
        .db
        .audit_page(&caller.team_id, &filter, limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(Json(AuditLog {
        entries: rows.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
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
            seq: 7,
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
                next_cursor: None,
            },
            json!({ "entries": [old], "next_cursor": null }),
        );
    }
}
