//! `GET /v1/capsules/{id}/exec/stream` and `…/processes/{pid}/stream`: a streamed command,
//! and reattaching to a running process.

use axum::{
    extract::{ws::WebSocketUpgrade, Path, State},
    response::Response,
};
use serde_json::json;
use wrenn_proto::agent::v1::{connect_process_request, ConnectProcessRequest};

use super::*;
use crate::{
    capsules::lookup::running,
    db::Caller,
    error::{ErrorBody, Result},
    responses::{Authed, NoCapsule, NotRunning, OnHost},
    state::AppState,
};

/// Run a command, streamed (WebSocket)
///
/// A WebSocket (`GET` with `Upgrade: websocket`; same credentials as every call). Frames are
/// JSON text.
///
/// Client → server, once: `{"type":"start","cmd":"/bin/sh","args":["-c","…"],"envs":{…},"cwd":"…"}`
/// (`args`, `envs`, `cwd` optional).
///
/// Server → client, as the process runs:
/// `{"type":"start","pid":N}`, `{"type":"stdout","data":"…"}`, `{"type":"stderr","data":"…"}`
/// (text, invalid UTF-8 replaced), then `{"type":"exit","exit_code":N}` and a close. A failure is
/// `{"type":"error","data":"…"}` (a bad first frame adds `"fatal":true`) and ends the stream.
/// The process keeps running if the client goes.
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}/exec/stream",
    operation_id = "exec_stream",
    tag = "commands",
    params(crate::responses::CapsulePath),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; frames as described above"),
        (status = 400, description = "`invalid_request`: not a WebSocket handshake", body = ErrorBody),
        Authed, NoCapsule, NotRunning,
    )
)]
pub async fn exec_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let c = running(&state, &caller, &id).await?;
    // Its host is known reachable before the upgrade: `host_unavailable` is an HTTP answer.
    let mut agent = state.agent_for(&c).await?;
    Ok(upgrade
        .protocols([crate::accounts::auth::WS_PROTOCOL])
        .on_upgrade(move |mut ws| async move {
            let Some(start) = first_frame(&mut ws).await else {
                return;
            };
            if start.kind == "start" {
                if let Err(e) = check_start(&start) {
                    let _ = send_json(
                        &mut ws,
                        json!({ "type": "error", "data": e.public_message(), "fatal": true }),
                    )
                    .await;
                    return;
                }
            }
            let req = match exec_request(&c.id, start) {
                Ok(r) => r,
                Err(e) => {
                    let _ = send_json(&mut ws, json!({ "type": "error", "data": e })).await;
                    return;
                }
            };
            let _ = state.db.touch_capsule(&c.id).await;
            let events = agent.exec_stream(req).await;
            match events {
                Ok(r) => pump(ws, r.into_inner()).await,
                Err(s) => {
                    let _ = send_json(&mut ws, json!({ "type": "error", "data": shown(&s) })).await;
                }
            }
        }))
}

/// Attach to a process (WebSocket)
///
/// A WebSocket to a running process (by pid or tag): what it writes from now on (and what it
/// wrote recently), then its exit. The client sends nothing. Server → client, JSON text frames
/// as for `exec/stream`: `{"type":"start","pid":N}`, `{"type":"stdout","data":"…"}`,
/// `{"type":"stderr","data":"…"}`, `{"type":"exit","exit_code":N}`, or
/// `{"type":"error","data":"…"}`. The process keeps running if the client goes.
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}/processes/{pid}/stream",
    operation_id = "connect_process",
    tag = "commands",
    params(
        crate::responses::CapsulePath,
        ("pid" = String, Path, description = "A pid, or a process's tag"),
    ),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; frames as described above"),
        (status = 400, description = "`invalid_request`: not a WebSocket handshake", body = ErrorBody),
        OnHost, NotRunning,
        (status = 404, description = "`not_found`: no such capsule or process", body = ErrorBody),
    )
)]
pub async fn connect_process(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, pid)): Path<(String, String)>,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let c = running(&state, &caller, &id).await?;
    let selector = match pid.parse::<u32>() {
        Ok(pid) => connect_process_request::Selector::Pid(pid),
        Err(_) => connect_process_request::Selector::Tag(pid),
    };
    let events = state
        .agent_for(&c)
        .await?
        .connect_process(ConnectProcessRequest {
            capsule_id: c.id,
            selector: Some(selector),
        })
        .await?
        .into_inner();
    Ok(upgrade
        .protocols([crate::accounts::auth::WS_PROTOCOL])
        .on_upgrade(move |ws| pump(ws, events)))
}
