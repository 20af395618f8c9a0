//! One sandbox's E2B routes: create, get, kill, timeout, pause, connect (resume), metrics. Each
//! calls the capsule handlers themselves, so a sandbox is made, changed, audited and announced
//! exactly as a capsule is.

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::de::DeserializeOwned;
use wrenn_types::CapsuleStatus;

use super::model::{self, *};
use crate::{
    capsules::{create::CreateCapsuleBody, lifecycle, lookup::live},
    db::{now_ms, Caller, CapsuleRow, E2bLifetime},
    error::{ApiError, Result},
    extract::JsonBody,
    state::AppState,
};

/// A JSON body; an empty one is `T::default()` when `empty_ok`.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes, empty_ok: bool) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            return Ok(T::default());
        }
        return Err(ApiError::InvalidRequest("a JSON body is required".into()));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

/// A lifetime in seconds, checked.
fn timeout(secs: Option<u64>) -> Result<u64> {
    match secs.unwrap_or(DEFAULT_TIMEOUT_SECS) {
        t @ 1..=MAX_TIMEOUT_SECS => Ok(t),
        t => Err(ApiError::InvalidRequest(format!(
            "timeout must be 1..={MAX_TIMEOUT_SECS} seconds, not {t}"
        ))),
    }
}

/// Unix ms `secs` from now.
fn from_now(secs: u64) -> i64 {
    now_ms().saturating_add(
        i64::try_from(secs)
            .unwrap_or(i64::MAX / 2)
            .saturating_mul(1000),
    )
}

/// The Wrenn template an E2B template name stands for (E2B's default `base` is Wrenn's
/// default, `minimal`).
fn template_of(name: &str) -> String {
    if name == super::DEFAULT_TEMPLATE {
        "minimal".into()
    } else {
        name.into()
    }
}

/// Create a sandbox: `201` and its `Sandbox` once envd answers through the proxy.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response> {
    let b: NewSandbox = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid create body: {e}")))?;
    if let Some(what) = b.unsupported() {
        return Err(ApiError::InvalidRequest(format!(
            "{what} is not supported by this server"
        )));
    }
    let secs = timeout(b.timeout)?;
    let wrenn = CreateCapsuleBody {
        template: Some(template_of(&b.template_id)),
        vcpus: None,
        memory_mb: None,
        // E2B's lifetime is a deadline the control plane keeps (`deadline`), not an idle
        // timeout: the host's own idle timeout is off.
        timeout_sec: Some(0),
        disk_size_mb: None,
        metadata: b.metadata,
        envs: b.env_vars,
        egress: b.allow_internet_access,
        egress_allow: None,
        egress_deny: None,
        public: None,
        host_tags: None,
        host_id: None,
    };
    let (_, Json(made)) =
        crate::capsules::create::create(State(state.clone()), caller.clone(), JsonBody(wrenn))
            .await?;
    let id = made.capsule.id;
    let life = E2bLifetime {
        end_at: from_now(secs),
        auto_pause: b.auto_pause.unwrap_or(false),
    };
    let answered = async {
        state.db.set_e2b_lifetime(&id, life).await?;
        let row = state.db.capsule(&caller.team_id, &id).await?;
        let token = super::envd_token(&state, &row).await?;
        Ok::<_, ApiError>(model::sandbox(
            &row,
            token,
            &super::sandbox_domain(&state, &headers),
        ))
    }
    .await;
    match answered {
        Ok(s) => Ok((StatusCode::CREATED, Json(s)).into_response()),
        Err(e) => {
            // Never a sandbox the caller was not told about.
            let _ = lifecycle::destroy(State(state), caller, Path(id)).await;
            Err(e)
        }
    }
}

/// The caller's sandbox `id` with an E2B state, or `not_found`.
async fn shown(state: &AppState, caller: &Caller, id: &str) -> Result<(CapsuleRow, &'static str)> {
    let c = live(state, caller, id).await?;
    match state_of(c.status) {
        Some(s) => Ok((c, s)),
        None => Err(ApiError::NotFound(format!("sandbox {id} not found"))),
    }
}

/// A sandbox's details.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SandboxDetail>> {
    let (c, _) = shown(&state, &caller, &id).await?;
    let life = state.db.e2b_lifetime(&c.id).await?;
    model::detail(&c, life, &super::sandbox_domain(&state, &headers))
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("sandbox {id} not found")))
}

/// Kill a sandbox (running or paused): `204`, or `404` when it is already gone.
pub async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    lifecycle::destroy(State(state), caller, Path(id)).await
}

