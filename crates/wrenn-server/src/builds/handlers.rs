//! The builds' routes: create (checked and queued), list, get, cancel and the live log.

use std::{collections::HashSet, convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
    Json,
};
use base64::Engine;
use futures_util::Stream;
use wrenn_types::{
    api::builds::{Build, BuildStep, CreateBuildBody},
    recipe::{self, Format, Healthcheck},
    Id, IdKind, TemplateName,
};

use super::archive;
use crate::{
    db::{now_ms, BuildRow, Caller},
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    responses::{Authed, Checked},
    state::AppState,
};

/// Longest recipe or Dockerfile.
const MAX_SOURCE: usize = 256 << 10;
/// Builds a team may have queued or running at once.
const MAX_UNFINISHED: i64 = 10;

/// Queue a build
///
/// Checks the recipe (or Dockerfile), the archive and the base template, then queues the build
/// (`pending`). A queued build runs in a build capsule; when it succeeds the team has a
/// snapshot template of that name (replacing one of the same name). Errors in the recipe are
/// a 400 naming the line.
#[utoipa::path(
    post,
    path = "/v1/builds",
    operation_id = "create_build",
    tag = "builds",
    request_body = CreateBuildBody,
    responses(
        (status = 201, description = "The queued build", body = Build),
        Checked,
        (status = 404, description = "`not_found`: no base template of that name", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is a platform template's", body = ErrorBody),
        (status = 413, description = "`too_large`: the archive is over 100 MiB", body = ErrorBody),
        (status = 429, response = crate::responses::QuotaExceeded),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(b): JsonBody<CreateBuildBody>,
) -> Result<(StatusCode, Json<Build>)> {
    queue_build(&state, &caller, b, false).await
}

/// Checks and queues a build; `platform`: a platform admin's build of a platform template.
pub(super) async fn queue_build(
    state: &AppState,
    caller: &Caller,
    b: CreateBuildBody,
    platform: bool,
) -> Result<(StatusCode, Json<Build>)> {
    let state = state.clone();
    let caller = caller.clone();
    if TemplateName::parse_snapshot(&b.name).is_err() {
        return Err(ApiError::InvalidRequest(format!(
            "invalid name {:?}: use [a-zA-Z0-9][a-zA-Z0-9._-], at most 48 characters",
            b.name
        )));
    }
    let (format, source) = match (&b.recipe, &b.dockerfile) {
        (Some(lines), None) => (Format::Recipe, lines.join("\n")),
        (None, Some(text)) => (Format::Dockerfile, text.clone()),
        _ => {
            return Err(ApiError::InvalidRequest(
                "give exactly one of `recipe` (lines) and `dockerfile` (text)".into(),
            ))
        }
    };
    if source.len() > MAX_SOURCE {
        return Err(ApiError::InvalidRequest(
            "the recipe is over 256 KiB".into(),
        ));
    }
    let parsed =
        recipe::parse(&source, format).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let (base, image) = match (&parsed.from, &b.base_template) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "a Dockerfile names its base with FROM, not `base_template`".into(),
            ))
        }
        (Some(from), None) => super::base_of(from),
        (None, Some(t)) => (t.clone(), false),
        (None, None) => ("minimal".to_string(), false),
    };
    if !image && TemplateName::parse(&base).is_err() {
        return Err(ApiError::InvalidRequest(format!(
            "invalid base template {base:?}"
        )));
    }
    let healthcheck = match (&b.healthcheck, &parsed.healthcheck) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "the Dockerfile has a HEALTHCHECK and the request a `healthcheck`: give one".into(),
            ))
        }
        (Some(h), None) => {
            Healthcheck::parse(h).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
            Some(h.clone())
        }
        (None, _) => None,
    };
    if b.vcpus.is_some_and(|v| !(1..=8).contains(&v)) {
        return Err(ApiError::InvalidRequest("vcpus must be 1..=8".into()));
    }
    if b.memory_mb.is_some_and(|m| !(128..=16_384).contains(&m)) {
        return Err(ApiError::InvalidRequest(
            "memory_mb must be 128..=16384".into(),
        ));
    }
    if b.disk_mb.is_some_and(|d| !(1..=65_536).contains(&d)) {
        return Err(ApiError::InvalidRequest("disk_mb must be 1..=65536".into()));
    }
    let tar = match &b.archive {
        Some(text) => Some(checked_archive(text, &parsed)?),
        None => {
            if let Some((line, _)) = parsed.copy_sources().next() {
                return Err(ApiError::InvalidRequest(format!(
                    "line {line}: COPY needs the build's `archive`"
                )));
            }
            None
        }
    };
    // An image is pulled when the build runs (a bad reference or registry fails the build).
    if !image {
        check_base(&state, &caller, &base).await?;
    }
    if crate::snapshots::base_templates(&state)
        .await?
        .iter()
        .any(|t| t.name == b.name)
    {
        return Err(ApiError::Conflict(format!(
            "{} is a platform template's name",
            b.name
        )));
    }
    if state.db.unfinished_builds(&caller.team_id).await? >= MAX_UNFINISHED {
        return Err(ApiError::QuotaExceeded(format!(
            "at most {MAX_UNFINISHED} builds may be queued or running per team"
        )));
    }
    let expose: Vec<String> = parsed
        .expose
        .iter()
        .map(|p| format!("{}/{}", p.number, if p.udp { "udp" } else { "tcp" }))
        .collect();
    let now = now_ms();
    let hc_steps = u32::from(healthcheck.is_some() || parsed.healthcheck.is_some());
    let row = BuildRow {
        id: Id::new(IdKind::Build).to_string(),
        team_id: caller.team_id.clone(),
        name: b.name.clone(),
        format: match format {
            Format::Recipe => "recipe",
            Format::Dockerfile => "dockerfile",
        }
        .into(),
        source,
        base_template: base,
        healthcheck,
        vcpus: i64::from(b.vcpus.unwrap_or(1)),
        memory_mb: i64::from(b.memory_mb.unwrap_or(0)),
        disk_mb: i64::from(b.disk_mb.unwrap_or(0)),
        status: "pending".into(),
        current_step: 0,
        total_steps: i64::from(parsed.steps.len() as u32 + 2 + hc_steps),
        logs: "[]".into(),
        error: None,
        capsule_id: None,
        default_user: String::new(),
        default_workdir: String::new(),
        default_env: "{}".into(),
        expose: serde_json::to_string(&expose).unwrap_or_else(|_| "[]".into()),
        actor_type: caller.actor_type.to_string(),
        actor_id: caller.actor_id.clone(),
        actor_name: caller.actor_name.clone(),
        has_archive: i64::from(tar.is_some()),
        updated_at: now,
        created_at: now,
        started_at: None,
        completed_at: None,
        platform: i64::from(platform),
        host_id: None,
    };
    state.db.insert_build(&row, tar.as_deref()).await?;
    state
        .db
        .audit(
            &caller,
            if platform {
                "build.platform.create"
            } else {
                "build.create"
            },
            ("build", &row.id),
            "success",
            "",
        )
        .await?;
    Ok((StatusCode::CREATED, Json(Build::from(&row))))
}

