//! `POST /v1/capsules`: a new capsule, from a template or a snapshot.

use axum::{extract::State, http::StatusCode, Json};
use wrenn_proto::agent::v1::{CapsuleRef, CreateCapsuleRequest, TemplateKind};

use super::model::*;
use crate::extract::JsonBody;
use crate::{
    db::{now_ms, Caller, CapsuleRow},
    error::{ApiError, ErrorBody, Result},
    events::publish,
    responses::CheckedOnHost,
    state::AppState,
};
pub use wrenn_types::api::capsules::CreateCapsuleBody;
use wrenn_types::CapsuleStatus;

/// Create a capsule
///
/// Restores a microVM from the template's snapshot; it is `running` when this answers.
#[utoipa::path(
    post,
    path = "/v1/capsules",
    operation_id = "create_capsule",
    tag = "capsules",
    request_body = CreateCapsuleBody,
    responses(
        (status = 201, description = "The capsule, with its proxy access token", body = CreatedCapsule),
        CheckedOnHost,
        (status = 403, description = "`forbidden`: `host_id` from someone not a platform admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such template", body = ErrorBody),
        (status = 409, description = "`invalid_state`: `host_id` names another host than the snapshot template's", body = ErrorBody),
        (status = 429, response = crate::responses::QuotaExceeded),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(b): JsonBody<CreateCapsuleBody>,
) -> Result<(StatusCode, Json<CreatedCapsule>)> {
    create_as(state, caller, b, None).await
}

/// A build capsule: on a host not in `busy` (those at their limit of builds), or for a
/// `FROM <image>` build from the image's template (`oci-…`, which no team reaches through
/// [`create`]) on the host that made it (`host_id`).
pub async fn create_for_build(
    state: AppState,
    caller: Caller,
    b: CreateCapsuleBody,
    busy: &[String],
) -> Result<(StatusCode, Json<CreatedCapsule>)> {
    create_as(state, caller, b, Some(busy)).await
}

/// [`create_now`], to its end whatever the client does ([`super::detached`]).
async fn create_as(
    state: AppState,
    caller: Caller,
    b: CreateCapsuleBody,
    build: Option<&[String]>,
) -> Result<(StatusCode, Json<CreatedCapsule>)> {
    let build = build.map(<[String]>::to_vec);
    super::detached(create_now(state, caller, b, build)).await
}

