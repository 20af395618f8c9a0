//! WebSockets: a streamed exec, reattaching to a process, and terminals (PTY), as the SDK's
//! `commands.stream`, `commands.connect` and `capsule.pty` speak them. Events are JSON text
//! frames; terminal bytes travel as binary frames both ways.

use std::collections::HashMap;

use axum::{
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        Path, State,
    },
    response::Response,
};
use serde::Deserialize;
use serde_json::json;
use tonic::Streaming;
use wrenn_proto::agent::v1::{
    connect_process_request, exec_event, kill_process_request, ConnectProcessRequest, ExecEvent,
    ExecRequest, KillProcessRequest, PtyAttachRequest, PtyInputRequest, PtyResizeRequest,
};
use wrenn_types::{Id, IdKind};

use crate::{
    api_docs::{AgentFailed, HostUnavailable, Internal, Unauthorized},
    capsules::running,
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    state::AppState,
};

/// An agent error as a frame may carry it (no internal addresses).
fn shown(s: &tonic::Status) -> String {
    crate::error::redact(s.message()).into_owned()
}

/// The first frame's command and variables within bounds ([`crate::validate`]).
fn check_start(f: &StartFrame) -> Result<()> {
    crate::validate::command(&f.cmd, &f.args, Some(&f.cwd))?;
    crate::validate::envs("envs", &f.envs)
}

/// Agent events as the SDK's stream events (text frames).
fn event_json(ev: exec_event::Event) -> Option<serde_json::Value> {
    Some(match ev {
        exec_event::Event::Start(s) => json!({ "type": "start", "pid": s.pid }),
        exec_event::Event::Stdout(b) => {
            json!({ "type": "stdout", "data": String::from_utf8_lossy(&b) })
        }
        exec_event::Event::Stderr(b) | exec_event::Event::Pty(b) => {
            json!({ "type": "stderr", "data": String::from_utf8_lossy(&b) })
        }
        exec_event::Event::End(e) => json!({ "type": "exit", "exit_code": e.exit_code }),
    })
}

async fn send_json(ws: &mut WebSocket, v: serde_json::Value) -> bool {
    ws.send(Message::Text(v.to_string().into())).await.is_ok()
}

