//! `/v1/snapshots`: templates made from capsules (per team), and the platform's base templates.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::IntoParams;
use wrenn_proto::agent::v1::{
    DeleteTemplateRequest, FreshBoot, ListTemplatesRequest, SnapshotCapsuleRequest, TemplateKind,
};
use wrenn_types::{Id, IdKind};

use crate::extract::{JsonBody, QueryParams};
use crate::{
    capsules::lookup::live,
    db::{now_ms, Caller, TemplateRow},
    error::{ApiError, ErrorBody, Result},
    events::publish,
    responses::{CheckedOnHost, NoCapsule, OnHost},
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::templates::{CreateSnapshotBody, Template, TemplateType};
use wrenn_types::CapsuleStatus;

/// Longest snapshot name (it is stored on hosts team-qualified).
const MAX_NAME: usize = wrenn_types::TemplateName::MAX_SNAPSHOT_LEN;

// A team's template is known on the hosts by its row's random id (`tpl-…`), never by a name a
// caller could derive (rows made before kept `t<team tail>.<name>`; the column says which).
// Callers only ever name templates by their team's names: the host-side id never leaves the
// control plane, and capsule creates ask the host for the kind they resolved (see
// `capsules::create`).

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

impl From<&TemplateRow> for Template {
    fn from(t: &TemplateRow) -> Template {
        Template {
            name: t.name.clone(),
            kind: if t.kind == "base" {
                TemplateType::Base
            } else {
                TemplateType::Snapshot
            },
            vcpus: t.vcpus,
            memory_mb: t.memory_mb,
            size_bytes: t.size_bytes,
            created_at: rfc3339(t.created_at),
            platform: t.platform != 0,
            protected: t.platform != 0,
            metadata: t.metadata.clone().into_iter().collect(),
        }
    }
}

/// A platform template, as its host reports it.
pub fn base_template(t: &wrenn_proto::agent::v1::Template) -> Template {
    Template {
        name: t.name.clone(),
        kind: TemplateType::Base,
        vcpus: t.vcpus.into(),
        memory_mb: t.memory_mib.into(),
        size_bytes: i64::try_from(t.size_bytes).unwrap_or(i64::MAX),
        created_at: rfc3339(t.created_at_unix * 1000),
        platform: true,
        protected: true,
        metadata: BTreeMap::new(),
    }
}

/// The platform's base templates: those of every online host, each name once. Templates the
/// hosts made from OCI images for builds (`oci-…`) are the builds' own: not among them.
pub(crate) async fn base_templates(
    state: &AppState,
) -> Result<Vec<wrenn_proto::agent::v1::Template>> {
    let lists = state
        .on_online_hosts(
            |mut agent| async move { agent.list_templates(ListTemplatesRequest {}).await },
        )
        .await?;
    let mut seen = std::collections::BTreeMap::new();
    for t in lists.into_iter().flat_map(|l| l.into_inner().templates) {
        if t.kind == TemplateKind::Base as i32
            && !t.name.starts_with(crate::builds::IMAGE_TEMPLATE_PREFIX)
        {
            seen.entry(t.name.clone()).or_insert(t);
        }
    }
    Ok(seen.into_values().collect())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Replace the team's template of that name.
    #[serde(default)]
    pub(crate) overwrite: bool,
}

/// Snapshot a capsule
///
/// A team template from a capsule's memory, disk and processes; capsules created from it start
/// where the capsule was. The capsule is left paused.
#[utoipa::path(
    post,
    path = "/v1/snapshots",
    operation_id = "create_snapshot",
    tag = "snapshots",
    params(CreateQuery),
    request_body = CreateSnapshotBody,
    responses(
        (status = 201, description = "The template", body = Template),
        CheckedOnHost, NoCapsule,
        (status = 409, description = "`conflict`: the name is taken (see `overwrite`) or a platform template's; `invalid_state`: the template is in use or the capsule cannot be snapshotted now", body = ErrorBody),
        (status = 429, response = crate::responses::QuotaExceeded),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<CreateQuery>,
    JsonBody(b): JsonBody<CreateSnapshotBody>,
) -> Result<(StatusCode, Json<Template>)> {
    make(state, caller, q.overwrite, b, None).await
}

/// A team template from a capsule: a snapshot template, or with `fresh` a base template (the
/// capsule's disk booted afresh with those defaults; a build's result, `builds::runner`).
pub(crate) async fn make(
    state: AppState,
    caller: Caller,
    overwrite: bool,
    b: CreateSnapshotBody,
    fresh: Option<FreshBoot>,
) -> Result<(StatusCode, Json<Template>)> {
    let kind = if fresh.is_some() { "base" } else { "snapshot" };
    let name = b
        .name
        .unwrap_or_else(|| format!("template-{}", &Id::new(IdKind::Template).to_string()[4..12]));
    if wrenn_types::TemplateName::parse_snapshot(&name).is_err() {
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
    if existing.is_some() && !overwrite {
        return Err(ApiError::Conflict(format!(
            "template {name} already exists (use overwrite)"
        )));
    }
    let held =
        crate::quotas::reserve::reserve_snapshot(&state, &caller.team_id, existing.is_none())
            .await?;
    let id = Id::new(IdKind::Template).to_string();
    // Overwriting keeps the host-side id (the host refuses to replace a template in use); a new
    // template gets its own row's id.
    let host_name = match &existing {
        Some(t) => t.agent_name.clone(),
        None => id.clone(),
    };
    let host = crate::pool::host_of(&state.db, &capsule).await?;
    let mut agent = state.pool.client(&host)?;
    let made = agent
        .snapshot_capsule(SnapshotCapsuleRequest {
            capsule_id: capsule.id.clone(),
            name: host_name.clone(),
            overwrite: existing.is_some(),
            fresh,
        })
        .await
        .map_err(|s| user_facing(s, &name));
    let (made, held) = held.keep_if_ok(made).await?;
    let made = made.into_inner();
    // The source is paused now.
    state
        .db
        .set_capsule_status(&capsule.id, CapsuleStatus::Paused, None, false)
        .await?;
    if existing.is_some() {
        state.db.delete_template(&caller.team_id, &name).await?;
    }
    let row = TemplateRow {
        id,
        team_id: caller.team_id.clone(),
        name: name.clone(),
        agent_name: host_name.clone(),
        vcpus: made.vcpus.into(),
        memory_mb: made.memory_mib.into(),
        size_bytes: made.size_bytes as i64,
        source_capsule: capsule.id.clone(),
        metadata: capsule.metadata.clone(),
        created_at: now_ms(),
        host_id: Some(host.id),
        platform: existing.as_ref().map_or(0, |t| t.platform),
        kind: kind.into(),
    };
    if let Err(e) = state.db.insert_template(&row).await {
        // A concurrent create of the same name won: never leave a host template no row names.
        if existing.is_none() {
            let _ = agent
                .delete_template(DeleteTemplateRequest { name: host_name })
                .await;
        }
        return Err(e);
    }
    held.release().await;
    state
        .db
        .audit(
            &caller,
            "template.snapshot.create",
            ("template", &name),
            "success",
            &capsule.id,
        )
        .await?;
    publish(
        &state,
        crate::events::event::template_event(&caller, "template.snapshot.create", &name),
    );
    Ok((StatusCode::CREATED, Json(Template::from(&row))))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this kind (default: both).
    #[serde(rename = "type")]
    #[param(value_type = Option<TemplateType>)]
    kind: Option<String>,
}

/// List templates
///
/// The team's templates (snapshots, and builds' results: `base` for a build without a started
/// process), the platform's built templates (`platform`, read-only; a team's own template of
/// the same name hides one), then the platform's base templates.
#[utoipa::path(
    get,
    path = "/v1/snapshots",
    operation_id = "list_templates",
    tag = "snapshots",
    params(ListQuery),
    responses(
        (status = 200, description = "The templates", body = Vec<Template>),
        CheckedOnHost,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Vec<Template>>> {
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
    // The team's templates (and the platform's snapshot templates) are of either kind.
    out.extend(
        state
            .db
            .usable_templates(&caller.team_id)
            .await?
            .iter()
            .map(|r| Template {
                // The platform team deletes its platform templates; no other team does.
                protected: r.platform != 0 && r.team_id != caller.team_id,
                ..Template::from(r)
            })
            .filter(|t| match t.kind {
                TemplateType::Base => base,
                TemplateType::Snapshot => snapshot,
            }),
    );
    if base {
        out.extend(base_templates(&state).await?.iter().map(base_template));
    }
    Ok(Json(out))
}

/// Delete a template
///
/// One of the team's snapshots; platform templates cannot be deleted (but by the platform
/// team, which owns them).
#[utoipa::path(
    delete,
    path = "/v1/snapshots/{name}",
    operation_id = "delete_template",
    tag = "snapshots",
    params(("name" = String, Path, description = "The template's name")),
    responses(
        (status = 204, description = "Deleted"),
        OnHost,
        (status = 403, description = "`forbidden`: a platform template", body = ErrorBody),
        (status = 404, description = "`not_found`: no such template", body = ErrorBody),
        (status = 409, description = "`invalid_state`: capsules still use it", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    let Some(t) = state.db.template(&caller.team_id, &name).await? else {
        let platform = state.db.usable_template(&caller.team_id, &name).await?;
        if platform.is_some() || base_templates(&state).await?.iter().any(|t| t.name == name) {
            return Err(ApiError::Forbidden(format!(
                "{name} is a platform template; it cannot be deleted"
            )));
        }
        return Err(ApiError::NotFound(format!("template {name} not found")));
    };
    let Some(host_id) = t.host_id.as_deref() else {
        return Err(ApiError::Internal(format!("template {name} has no host")));
    };
    match state
        .agent_on(host_id)
        .await?
        .delete_template(DeleteTemplateRequest {
            name: t.agent_name.clone(),
        })
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(user_facing(s, &name)),
    }
    // Its copies on other hosts (a create there copied it): a host that cannot be reached or
    // refuses keeps its copy, which no row names any more.
    let others = crate::transfer::online_hosts(&state)
        .await?
        .into_iter()
        .filter(|(id, _)| id != host_id)
        .collect();
    for (host, e) in crate::transfer::delete_everywhere(others, &t.agent_name).await {
        tracing::warn!(%host, template = %t.agent_name, error = %e, "deleting a template's copy");
    }
    state.db.delete_template(&caller.team_id, &name).await?;
    state
        .db
        .audit(
            &caller,
            "template.snapshot.delete",
            ("template", &name),
            "success",
            "",
        )
        .await?;
    publish(
        &state,
        crate::events::event::template_event(&caller, "template.snapshot.delete", &name),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::assert_same_json;

    #[test]
    fn template_shapes_are_unchanged() {
        let t = TemplateRow {
            id: "tpl-x".into(),
            team_id: "team-x".into(),
            name: "my-env".into(),
            agent_name: "tx.my-env".into(),
            vcpus: 2,
            memory_mb: 512,
            size_bytes: 123_456,
            source_capsule: "cl-x".into(),
            metadata: [("k".to_string(), "v".to_string())].into(),
            created_at: 1_700_000_000_000,
            host_id: None,
            platform: 0,
            kind: "snapshot".into(),
        };
        // Before: `template_json`.
        let old = json!({
            "name": t.name,
            "type": "snapshot",
            "vcpus": t.vcpus,
            "memory_mb": t.memory_mb,
            "size_bytes": t.size_bytes,
            "created_at": rfc3339(t.created_at),
            "platform": false,
            "protected": false,
            "metadata": t.metadata,
        });
        assert_same_json(&Template::from(&t), old);
        let b = wrenn_proto::agent::v1::Template {
            name: "minimal".into(),
            kind: TemplateKind::Base as i32,
            vcpus: 1,
            memory_mib: 256,
            disk_bytes: 1 << 30,
            size_bytes: 99,
            created_at_unix: 1_700_000_000,
            base: String::new(),
        };
        // Before: the list's `json!` for base templates.
        let old = json!({
            "name": b.name,
            "type": "base",
            "vcpus": b.vcpus,
            "memory_mb": b.memory_mib,
            "size_bytes": b.size_bytes,
            "created_at": rfc3339(b.created_at_unix * 1000),
            "platform": true,
            "protected": true,
            "metadata": {},
        });
        assert_same_json(&base_template(&b), old);
    }
}
