//! `/v1/capsules`: lifecycle, exec, processes, metrics.

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    Json,
};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use wrenn_proto::agent::v1::{
    kill_process_request, CapsuleRef, CapsuleState as PbState, CreateCapsuleRequest, ExecRequest,
    GetMetricsRequest, KillProcessRequest, StartBackgroundRequest,
};
use wrenn_types::{Id, IdKind};

use crate::{
    db::{now_ms, Caller, CapsuleRow},
    error::{ApiError, Result},
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

/// A capsule as the API shows it.
pub fn capsule_json(c: &CapsuleRow) -> Value {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    template: Option<String>,
    vcpus: Option<u32>,
    memory_mb: Option<u32>,
    timeout_sec: Option<u32>,
    disk_size_mb: Option<u32>,
    metadata: Option<HashMap<String, String>>,
    envs: Option<HashMap<String, String>>,
    /// Internet access (default on).
    egress: Option<bool>,
    /// Its ports are open to anyone through the proxy (default: API key or access token).
    public: Option<bool>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: std::result::Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse> {
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
    // A team's snapshot template (its shape is fixed), else a platform template.
    let (agent_template, vcpus, memory) =
        match state.db.template(&caller.team_id, &template).await? {
            Some(t) => (t.agent_name, 0, 0),
            None => (
                template.clone(),
                b.vcpus.unwrap_or(0),
                b.memory_mb.unwrap_or(0),
            ),
        };
    let mut agent = state.agent();
    let made = agent
        .create_capsule(CreateCapsuleRequest {
            template: agent_template,
            env_vars: b.envs.unwrap_or_default(),
            metadata: b.metadata.clone().unwrap_or_default(),
            egress: b.egress.unwrap_or(true),
            timeout_secs: b.timeout_sec.unwrap_or(0),
            on_timeout: 0,
            vcpus,
            memory_mib: memory,
            disk_mib: b.disk_size_mb.unwrap_or(0),
        })
        .await
        .map_err(ApiError::from)?
        .into_inner();
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
    if let Err(e) = state.db.insert_capsule(&row).await {
        // Never a capsule the database does not know.
        let _ = agent
            .destroy_capsule(CapsuleRef {
                id: made.id.clone(),
            })
            .await;
        return Err(e);
    }
    let public = b.public.unwrap_or(false);
    let (token, token_hash) = crate::proxy::new_token();
    state
        .db
        .set_capsule_access(&row.id, public, &token_hash)
        .await?;
    let _ = state
        .db
        .audit(
            &caller,
            "capsule.create",
            ("capsule", &row.id),
            "success",
            "",
        )
        .await;
    let body = capsule_json(&row);
    publish(
        &state,
        Event::capsule(&caller, "capsule.create", &row.id, body.clone()),
    );
    // The proxy's access token is shown once, here.
    let mut shown = body;
    shown["public"] = json!(public);
    shown["access_token"] = json!(token);
    Ok((StatusCode::CREATED, Json(shown)))
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>> {
    let rows = state.db.capsules(&caller.team_id).await?;
    Ok(Json(Value::Array(rows.iter().map(capsule_json).collect())))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(capsule_json(&live(&state, &caller, &id).await?)))
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

pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let c = live(&state, &caller, &id).await?;
    let pb = state
        .agent()
        .pause_capsule(CapsuleRef { id: c.id.clone() })
        .await?
        .into_inner();
    record_state(&state, &c.id, &pb, false).await?;
    let row = state.db.capsule(&caller.team_id, &c.id).await?;
    let _ = state
        .db
        .audit(&caller, "capsule.pause", ("capsule", &c.id), "success", "")
        .await;
    let body = capsule_json(&row);
    publish(
        &state,
        Event::capsule(&caller, "capsule.pause", &c.id, body.clone()),
    );
    Ok(Json(body))
}

pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let c = live(&state, &caller, &id).await?;
    let pb = state
        .agent()
        .resume_capsule(CapsuleRef { id: c.id.clone() })
        .await?
        .into_inner();
    record_state(&state, &c.id, &pb, true).await?;
    let row = state.db.capsule(&caller.team_id, &c.id).await?;
    let _ = state
        .db
        .audit(&caller, "capsule.resume", ("capsule", &c.id), "success", "")
        .await;
    let body = capsule_json(&row);
    publish(
        &state,
        Event::capsule(&caller, "capsule.resume", &c.id, body.clone()),
    );
    Ok(Json(body))
}

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
    let _ = state
        .db
        .audit(
            &caller,
            "capsule.destroy",
            ("capsule", &c.id),
            "success",
            "",
        )
        .await;
    let mut row = c;
    row.status = "stopped".into();
    publish(
        &state,
        Event::capsule(&caller, "capsule.destroy", &row.id, capsule_json(&row)),
    );
    Ok(StatusCode::NO_CONTENT)
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    background: bool,
    timeout_sec: Option<u32>,
    envs: Option<HashMap<String, String>>,
    cwd: Option<String>,
    tag: Option<String>,
    user: Option<String>,
}

/// Foreground commands without a timeout get this one.
const DEFAULT_EXEC_TIMEOUT_SECS: u32 = 60;

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
        let body =
            json!({ "pid": started.pid, "tag": started.tag, "sandbox_id": c.id, "cmd": b.cmd });
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
        (Some(o), Some(e)) => (o, e, "utf-8"),
        _ => {
            let b64 = base64::engine::general_purpose::STANDARD;
            (b64.encode(&out.stdout), b64.encode(&out.stderr), "base64")
        }
    };
    let body = json!({
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": out.exit_code,
        "duration_ms": out.duration_ms,
        "encoding": encoding,
        "error": (!out.error.is_empty()).then_some(out.error),
        "sandbox_id": c.id,
        "cmd": b.cmd,
    });
    Ok(Json(body).into_response())
}

pub async fn processes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let c = running(&state, &caller, &id).await?;
    let list = state
        .agent()
        .list_processes(CapsuleRef { id: c.id })
        .await?
        .into_inner();
    let processes: Vec<Value> = list
        .processes
        .into_iter()
        .map(|p| json!({ "pid": p.pid, "tag": p.tag, "cmd": p.cmd, "args": p.args }))
        .collect();
    Ok(Json(json!({ "processes": processes })))
}

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

#[derive(Debug, Deserialize)]
pub struct MetricsQuery {
    range: Option<String>,
}

pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: std::result::Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
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
    let points: Vec<Value> = points
        .into_iter()
        .map(|p| {
            json!({
                "timestamp_unix": p.unix,
                "cpu_pct": p.cpu_pct,
                "mem_bytes": p.mem_bytes,
                "disk_bytes": p.disk_bytes,
            })
        })
        .collect();
    Ok(Json(
        json!({ "sandbox_id": c.id, "range": range, "points": points }),
    ))
}
