//! `/v1/capsules`: lifecycle, exec, processes, metrics.

use std::collections::{BTreeMap, HashMap};

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    Json,
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wrenn_proto::agent::v1::{
    kill_process_request, CapsuleRef, CapsuleState as PbState, CreateCapsuleRequest, ExecRequest,
    GetMetricsRequest, KillProcessRequest, StartBackgroundRequest, TemplateKind,
};
use wrenn_types::{Id, IdKind};

use crate::{
    api_docs::{AgentFailed, BadRequest, HostUnavailable, Internal, Unauthorized},
    db::{now_ms, Caller, CapsuleRow},
    error::{ApiError, ErrorBody, Result},
    events::{publish, Event},
    state::AppState,
    time::rfc3339,
};

/// The status names of the API (the SDK's enum).
pub fn status_name(state: i32) -> &'static str {
    match PbState::try_from(state).unwrap_or(PbState::Unspecified) {
        PbState::Pending | PbState::Unspecified => "pending",
        PbState::Starting => "starting",
        PbState::Running => "running",
        PbState::Paused => "paused",
        PbState::Stopped => "stopped",
        PbState::Error => "error",
    }
}

/// A capsule's status (the SDK's enum has more values; this server uses these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapsuleStatus {
    Pending,
    Starting,
    Running,
    Paused,
    /// Destroyed (its calls answer `not_found`).
    Stopped,
    /// Failed; `error` says why.
    Error,
}

/// A capsule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Capsule {
    #[schema(example = "cl-0123456789abcdefghijklmno")]
    pub id: String,
    #[schema(value_type = CapsuleStatus)]
    pub status: String,
    #[schema(example = "minimal")]
    pub template: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    /// Idle seconds before the capsule is paused (0: never).
    pub timeout_sec: i64,
    pub disk_size_mb: i64,
    pub metadata: BTreeMap<String, String>,
    /// Why the capsule failed (status `error`), else null.
    #[schema(required = true)]
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub started_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub last_active_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_updated: String,
}

impl From<&CapsuleRow> for Capsule {
    fn from(c: &CapsuleRow) -> Capsule {
        Capsule {
            id: c.id.clone(),
            status: c.status.clone(),
            template: c.template.clone(),
            vcpus: c.vcpus,
            memory_mb: c.memory_mb,
            timeout_sec: c.timeout_sec,
            disk_size_mb: c.disk_size_mb,
            metadata: c.metadata.clone().into_iter().collect(),
            // The reason as the API may show it (no internal addresses).
            error: c
                .error
                .as_deref()
                .map(|e| crate::error::redact(e).into_owned()),
            created_at: rfc3339(c.created_at),
            started_at: c.started_at.map(rfc3339),
            last_active_at: c.last_active_at.map(rfc3339),
            last_updated: rfc3339(c.updated_at),
        }
    }
}

/// The answer to a create: the capsule, and how to reach its ports (shown this once).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CreatedCapsule {
    #[serde(flatten)]
    pub capsule: Capsule,
    /// Its ports are open to anyone through the proxy.
    pub public: bool,
    /// Opens the capsule's ports through the proxy (`X-Wrenn-Access-Token` or
    /// `?wrenn_token=`). Shown only here; stored hashed.
    pub access_token: String,
}

/// A capsule id from a path, or `not_found` (a malformed id names no capsule).
pub fn capsule_id(raw: &str) -> Result<String> {
    Id::parse(IdKind::Capsule, raw)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::NotFound(format!("capsule {raw} not found")))
}

/// A team's live capsule (not stopped), or `not_found`.
pub async fn live(state: &AppState, caller: &Caller, raw: &str) -> Result<CapsuleRow> {
    let id = capsule_id(raw)?;
    let c = state.db.capsule(&caller.team_id, &id).await?;
    if c.status == "stopped" {
        return Err(ApiError::NotFound(format!("capsule {id} not found")));
    }
    Ok(c)
}