async fn create_now(
    state: AppState,
    caller: Caller,
    b: CreateCapsuleBody,
    build: Option<Vec<String>>,
) -> Result<(StatusCode, Json<CreatedCapsule>)> {
    let for_build = build.is_some();
    let template = b.template.unwrap_or_else(|| "minimal".into());
    if wrenn_types::TemplateName::parse(&template).is_err() {
        return Err(ApiError::InvalidRequest(format!(
            "invalid template name {template:?}"
        )));
    }
    if b.vcpus == Some(0) || b.vcpus.is_some_and(|v| v > 32) {
        return Err(ApiError::InvalidRequest("vcpus must be 1..=32".into()));
    }
    if b.memory_mb.is_some_and(|m| !(128..=65_536).contains(&m)) {
        return Err(ApiError::InvalidRequest(
            "memory_mb must be 128..=65536".into(),
        ));
    }
    // Bounded before anything is made.
    if let Some(envs) = &b.envs {
        crate::validate::envs("envs", &envs.clone().into_iter().collect())?;
    }
    if let Some(metadata) = &b.metadata {
        crate::validate::metadata(&metadata.clone().into_iter().collect())?;
    }
    let egress = b.egress.unwrap_or(true);
    let egress_policy = crate::network::policy(
        b.egress_allow.as_deref().unwrap_or_default(),
        b.egress_deny.as_deref().unwrap_or_default(),
    )?;
    let host_tags = b.host_tags.clone().unwrap_or_default();
    check_tags(&host_tags)?;
    // Forcing a host is a platform admin's tool (tests, moves), never a team's.
    if b.host_id.is_some()
        && !for_build
        && !crate::quotas::handlers::is_platform_admin(&state.db, &caller).await?
    {
        return Err(ApiError::Forbidden(
            "only a platform admin may choose the host (`host_id`)".into(),
        ));
    }
    // A team's snapshot template (its shape is fixed; the host knows it by its row's id), else
    // a platform snapshot template (`usable_template`), else a platform base template: the host refuses a name that is not a base template there, so
    // no other team's template (by name or host-side id) is ever reached from here.
    let (agent_template, kind, vcpus, memory, made_on) =
        match state.db.usable_template(&caller.team_id, &template).await? {
            Some(t) => (t.agent_name, TemplateKind::Snapshot, 0, 0, t.host_id),
            // An image's template is a build's own: missing to anyone else.
            None if !for_build && template.starts_with(crate::builds::IMAGE_TEMPLATE_PREFIX) => {
                return Err(ApiError::NotFound(format!("template {template} not found")))
            }
            None => (
                template.clone(),
                TemplateKind::Base,
                b.vcpus.unwrap_or(0),
                b.memory_mb.unwrap_or(0),
                None,
            ),
        };
    // A snapshot template travels: a create placed on a host without it copies it there
    // first (`transfer::ensure_on`); placement prefers the hosts that hold it.
    let only_host = b.host_id.as_deref();
    // Held against the team's quotas (checked and reserved at once) until the row exists.
    let (held, need) = crate::quotas::reserve::reserve_create(
        &state,
        &caller.team_id,
        &agent_template,
        vcpus,
        memory,
        b.disk_size_mb.unwrap_or(0),
    )
    .await?;
    // A host with room, held until the row exists.
    let ask = crate::placement::Ask {
        team_id: &caller.team_id,
        tags: &host_tags,
        template: &agent_template,
        snapshot: kind == TemplateKind::Snapshot,
        only_host,
        except_host: None,
        busy: build.as_deref().unwrap_or_default(),
        need,
    };
    let placed = crate::placement::place(&state.db, &ask).await;
    let (mut placed, mut held) = held.keep_if_ok(placed).await?;
    let host_id = placed.host.id.clone();
    if kind == TemplateKind::Snapshot {
        let copied =
            crate::transfer::ensure_on(&state, &placed.host, &agent_template, made_on.as_deref())
                .await;
        let (_, kept) = held.keep_if_ok(copied).await?;
        held = kept;
    }
    let mut agent = state.pool.client(&placed.host)?;
    // The proxy's access token, drawn before anything is made.
    let (token, token_hash) = crate::proxy::new_token()?;
    let made = agent
        .create_capsule(CreateCapsuleRequest {
            template: agent_template,
            template_kind: kind as i32,
            env_vars: b.envs.unwrap_or_default().into_iter().collect(),
            metadata: b.metadata.clone().unwrap_or_default().into_iter().collect(),
            egress,
            egress_policy: Some(crate::network::to_pb(&egress_policy)),
            timeout_secs: b.timeout_sec.unwrap_or(0),
            on_timeout: 0,
            vcpus,
            memory_mib: memory,
            disk_mib: b.disk_size_mb.unwrap_or(0),
        })
        .await
        .map_err(|s| match s.code() {
            // In the caller's words: the host's name for a snapshot template is not theirs.
            tonic::Code::NotFound => ApiError::NotFound(format!("template {template} not found")),
            _ => ApiError::from(s),
        });
    let (made, held) = held.keep_if_ok(made).await?;
    let made = made.into_inner();
    let now = now_ms();
    let row = CapsuleRow {
        id: made.id.clone(),
        team_id: caller.team_id.clone(),
        template,
        status: status_of(made.state),
        vcpus: made.vcpus.into(),
        memory_mb: made.memory_mib.into(),
        disk_size_mb: made.disk_mib.into(),
        timeout_sec: made.timeout_secs.into(),
        metadata: b.metadata.unwrap_or_default().into_iter().collect(),
        error: None,
        created_at: now,
        started_at: Some(now),
        last_active_at: Some(now),
        updated_at: now,
        host_id: Some(host_id),
    };
    let public = b.public.unwrap_or(false);
    let recorded = async {
        placed.insert(&row).await?;
        state
            .db
            .set_capsule_settings(
                &row.id,
                public,
                &token_hash,
                egress,
                &egress_policy,
                &host_tags,
            )
            .await?;
        // An action that happened is in the audit log, or it is undone.
        state
            .db
            .audit(
                &caller,
                "capsule.create",
                ("capsule", &row.id),
                "success",
                "",
            )
            .await
    }
    .await;
    if let Err(e) = recorded {
        // Never a capsule the database does not know, nor a half-recorded one: undo both.
        let _ = agent
            .destroy_capsule(CapsuleRef {
                id: made.id.clone(),
            })
            .await;
        let _ = state
            .db
            .set_capsule_status(&row.id, CapsuleStatus::Stopped, None, false)
            .await;
        return Err(e);
    }
    held.release().await;
    placed.release().await;
    let body = Capsule::from(&row);
    publish(
        &state,
        crate::events::event::capsule_event(&caller, "capsule.create", &row.id, body.clone()),
    );
    // The proxy's access token is shown once, here.
    let shown = CreatedCapsule {
        capsule: body,
        public,
        access_token: token,
    };
    Ok((StatusCode::CREATED, Json(shown)))
}

/// At most 16 tags of 1..=64 characters `[a-zA-Z0-9._:=-]`.
fn check_tags(tags: &[String]) -> Result<()> {
    if tags.len() > 16 {
        return Err(ApiError::InvalidRequest(
            "host_tags: at most 16 tags".into(),
        ));
    }
    for t in tags {
        let ok = (1..=64).contains(&t.len())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:=-".contains(c));
        if !ok {
            return Err(ApiError::InvalidRequest(format!(
                "host_tags: invalid tag {t:?} (1 to 64 of a-z A-Z 0-9 . _ : = -)"
            )));
        }
    }
    Ok(())
}