/// Set a sandbox's deadline to `timeout` seconds from now (shorter or longer).
pub async fn set_timeout(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<StatusCode> {
    let (c, _) = shown(&state, &caller, &id).await?;
    let b: TimeoutBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid timeout body: {e}")))?;
    let secs = timeout(Some(b.timeout))?;
    let auto_pause = state
        .db
        .e2b_lifetime(&c.id)
        .await?
        .is_some_and(|l| l.auto_pause);
    state
        .db
        .set_e2b_lifetime(
            &c.id,
            E2bLifetime {
                end_at: from_now(secs),
                auto_pause,
            },
        )
        .await?;
    state
        .db
        .audit(
            &caller,
            "capsule.timeout",
            ("capsule", &c.id),
            "success",
            "",
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a sandbox (memory, files and processes kept): `204`; `409` when already paused.
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<StatusCode> {
    let (c, state_now) = shown(&state, &caller, &id).await?;
    let b: PauseBody = body(&bytes, true)?;
    if b.memory == Some(false) {
        return Err(ApiError::InvalidRequest(
            "a filesystem-only pause (memory=false) is not supported by this server".into(),
        ));
    }
    if state_now == "paused" {
        return Err(ApiError::InvalidState(format!(
            "sandbox {} is already paused",
            c.id
        )));
    }
    let _ = lifecycle::pause(State(state), caller, Path(c.id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connect to a sandbox: `200` when it runs (its deadline only extended), `201` when it was
/// paused and is resumed (its deadline `timeout` from now).
pub async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let b: ConnectBody = body(&bytes, true)?;
    if b.memory == Some(false) {
        return Err(ApiError::InvalidRequest(
            "a reboot on resume (memory=false) is not supported by this server".into(),
        ));
    }
    let secs = timeout(b.timeout)?;
    let c = live(&state, &caller, &id).await?;
    let life = state.db.e2b_lifetime(&c.id).await?;
    let status = match c.status {
        CapsuleStatus::Running => {
            if let Some(l) = life {
                let end_at = l.end_at.max(from_now(secs));
                state
                    .db
                    .set_e2b_lifetime(&c.id, E2bLifetime { end_at, ..l })
                    .await?;
            }
            StatusCode::OK
        }
        CapsuleStatus::Paused => {
            let _ =
                lifecycle::resume(State(state.clone()), caller.clone(), Path(c.id.clone())).await?;
            if let Some(l) = life {
                let end_at = from_now(secs);
                state
                    .db
                    .set_e2b_lifetime(&c.id, E2bLifetime { end_at, ..l })
                    .await?;
            }
            StatusCode::CREATED
        }
        other => {
            return Err(ApiError::InvalidState(format!(
                "sandbox {} is {other}, neither running nor paused",
                c.id
            )))
        }
    };
    let row = state.db.capsule(&caller.team_id, &c.id).await?;
    let token = super::envd_token(&state, &row).await?;
    let s = model::sandbox(&row, token, &super::sandbox_domain(&state, &headers));
    Ok((status, Json(s)).into_response())
}

/// The v1 resume: a connect that must find the sandbox paused (`409` when it runs).
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let (c, now) = shown(&state, &caller, &id).await?;
    if now == "running" {
        return Err(ApiError::InvalidState(format!(
            "sandbox {} is already running",
            c.id
        )));
    }
    connect(State(state), caller, headers, Path(id), bytes).await
}

/// A sandbox's metrics between `start` and `end` (Unix seconds), oldest first.
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Vec<SandboxMetric>>> {
    let unix = |name: &str| -> Result<Option<i64>> {
        q.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::InvalidRequest(format!("{name} must be Unix seconds, not {v:?}"))
                })
            })
            .transpose()
    };
    let (start, end) = (unix("start")?, unix("end")?);
    let (c, _) = shown(&state, &caller, &id).await?;
    let now = now_ms() / 1000;
    // The agent keeps a day of samples.
    let secs = start.map_or(600, |s| (now - s).clamp(60, 24 * 3600));
    let points =
        crate::capsules::metrics::samples(&state, &c, u32::try_from(secs).unwrap_or(600)).await?;
    let mut out: Vec<SandboxMetric> = points
        .iter()
        .filter(|p| start.is_none_or(|s| p.unix >= s) && end.is_none_or(|e| p.unix <= e))
        .map(|p| model::metric(&c, p))
        .collect();
    out.sort_by_key(|m| m.timestamp_unix);
    Ok(Json(out))
}