/// A team's running capsule, or `not_found` / `invalid_state`.
pub async fn running(state: &AppState, caller: &Caller, raw: &str) -> Result<CapsuleRow> {
    let c = live(state, caller, raw).await?;
    if c.status != "running" {
        return Err(ApiError::InvalidState(format!(
            "capsule {} is {}, not running",
            c.id, c.status
        )));
    }
    Ok(c)
}

/// `[a-zA-Z0-9][a-zA-Z0-9._-]*`, at most `max` characters.
pub fn safe_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A new capsule; every field is optional.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCapsuleBody {
    /// A platform template or one of the team's snapshots (default `minimal`).
    #[schema(example = "minimal")]
    template: Option<String>,
    /// 1..=32 (default: the template's). Ignored for snapshot templates.
    #[schema(minimum = 1, maximum = 32)]
    vcpus: Option<u32>,
    /// 128..=65536 (default: the template's). Ignored for snapshot templates.
    #[schema(minimum = 128, maximum = 65536)]
    memory_mb: Option<u32>,
    /// Idle seconds before the capsule is paused (default: never).
    #[schema(format = Int64, minimum = 0, maximum = 4294967295.0)]
    timeout_sec: Option<u32>,
    /// Disk size; larger than the template's grows the disk.
    #[schema(format = Int64, minimum = 0, maximum = 4294967295.0)]
    disk_size_mb: Option<u32>,
    metadata: Option<HashMap<String, String>>,
    /// Environment variables for every command.
    envs: Option<HashMap<String, String>>,
    /// Internet access (default on).
    egress: Option<bool>,
    /// CIDRs and domain names it may reach (default: every public address); see
    /// `PATCH /v1/capsules/{id}/network`.
    #[schema(example = json!(["example.com", "203.0.113.0/24"]))]
    egress_allow: Option<Vec<String>>,
    /// CIDRs and domain names it may not reach (beats `egress_allow`).
    egress_deny: Option<Vec<String>>,
    /// Its ports are open to anyone through the proxy (default: API key or access token).
    public: Option<bool>,
}

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
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such template", body = ErrorBody),
        (status = 429, response = crate::api_docs::QuotaExceeded),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: std::result::Result<Json<CreateCapsuleBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedCapsule>)> {
    let Json(b) = body?;
    let template = b.template.unwrap_or_else(|| "minimal".into());
    if !safe_name(&template, 64) {
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
        crate::validate::envs("envs", envs)?;
    }
    if let Some(metadata) = &b.metadata {
        crate::validate::metadata(metadata)?;
    }
    let egress = b.egress.unwrap_or(true);
    let egress_policy = crate::network::policy(
        b.egress_allow.as_deref().unwrap_or_default(),
        b.egress_deny.as_deref().unwrap_or_default(),
    )?;
    // A team's snapshot template (its shape is fixed; the host knows it by its row's id),
    // else a platform template: the host refuses a name that is not a base template there, so
    // no other team's template (by name or host-side id) is ever reached from here.
    let (agent_template, kind, vcpus, memory) =
        match state.db.template(&caller.team_id, &template).await? {
            Some(t) => (t.agent_name, TemplateKind::Snapshot, 0, 0),
            None => (
                template.clone(),
                TemplateKind::Base,
                b.vcpus.unwrap_or(0),
                b.memory_mb.unwrap_or(0),
            ),
        };
    // Held against the team's quotas (checked and reserved at once) until the row exists.
    let held = crate::quotas::reserve_create(
        &state,
        &caller.team_id,
        &agent_template,
        vcpus,
        memory,
        b.disk_size_mb.unwrap_or(0),
    )
    .await?;
    // The proxy's access token, drawn before anything is made.
    let (token, token_hash) = crate::proxy::new_token()?;
    let mut agent = state.agent();
    let made = agent
        .create_capsule(CreateCapsuleRequest {
            template: agent_template,
            template_kind: kind as i32,
            env_vars: b.envs.unwrap_or_default(),
            metadata: b.metadata.clone().unwrap_or_default(),
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
        status: status_name(made.state).into(),
        vcpus: made.vcpus.into(),
        memory_mb: made.memory_mib.into(),
        disk_size_mb: made.disk_mib.into(),
        timeout_sec: made.timeout_secs.into(),
        metadata: b.metadata.unwrap_or_default(),
        error: None,
        created_at: now,
        started_at: Some(now),
        last_active_at: Some(now),
        updated_at: now,
    };
    let public = b.public.unwrap_or(false);
    let recorded = async {
        state.db.insert_capsule(&row).await?;
        state
            .db
            .set_capsule_access(&row.id, public, &token_hash)
            .await?;
        state
            .db
            .set_capsule_network(&row.id, egress, &egress_policy)
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
            .set_capsule_status(&row.id, "stopped", None, false)
            .await;
        return Err(e);
    }
    held.release().await;
    let body = Capsule::from(&row);
    publish(
        &state,
        Event::capsule(&caller, "capsule.create", &row.id, body.clone()),
    );
    // The proxy's access token is shown once, here.
    let shown = CreatedCapsule {
        capsule: body,
        public,
        access_token: token,
    };
    Ok((StatusCode::CREATED, Json(shown)))
}

/// List capsules
///
/// The team's capsules that are not destroyed, newest first.
#[utoipa::path(
    get,
    path = "/v1/capsules",
    operation_id = "list_capsules",
    tag = "capsules",
    responses(
        (status = 200, description = "The team's live capsules", body = Vec<Capsule>),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
    )
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Capsule>>> {
    let rows = state.db.capsules(&caller.team_id).await?;
    Ok(Json(rows.iter().map(Capsule::from).collect()))
}

/// Get a capsule
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}",
    operation_id = "get_capsule",
    tag = "capsules",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    responses(
        (status = 200, description = "The capsule", body = Capsule),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule, or it was destroyed", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Capsule>> {
    Ok(Json(Capsule::from(&live(&state, &caller, &id).await?)))
}