/// Forwards a process's events until it ends or the client goes; answers the client's pings.
async fn pump(mut ws: WebSocket, mut events: Streaming<ExecEvent>) {
    loop {
        tokio::select! {
            ev = events.message() => match ev {
                Ok(Some(ExecEvent { event: Some(ev) })) => {
                    let end = matches!(ev, exec_event::Event::End(_));
                    if let Some(v) = event_json(ev) {
                        if !send_json(&mut ws, v).await {
                            return;
                        }
                    }
                    if end {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(s) => {
                    let _ = send_json(&mut ws, json!({ "type": "error", "data": shown(&s) })).await;
                    break;
                }
            },
            msg = ws.recv() => match msg {
                // The process keeps running when the client goes.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {} // pings are answered by the socket itself
            },
        }
    }
    let _ = ws.send(Message::Close(None)).await;
}

#[derive(Debug, Deserialize)]
struct StartFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: HashMap<String, String>,
    #[serde(default)]
    cwd: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    cols: u32,
    #[serde(default)]
    rows: u32,
}

/// The client's first text frame.
async fn first_frame(ws: &mut WebSocket) -> Option<StartFrame> {
    while let Some(Ok(msg)) = ws.recv().await {
        match msg {
            Message::Text(t) => {
                return match serde_json::from_str::<StartFrame>(&t) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        let err = json!({ "type": "error", "data": format!("bad first message: {e}"), "fatal": true });
                        let _ = send_json(ws, err).await;
                        None
                    }
                };
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}

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
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; frames as described above"),
        (status = 400, description = "`invalid_request`: not a WebSocket handshake", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn exec_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let c = running(&state, &caller, &id).await?;
    Ok(upgrade.on_upgrade(move |mut ws| async move {
        let Some(start) = first_frame(&mut ws).await else {
            return;
        };
        if start.kind != "start" || start.cmd.is_empty() {
            let _ = send_json(&mut ws, json!({ "type": "error", "data": "the first message must be {\"type\":\"start\",\"cmd\":…}" })).await;
            return;
        }
        if let Err(e) = check_start(&start) {
            let _ = send_json(&mut ws, json!({ "type": "error", "data": e.public_message(), "fatal": true })).await;
            return;
        }
        let _ = state.db.touch_capsule(&c.id).await;
        let events = state
            .agent()
            .exec_stream(ExecRequest {
                capsule_id: c.id.clone(),
                cmd: start.cmd,
                args: start.args,
                env: start.envs,
                cwd: start.cwd,
                user: String::new(),
                timeout_ms: 0,
            })
            .await;
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
        ("id" = String, Path, description = "Capsule id (`cl-…`)"),
        ("pid" = String, Path, description = "A pid, or a process's tag"),
    ),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; frames as described above"),
        (status = 400, description = "`invalid_request`: not a WebSocket handshake", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule or process", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
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
        .agent()
        .connect_process(ConnectProcessRequest {
            capsule_id: c.id,
            selector: Some(selector),
        })
        .await?
        .into_inner();
    Ok(upgrade.on_upgrade(move |ws| pump(ws, events)))
}

#[derive(Debug, Deserialize)]
struct ControlFrame {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    cols: u32,
    #[serde(default)]
    rows: u32,
}

/// Open a terminal (WebSocket)
///
/// A WebSocket to a terminal (PTY) in the capsule. Binary frames carry the terminal's bytes
/// both ways (client → server: keystrokes; server → client: screen output). Control frames are
/// JSON text.
///
/// Client → server, first: `{"type":"start","cmd":"/bin/bash","args":[…],"envs":{…},"cwd":"…",
/// "cols":80,"rows":24}` (all but `type` optional; 0 means the default) or
/// `{"type":"connect","tag":"pty-…"}` to reattach (the screen so far is replayed). Then:
/// `{"type":"resize","cols":C,"rows":R}`, `{"type":"kill"}`, and `{"type":"pong"}` after each
/// ping.
///
/// Server → client: `{"type":"started","tag":"pty-…","pid":N}`, binary output,
/// `{"type":"ping"}` every 20 s, `{"type":"exit","exit_code":N}` at the end, and
/// `{"type":"error","data":"…","fatal":bool}` (fatal ends the session). The terminal keeps
/// running when the client goes: reattach with its tag.
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}/pty",
    operation_id = "pty",
    tag = "commands",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; frames as described above"),
        (status = 400, description = "`invalid_request`: not a WebSocket handshake", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn pty(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let c = running(&state, &caller, &id).await?;
    Ok(upgrade.on_upgrade(move |ws| async move {
        if let Err(e) = terminal(ws, state, c.id).await {
            tracing::debug!(error = %e, "terminal session ended with an error");
        }
    }))
}

async fn terminal(mut ws: WebSocket, state: AppState, capsule: String) -> Result<()> {
    let Some(first) = first_frame(&mut ws).await else {
        return Ok(());
    };
    let fatal = |m: String| json!({ "type": "error", "data": m, "fatal": true });
    let (tag, req) = match first.kind.as_str() {
        "start" => {
            if let Err(e) = check_start(&first) {
                let _ = send_json(&mut ws, fatal(e.public_message())).await;
                return Ok(());
            }
            let tag = format!("pty-{}", &Id::new(IdKind::Build).to_string()[4..12]);
            let cmd = if first.cmd.is_empty() {
                "/bin/bash".to_string()
            } else {
                first.cmd
            };
            let req = PtyAttachRequest {
                capsule_id: capsule.clone(),
                tag: tag.clone(),
                cmd,
                args: first.args,
                env: first.envs,
                cwd: first.cwd,
                user: String::new(),
                cols: if first.cols == 0 { 80 } else { first.cols },
                rows: if first.rows == 0 { 24 } else { first.rows },
            };
            (tag, req)
        }
        "connect" if !first.tag.is_empty() => {
            let req = PtyAttachRequest {
                capsule_id: capsule.clone(),
                tag: first.tag.clone(),
                ..Default::default()
            };
            (first.tag, req)
        }
        other => {
            let _ = send_json(
                &mut ws,
                fatal(format!("unexpected first message type {other:?}")),
            )
            .await;
            return Ok(());
        }
    };
    let mut agent = state.agent();
    let mut events = match agent.pty_attach(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let _ = send_json(&mut ws, fatal(shown(&s))).await;
            return Ok(());
        }
    };
    let mut ping = tokio::time::interval(std::time::Duration::from_secs(20));
    ping.tick().await;
    loop {
        tokio::select! {
            ev = events.message() => match ev {
                Ok(Some(ExecEvent { event: Some(ev) })) => match ev {
                    exec_event::Event::Start(s) => {
                        if !send_json(&mut ws, json!({ "type": "started", "tag": tag, "pid": s.pid })).await {
                            return Ok(());
                        }
                    }
                    exec_event::Event::Pty(b) | exec_event::Event::Stdout(b) | exec_event::Event::Stderr(b) => {
                        if ws.send(Message::Binary(b.into())).await.is_err() {
                            return Ok(());
                        }
                    }
                    exec_event::Event::End(e) => {
                        let _ = send_json(&mut ws, json!({ "type": "exit", "exit_code": e.exit_code })).await;
                        break;
                    }
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(s) => {
                    let _ = send_json(&mut ws, fatal(shown(&s))).await;
                    break;
                }
            },
            msg = ws.recv() => match msg {
                // The terminal keeps running when the client goes (reattach by tag).
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(Message::Binary(data))) => {
                    agent.pty_input(PtyInputRequest {
                        capsule_id: capsule.clone(),
                        tag: tag.clone(),
                        data: data.to_vec(),
                    }).await.map_err(ApiError::from)?;
                }
                Some(Ok(Message::Text(t))) => {
                    let Ok(ctl) = serde_json::from_str::<ControlFrame>(&t) else {
                        let _ = send_json(&mut ws, json!({ "type": "error", "data": "bad control message", "fatal": false })).await;
                        continue;
                    };
                    match ctl.kind.as_str() {
                        "resize" => {
                            if let Err(s) = agent.pty_resize(PtyResizeRequest {
                                capsule_id: capsule.clone(),
                                tag: tag.clone(),
                                cols: ctl.cols,
                                rows: ctl.rows,
                            }).await {
                                let _ = send_json(&mut ws, json!({ "type": "error", "data": shown(&s), "fatal": false })).await;
                            }
                        }
                        "kill" => {
                            let _ = agent.kill_process(KillProcessRequest {
                                capsule_id: capsule.clone(),
                                selector: Some(kill_process_request::Selector::Tag(tag.clone())),
                                signal: "SIGKILL".into(),
                            }).await;
                        }
                        _ => {} // pong and anything else
                    }
                }
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if !send_json(&mut ws, json!({ "type": "ping" })).await {
                    return Ok(());
                }
            }
        }
    }
    let _ = ws.send(Message::Close(None)).await;
    Ok(())
}