/// The archive decoded, vetted and written again as a plain tar; every literal `COPY`
/// source must be in it.
fn checked_archive(text: &str, parsed: &recipe::Recipe) -> Result<Vec<u8>> {
    if text.len() > archive::MAX_ARCHIVE / 3 * 4 + 4 {
        return Err(ApiError::TooLarge("the archive is over 100 MiB".into()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| ApiError::InvalidRequest(format!("archive: not base64: {e}")))?;
    if bytes.len() > archive::MAX_ARCHIVE {
        return Err(ApiError::TooLarge("the archive is over 100 MiB".into()));
    }
    let entries = archive::read(&bytes)?;
    let mut have: HashSet<String> = HashSet::new();
    for e in &entries {
        // A path and every folder above it.
        let mut p = e.path.as_str();
        have.insert(p.to_owned());
        while let Some((parent, _)) = p.rsplit_once('/') {
            have.insert(parent.to_owned());
            p = parent;
        }
    }
    for (line, src) in parsed.copy_sources() {
        let clean = archive::clean_path(&src)?;
        if !clean.is_empty() && !have.contains(&clean) {
            return Err(ApiError::InvalidRequest(format!(
                "line {line}: COPY source {src:?} is not in the archive"
            )));
        }
    }
    Ok(archive::write_tar(&entries))
}

/// The base must be the team's template or a platform one.
async fn check_base(state: &AppState, caller: &Caller, base: &str) -> Result<()> {
    if state
        .db
        .usable_template(&caller.team_id, base)
        .await?
        .is_some()
    {
        return Ok(());
    }
    if crate::snapshots::base_templates(state)
        .await?
        .iter()
        .any(|t| t.name == base)
    {
        return Ok(());
    }
    Err(ApiError::NotFound(format!("no template named {base}")))
}

/// List builds
///
/// The team's builds, newest first (at most 100).
#[utoipa::path(
    get,
    path = "/v1/builds",
    operation_id = "list_builds",
    tag = "builds",
    responses((status = 200, description = "The builds", body = [Build]), Authed)
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Build>>> {
    let rows = state.db.builds(&caller.team_id, 100).await?;
    Ok(Json(rows.iter().map(Build::from).collect()))
}

/// The `{id}` of a build's path.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BuildPath {
    /// Build id (`bld-…`)
    pub id: String,
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<BuildRow> {
    state
        .db
        .build(&caller.team_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build {id} not found")))
}

/// Get a build
///
/// Its status, steps (command, output, exit code, time) and, when it failed, the step and
/// line that failed.
#[utoipa::path(
    get,
    path = "/v1/builds/{id}",
    operation_id = "get_build",
    tag = "builds",
    params(BuildPath),
    responses(
        (status = 200, description = "The build", body = Build),
        Authed,
        (status = 404, description = "`not_found`: not the team's build", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Build>> {
    Ok(Json(Build::from(&find(&state, &caller, &id).await?)))
}

/// Cancel a build
///
/// A queued build never runs; a running one stops at once (its step is abandoned and its
/// build capsule destroyed).
#[utoipa::path(
    post,
    path = "/v1/builds/{id}/cancel",
    operation_id = "cancel_build",
    tag = "builds",
    params(BuildPath),
    responses(
        (status = 200, description = "The cancelled build", body = Build),
        Authed,
        (status = 404, description = "`not_found`: not the team's build", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the build is over", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Build>> {
    let b = find(&state, &caller, &id).await?;
    if !state.db.cancel_build(&caller.team_id, &id).await? {
        return Err(ApiError::InvalidState(format!(
            "build {id} is {} already",
            b.status
        )));
    }
    state
        .db
        .audit(&caller, "build.cancel", ("build", &id), "success", "")
        .await?;
    Ok(Json(Build::from(&find(&state, &caller, &id).await?)))
}

/// Follow a build's log
///
/// Server-sent events: a `step` event (a `BuildStep` as JSON) each time a step starts,
/// writes output or ends, then one `build` event (the `Build`) when the build is over, and
/// the stream ends.
#[utoipa::path(
    get,
    path = "/v1/builds/{id}/logs",
    operation_id = "stream_build_logs",
    tag = "builds",
    params(BuildPath),
    responses(
        (status = 200, description = "`step` events, then one `build` event", body = BuildStep, content_type = "text/event-stream"),
        Authed,
        (status = 404, description = "`not_found`: not the team's build", body = ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>> {
    find(&state, &caller, &id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(64);
    tokio::spawn(async move {
        let mut sent: Vec<BuildStep> = Vec::new();
        loop {
            let Ok(Some(row)) = state.db.build(&caller.team_id, &id).await else {
                return;
            };
            let b = Build::from(&row);
            for (i, step) in b.logs.iter().enumerate() {
                if sent.get(i) != Some(step) {
                    let data = serde_json::to_string(step).unwrap_or_default();
                    if tx
                        .send(SseEvent::default().event("step").data(data))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            sent = b.logs.clone();
            if b.status.is_final() {
                let data = serde_json::to_string(&b).unwrap_or_default();
                let _ = tx.send(SseEvent::default().event("build").data(data)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let stream = tokio_stream::StreamExt::map(stream, Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