/// Applies what the agent says about a capsule to its row.
async fn record_state(
    state: &AppState,
    id: &str,
    pb: &wrenn_proto::agent::v1::Capsule,
    started: bool,
) -> Result<()> {
    let error = (!pb.error.is_empty()).then_some(pb.error.as_str());
    state
        .db
        .set_capsule_status(id, status_name(pb.state), error, started)
        .await
}

/// After a lifecycle `action` on capsule `id`: its audit row and event, and its JSON.
async fn recorded(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<Json<Capsule>> {
    let row = state.db.capsule(&caller.team_id, id).await?;
    // The action happened: it is in the audit log, or the request fails.
    state
        .db
        .audit(caller, action, ("capsule", id), "success", "")
        .await?;
    let body = Capsule::from(&row);
    publish(state, Event::capsule(caller, action, id, body.clone()));
    Ok(Json(body))
}

/// Pause a capsule
///
/// Its memory, files and processes are kept; resume continues where it stopped.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/pause",
    operation_id = "pause_capsule",
    tag = "capsules",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    responses(
        (status = 200, description = "The capsule, now paused", body = Capsule),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: it cannot be paused now", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Capsule>> {
    let c = live(&state, &caller, &id).await?;
    let pb = state
        .agent()
        .pause_capsule(CapsuleRef { id: c.id.clone() })
        .await?
        .into_inner();
    record_state(&state, &c.id, &pb, false).await?;
    recorded(&state, &caller, &c.id, "capsule.pause").await
}

/// Resume a capsule
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/resume",
    operation_id = "resume_capsule",
    tag = "capsules",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    responses(
        (status = 200, description = "The capsule, running again", body = Capsule),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: it cannot be resumed now", body = ErrorBody),
        (status = 429, response = crate::api_docs::QuotaExceeded),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Capsule>> {
    let c = live(&state, &caller, &id).await?;
    let held = crate::quotas::reserve_resume(&state, &c).await?;
    let pb = state
        .agent()
        .resume_capsule(CapsuleRef { id: c.id.clone() })
        .await
        .map_err(ApiError::from);
    let (pb, held) = held.keep_if_ok(pb).await?;
    let pb = pb.into_inner();
    record_state(&state, &c.id, &pb, true).await?;
    held.release().await;
    recorded(&state, &caller, &c.id, "capsule.resume").await
}

/// Destroy a capsule
///
/// Its VM and everything in it are gone; the capsule is `stopped` and answers `not_found`.
#[utoipa::path(
    delete,
    path = "/v1/capsules/{id}",
    operation_id = "destroy_capsule",
    tag = "capsules",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule, or already destroyed", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn destroy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let c = live(&state, &caller, &id).await?;
    match state
        .agent()
        .destroy_capsule(CapsuleRef { id: c.id.clone() })
        .await
    {
        Ok(_) => {}
        // Already gone from its host: the row just catches up.
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(s.into()),
    }
    state
        .db
        .set_capsule_status(&c.id, "stopped", None, false)
        .await?;
    state
        .db
        .audit(
            &caller,
            "capsule.destroy",
            ("capsule", &c.id),
            "success",
            "",
        )
        .await?;
    let mut row = c;
    row.status = "stopped".into();
    publish(
        &state,
        Event::capsule(&caller, "capsule.destroy", &row.id, Capsule::from(&row)),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Keep a capsule alive
///
/// Counts as activity, so its idle timeout starts again.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/ping",
    operation_id = "ping_capsule",
    tag = "capsules",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    responses(
        (status = 204, description = "Pinged"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn ping(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let c = running(&state, &caller, &id).await?;
    state.agent().ping(CapsuleRef { id: c.id.clone() }).await?;
    state.db.touch_capsule(&c.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A command to run in the capsule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// The program (not a shell line: use `/bin/sh` with `["-c", line]`).
    #[schema(example = "/bin/sh")]
    cmd: String,
    #[serde(default)]
    #[schema(example = json!(["-c", "echo hello"]))]
    args: Vec<String>,
    /// Start it in the background and answer at once (202) with its pid and tag.
    #[serde(default)]
    background: bool,
    /// Foreground only: kill it after this many seconds (default 60).
    #[schema(format = Int64, minimum = 0, maximum = 4294967295.0)]
    timeout_sec: Option<u32>,
    envs: Option<HashMap<String, String>>,
    cwd: Option<String>,
    /// Background only: a name to find the process by (default `proc-…`).
    tag: Option<String>,
    /// The user to run as (default: the template's).
    user: Option<String>,
}

/// How `stdout` and `stderr` are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum OutputEncoding {
    /// Both are the output as text.
    #[serde(rename = "utf-8")]
    Utf8,
    /// The output is not UTF-8: both are base64.
    #[serde(rename = "base64")]
    Base64,
}

/// A foreground command's result (a non-zero exit is not an error).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    pub encoding: OutputEncoding,
    /// Set when the process was killed (signal or timeout), else null.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The capsule's id.
    pub sandbox_id: String,
    pub cmd: String,
}

/// A background command, started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BackgroundProcess {
    pub pid: u32,
    pub tag: String,
    /// The capsule's id.
    pub sandbox_id: String,
    pub cmd: String,
}

/// Foreground commands without a timeout get this one.
const DEFAULT_EXEC_TIMEOUT_SECS: u32 = 60;

/// Run a command
///
/// Foreground (default): runs to completion and answers with its output. Background: starts it
/// and answers at once; see the processes routes.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/exec",
    operation_id = "exec",
    tag = "commands",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    request_body = ExecBody,
    responses(
        (status = 200, description = "Foreground: the command ran to its end", body = ExecResult),
        (status = 202, description = "Background: the command started", body = BackgroundProcess),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn exec(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: std::result::Result<Json<ExecBody>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::response::Response> {
    let Json(b) = body?;
    if b.cmd.trim().is_empty() {
        return Err(ApiError::InvalidRequest("cmd is empty".into()));
    }
    crate::validate::command(&b.cmd, &b.args, b.cwd.as_deref())?;
    if let Some(envs) = &b.envs {
        crate::validate::envs("envs", envs)?;
    }
    let c = running(&state, &caller, &id).await?;
    let mut agent = state.agent();
    let _ = state.db.touch_capsule(&c.id).await;
    if b.background {
        let tag = b
            .tag
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| format!("proc-{}", &Id::new(IdKind::Build).to_string()[4..12]));
        let started = agent
            .start_background(StartBackgroundRequest {
                capsule_id: c.id.clone(),
                cmd: b.cmd.clone(),
                args: b.args,
                env: b.envs.unwrap_or_default(),
                cwd: b.cwd.unwrap_or_default(),
                user: b.user.unwrap_or_default(),
                tag,
            })
            .await?
            .into_inner();
        let body = BackgroundProcess {
            pid: started.pid,
            tag: started.tag,
            sandbox_id: c.id,
            cmd: b.cmd,
        };
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let timeout = b.timeout_sec.unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS);
    let out = agent
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            cmd: b.cmd.clone(),
            args: b.args,
            env: b.envs.unwrap_or_default(),
            cwd: b.cwd.unwrap_or_default(),
            user: b.user.unwrap_or_default(),
            timeout_ms: timeout.saturating_mul(1000),
        })
        .await?
        .into_inner();
    let text = |b: &[u8]| std::str::from_utf8(b).map(str::to_string).ok();
    let (stdout, stderr, encoding) = match (text(&out.stdout), text(&out.stderr)) {
        (Some(o), Some(e)) => (o, e, OutputEncoding::Utf8),
        _ => {
            let b64 = base64::engine::general_purpose::STANDARD;
            (
                b64.encode(&out.stdout),
                b64.encode(&out.stderr),
                OutputEncoding::Base64,
            )
        }
    };
    let body = ExecResult {
        stdout,
        stderr,
        exit_code: out.exit_code,
        duration_ms: out.duration_ms,
        encoding,
        error: (!out.error.is_empty()).then_some(out.error),
        sandbox_id: c.id,
        cmd: b.cmd,
    };
    Ok(Json(body).into_response())
}

/// A process running in a capsule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tag: String,
    pub cmd: String,
    pub args: Vec<String>,
}

/// A capsule's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

/// List processes
///
/// The capsule's running processes (those started through the API and envd).
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}/processes",
    operation_id = "list_processes",
    tag = "commands",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    responses(
        (status = 200, description = "Its processes", body = ProcessList),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn processes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ProcessList>> {
    let c = running(&state, &caller, &id).await?;
    let list = state
        .agent()
        .list_processes(CapsuleRef { id: c.id })
        .await?
        .into_inner();
    let processes = list
        .processes
        .into_iter()
        .map(|p| ProcessInfo {
            pid: p.pid,
            tag: p.tag,
            cmd: p.cmd,
            args: p.args,
        })
        .collect();
    Ok(Json(ProcessList { processes }))
}

/// Kill a process
///
/// SIGKILL to the process (and its group), by pid or by tag.
#[utoipa::path(
    delete,
    path = "/v1/capsules/{id}/processes/{pid}",
    operation_id = "kill_process",
    tag = "commands",
    params(
        ("id" = String, Path, description = "Capsule id (`cl-…`)"),
        ("pid" = String, Path, description = "A pid, or a process's tag"),
    ),
    responses(
        (status = 204, description = "Killed"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule or process", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn kill_process(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
) -> Result<StatusCode> {
    let c = running(&state, &caller, &id).await?;
    let selector = match pid.parse::<u32>() {
        Ok(pid) => kill_process_request::Selector::Pid(pid),
        Err(_) => kill_process_request::Selector::Tag(pid),
    };
    state
        .agent()
        .kill_process(KillProcessRequest {
            capsule_id: c.id,
            selector: Some(selector),
            signal: "SIGKILL".into(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The ranges of a capsule's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum MetricsRange {
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "10m")]
    M10,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "2h")]
    H2,
    #[serde(rename = "6h")]
    H6,
    #[serde(rename = "12h")]
    H12,
    #[serde(rename = "24h")]
    H24,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// How far back (default `10m`).
    #[param(value_type = Option<MetricsRange>)]
    range: Option<String>,
}

/// One sample of a capsule's use.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MetricPoint {
    /// Unix seconds.
    pub timestamp_unix: i64,
    /// CPU use of its VM, in percent of one CPU.
    pub cpu_pct: f64,
    pub mem_bytes: u64,
    /// Disk space its VM has allocated.
    pub disk_bytes: u64,
}

