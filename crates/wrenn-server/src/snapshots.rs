//! `/v1/snapshots`: templates made from capsules (per team), and the platform's base templates.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use wrenn_proto::agent::v1::{
    DeleteTemplateRequest, ListTemplatesRequest, SnapshotCapsuleRequest, TemplateKind,
};
use wrenn_types::{Id, IdKind};

use crate::{
    capsules::{live, safe_name},
    db::{now_ms, Caller, TemplateRow},
    error::{ApiError, Result},
    events::{publish, Event},
    state::AppState,
    time::rfc3339,
};

/// Longest snapshot name (it is stored on hosts team-qualified).
const MAX_NAME: usize = 48;

/// The name of a team's template on the hosts: team-qualified, so teams never collide.
fn agent_name(team_id: &str, name: &str) -> String {
    let tail = &team_id[team_id.len().saturating_sub(12)..];
    format!("t{tail}.{name}")
}

/// An agent error about a team's template, in the team's words (hosts know it by another
/// name).
fn user_facing(s: tonic::Status, name: &str) -> ApiError {
    match s.code() {
        tonic::Code::FailedPrecondition => ApiError::InvalidState(format!(
            "template {name} is in use by capsules (or the capsule cannot be snapshotted now): \
             destroy them first"
        )),
        tonic::Code::AlreadyExists => ApiError::Conflict(format!("template {name} already exists")),
        _ => s.into(),
    }
}

fn template_json(t: &TemplateRow) -> Value {
    json!({
        "name": t.name,
        "type": "snapshot",
        "vcpus": t.vcpus,
        "memory_mb": t.memory_mb,
        "size_bytes": t.size_bytes,
        "created_at": rfc3339(t.created_at),
        "platform": false,
        "protected": false,
        "metadata": t.metadata,
    })
}

/// The platform's base templates (as the host reports them).
async fn base_templates(state: &AppState) -> Result<Vec<wrenn_proto::agent::v1::Template>> {
    Ok(state
        .agent()
        .list_templates(ListTemplatesRequest {})
        .await?
        .into_inner()
        .templates
        .into_iter()
        .filter(|t| t.kind == TemplateKind::Base as i32)
        .collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    sandbox_id: String,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    #[serde(default)]
    overwrite: bool,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    query: std::result::Result<Query<CreateQuery>, axum::extract::rejection::QueryRejection>,
    body: std::result::Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let Query(q) = query?;
    let Json(b) = body?;
    let name = b
        .name
        .unwrap_or_else(|| format!("template-{}", &Id::new(IdKind::Template).to_string()[4..12]));
    if !safe_name(&name, MAX_NAME) {
        return Err(ApiError::InvalidRequest(format!(
            "invalid name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9._-], at most {MAX_NAME} characters"
        )));
    }
    let capsule = live(&state, &caller, &b.sandbox_id).await?;
    if base_templates(&state).await?.iter().any(|t| t.name == name) {
        return Err(ApiError::Conflict(format!(
            "{name} is a platform template's name"
        )));
    }
    let existing = state.db.template(&caller.team_id, &name).await?;
    if existing.is_some() && !q.overwrite {
        return Err(ApiError::Conflict(format!(
            "template {name} already exists (use overwrite)"
        )));
    }
    let made = state
        .agent()
        .snapshot_capsule(SnapshotCapsuleRequest {
            capsule_id: capsule.id.clone(),
            name: agent_name(&caller.team_id, &name),
            overwrite: q.overwrite,
        })
        .await
        .map_err(|s| user_facing(s, &name))?
        .into_inner();
    // The source is paused now.
    state
        .db
        .set_capsule_status(&capsule.id, "paused", None, false)
        .await?;
    if existing.is_some() {
        state.db.delete_template(&caller.team_id, &name).await?;
    }
    let row = TemplateRow {
        id: Id::new(IdKind::Template).to_string(),
        team_id: caller.team_id.clone(),
        name: name.clone(),
        agent_name: agent_name(&caller.team_id, &name),
        vcpus: made.vcpus.into(),
        memory_mb: made.memory_mib.into(),
        size_bytes: made.size_bytes as i64,
        source_capsule: capsule.id.clone(),
        metadata: capsule.metadata.clone(),
        created_at: now_ms(),
    };
    state.db.insert_template(&row).await?;
    let _ = state
        .db
        .audit(
            &caller,
            "template.snapshot.create",
            ("template", &name),
            "success",
            &capsule.id,
        )
        .await;
    publish(
        &state,
        Event::template(&caller, "template.snapshot.create", &name),
    );
    Ok((StatusCode::CREATED, Json(template_json(&row))))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let Query(q) = query?;
    let (base, snapshot) = match q.kind.as_deref() {
        None => (true, true),
        Some("base") => (true, false),
        Some("snapshot") => (false, true),
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "type must be base or snapshot, not {other:?}"
            )))
        }
    };
    let mut out = Vec::new();
    if snapshot {
        out.extend(
            state
                .db
                .templates(&caller.team_id)
                .await?
                .iter()
                .map(template_json),
        );
    }
    if base {
        for t in base_templates(&state).await? {
            out.push(json!({
                "name": t.name,
                "type": "base",
                "vcpus": t.vcpus,
                "memory_mb": t.memory_mib,
                "size_bytes": t.size_bytes,
                "created_at": rfc3339(t.created_at_unix * 1000),
                "platform": true,
                "protected": true,
                "metadata": {},
            }));
        }
    }
    Ok(Json(Value::Array(out)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    let Some(t) = state.db.template(&caller.team_id, &name).await? else {
        if base_templates(&state).await?.iter().any(|t| t.name == name) {
            return Err(ApiError::Forbidden(format!(
                "{name} is a platform template; it cannot be deleted"
            )));
        }
        return Err(ApiError::NotFound(format!("template {name} not found")));
    };
    match state
        .agent()
        .delete_template(DeleteTemplateRequest {
            name: t.agent_name.clone(),
        })
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(user_facing(s, &name)),
    }
    state.db.delete_template(&caller.team_id, &name).await?;
    let _ = state
        .db
        .audit(
            &caller,
            "template.snapshot.delete",
            ("template", &name),
            "success",
            "",
        )
        .await;
    publish(
        &state,
        Event::template(&caller, "template.snapshot.delete", &name),
    );
    Ok(StatusCode::NO_CONTENT)
}
