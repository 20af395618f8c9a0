//! Commands and processes in a running capsule.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    Json,
};
use base64::Engine;
use wrenn_proto::agent::v1::{
    kill_process_request, CapsuleRef, ExecRequest, KillProcessRequest, StartBackgroundRequest,
};
use wrenn_types::{Id, IdKind};

use super::lookup::running;
use crate::extract::JsonBody;
use crate::{
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    responses::{CheckedOnHost, NoCapsule, NotRunning, OnHost},
    state::AppState,
};
pub use wrenn_types::api::capsules::{
    BackgroundProcess, ExecBody, ExecResult, OutputEncoding, ProcessInfo, ProcessList,
};

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
    params(crate::responses::CapsulePath),
    request_body = ExecBody,
    responses(
        (status = 200, description = "Foreground: the command ran to its end", body = ExecResult),
        (status = 202, description = "Background: the command started", body = BackgroundProcess),
        CheckedOnHost, NoCapsule, NotRunning,
    )
)]
pub async fn exec(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ExecBody>,
) -> Result<axum::response::Response> {
    if b.cmd.trim().is_empty() {
        return Err(ApiError::InvalidRequest("cmd is empty".into()));
    }
    crate::validate::command(&b.cmd, &b.args, b.cwd.as_deref())?;
    if let Some(envs) = &b.envs {
        crate::validate::envs("envs", envs)?;
    }
    let c = running(&state, &caller, &id).await?;
    let mut agent = state.agent_for(&c).await?;
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

/// List processes
///
/// The capsule's running processes (those started through the API and envd).
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}/processes",
    operation_id = "list_processes",
    tag = "commands",
    params(crate::responses::CapsulePath),
    responses(
        (status = 200, description = "Its processes", body = ProcessList),
        OnHost, NoCapsule, NotRunning,
    )
)]
pub async fn processes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ProcessList>> {
    let c = running(&state, &caller, &id).await?;
    let list = state
        .agent_for(&c)
        .await?
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
        crate::responses::CapsulePath,
        ("pid" = String, Path, description = "A pid, or a process's tag"),
    ),
    responses(
        (status = 204, description = "Killed"),
        OnHost, NotRunning,
        (status = 404, description = "`not_found`: no such capsule or process", body = ErrorBody),
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
        .agent_for(&c)
        .await?
        .kill_process(KillProcessRequest {
            capsule_id: c.id,
            selector: Some(selector),
            signal: "SIGKILL".into(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