/// A capsule's samples over a range.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CapsuleMetrics {
    /// The capsule's id.
    pub sandbox_id: String,
    #[schema(value_type = MetricsRange)]
    pub range: String,
    /// Oldest first.
    pub points: Vec<MetricPoint>,
}

/// A capsule's metrics
///
/// CPU, memory and disk samples of its VM over a range (finer for shorter ranges).
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}/metrics",
    operation_id = "capsule_metrics",
    tag = "capsules",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)"), MetricsQuery),
    responses(
        (status = 200, description = "Its samples", body = CapsuleMetrics),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: std::result::Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CapsuleMetrics>> {
    let Query(q) = query?;
    let range = q.range.unwrap_or_else(|| "10m".into());
    let secs = match range.as_str() {
        "5m" => 300,
        "10m" => 600,
        "1h" => 3600,
        "2h" => 7200,
        "6h" => 6 * 3600,
        "12h" => 12 * 3600,
        "24h" => 24 * 3600,
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "range must be one of 5m, 10m, 1h, 2h, 6h, 12h, 24h, not {other:?}"
            )))
        }
    };
    let c = live(&state, &caller, &id).await?;
    let points = match state
        .agent()
        .get_metrics(GetMetricsRequest {
            capsule_id: c.id.clone(),
            range_secs: secs,
        })
        .await
    {
        Ok(r) => r.into_inner().points,
        Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
        Err(s) => return Err(s.into()),
    };
    let points = points.into_iter().map(MetricPoint::from).collect();
    Ok(Json(CapsuleMetrics {
        sandbox_id: c.id,
        range,
        points,
    }))
}

impl From<wrenn_proto::agent::v1::MetricPoint> for MetricPoint {
    fn from(p: wrenn_proto::agent::v1::MetricPoint) -> MetricPoint {
        MetricPoint {
            timestamp_unix: p.unix,
            // As the API always showed it (an f32 widened to f64).
            cpu_pct: f64::from(p.cpu_pct),
            mem_bytes: p.mem_bytes,
            disk_bytes: p.disk_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::assert_same_json;

    fn row(error: Option<&str>) -> CapsuleRow {
        CapsuleRow {
            id: "cl-0123456789abcdefghijklmno".into(),
            team_id: "team-x".into(),
            template: "python".into(),
            status: "running".into(),
            vcpus: 2,
            memory_mb: 1024,
            disk_size_mb: 4096,
            timeout_sec: 300,
            metadata: [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into(),
            error: error.map(str::to_string),
            created_at: 1_700_000_000_123,
            started_at: Some(1_700_000_001_000),
            last_active_at: None,
            updated_at: 1_700_000_002_000,
        }
    }

    /// The shape before the types (`capsule_json`).
    fn old(c: &CapsuleRow) -> serde_json::Value {
        json!({
            "id": c.id,
            "status": c.status,
            "template": c.template,
            "vcpus": c.vcpus,
            "memory_mb": c.memory_mb,
            "timeout_sec": c.timeout_sec,
            "disk_size_mb": c.disk_size_mb,
            "metadata": c.metadata,
            "error": c.error,
            "created_at": rfc3339(c.created_at),
            "started_at": c.started_at.map(rfc3339),
            "last_active_at": c.last_active_at.map(rfc3339),
            "last_updated": rfc3339(c.updated_at),
        })
    }

    #[test]
    fn capsule_shapes_are_unchanged() {
        for r in [row(None), row(Some("the host no longer has this capsule"))] {
            assert_same_json(&Capsule::from(&r), old(&r));
            let created = CreatedCapsule {
                capsule: Capsule::from(&r),
                public: false,
                access_token: "0f".repeat(16),
            };
            let mut want = old(&r);
            want["public"] = json!(false);
            want["access_token"] = json!("0f".repeat(16));
            assert_same_json(&created, want);
        }
        // Nulls stay nulls.
        let v = serde_json::to_value(Capsule::from(&row(None))).unwrap();
        assert!(v["error"].is_null() && v["last_active_at"].is_null());
        assert_eq!(v["last_updated"], "2023-11-14T22:13:22Z");
    }

    #[test]
    fn exec_and_process_shapes_are_unchanged() {
        let done = ExecResult {
            stdout: "hi\n".into(),
            stderr: String::new(),
            exit_code: -1,
            duration_ms: 12,
            encoding: OutputEncoding::Utf8,
            error: None,
            sandbox_id: "cl-x".into(),
            cmd: "/bin/sh".into(),
        };
        assert_same_json(
            &done,
            json!({
                "stdout": "hi\n", "stderr": "", "exit_code": -1, "duration_ms": 12u64,
                "encoding": "utf-8", "error": None::<String>, "sandbox_id": "cl-x", "cmd": "/bin/sh",
            }),
        );
        let killed = ExecResult {
            encoding: OutputEncoding::Base64,
            error: Some("deadline exceeded".into()),
            ..done
        };
        let v = serde_json::to_value(&killed).unwrap();
        assert_eq!(
            (&v["encoding"], &v["error"]),
            (&json!("base64"), &json!("deadline exceeded"))
        );
        let started = BackgroundProcess {
            pid: 42,
            tag: "proc-1".into(),
            sandbox_id: "cl-x".into(),
            cmd: "sleep".into(),
        };
        assert_same_json(
            &started,
            json!({ "pid": 42u32, "tag": "proc-1", "sandbox_id": "cl-x", "cmd": "sleep" }),
        );
        let list = ProcessList {
            processes: vec![ProcessInfo {
                pid: 7,
                tag: "t".into(),
                cmd: "sleep".into(),
                args: vec!["9".into()],
            }],
        };
        let processes = vec![json!({ "pid": 7u32, "tag": "t", "cmd": "sleep", "args": ["9"] })];
        assert_same_json(&list, json!({ "processes": processes }));
        assert_same_json(
            &ProcessList { processes: vec![] },
            json!({ "processes": [] }),
        );
    }

    #[test]
    fn metrics_shape_is_unchanged() {
        let p = wrenn_proto::agent::v1::MetricPoint {
            unix: 1_700_000_000,
            cpu_pct: 12.3,
            mem_bytes: 1 << 30,
            disk_bytes: 5,
        };
        // Before: `json!` of the f32, which widens it to f64 (12.300000190734863).
        let old_point = json!({
            "timestamp_unix": p.unix,
            "cpu_pct": p.cpu_pct,
            "mem_bytes": p.mem_bytes,
            "disk_bytes": p.disk_bytes,
        });
        let m = CapsuleMetrics {
            sandbox_id: "cl-x".into(),
            range: "10m".into(),
            points: vec![MetricPoint::from(p)],
        };
        assert_same_json(
            &m,
            json!({ "sandbox_id": "cl-x", "range": "10m", "points": [old_point] }),
        );
    }
}
