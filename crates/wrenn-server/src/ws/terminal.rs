//! `GET /v1/capsules/{id}/pty`: a terminal, bytes as binary frames both ways.

use axum::{
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        Path, State,
    },
    response::Response,
};
use serde::Deserialize;
use serde_json::json;
use tonic::transport::Channel;
use wrenn_proto::agent::v1::agent_client::AgentClient;
use wrenn_proto::agent::v1::{
    exec_event, kill_process_request, ExecEvent, KillProcessRequest, PtyAttachRequest,
    PtyInputRequest, PtyResizeRequest,
};
use wrenn_types::{Id, IdKind};

use super::*;
use crate::{
    capsules::lookup::running,
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    responses::{Authed, NoCapsule, NotRunning},
    state::AppState,
};

/// The terminal a PTY socket's first frame asks for (its tag and the attach request; `new_tag`
/// names a new terminal), or the message that refuses it.
pub(super) fn pty_request(
    capsule: &str,
    first: StartFrame,
    new_tag: impl FnOnce() -> String,
) -> std::result::Result<(String, PtyAttachRequest), String> {
    match first.kind.as_str() {
        "start" => {
            let tag = new_tag();
            let cmd = if first.cmd.is_empty() {
                "/bin/bash".to_string()
            } else {
                first.cmd
            };
            let req = PtyAttachRequest {
                capsule_id: capsule.to_string(),
                tag: tag.clone(),
                cmd,
                args: first.args,
                env: first.envs,
                cwd: first.cwd,
                user: String::new(),
                cols: if first.cols == 0 { 80 } else { first.cols },
                rows: if first.rows == 0 { 24 } else { first.rows },
            };
            Ok((tag, req))
        }
        "connect" if !first.tag.is_empty() => {
            let req = PtyAttachRequest {
                capsule_id: capsule.to_string(),
                tag: first.tag.clone(),
                ..Default::default()
            };
            Ok((first.tag, req))
        }
        other => Err(format!("unexpected first message type {other:?}")),
    }
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

/// What a terminal's client asks for in a text frame after the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Control {
    Resize {
        cols: u32,
        rows: u32,
    },
    Kill,
    /// `pong` and any other type: ignored.
    Other,
    /// Not a control message (answered with a non-fatal error).
    Bad,
}

pub(super) fn parse_control(text: &str) -> Control {
    match serde_json::from_str::<ControlFrame>(text) {
        Err(_) => Control::Bad,
        Ok(c) => match c.kind.as_str() {
            "resize" => Control::Resize {
                cols: c.cols,
                rows: c.rows,
            },
            "kill" => Control::Kill,
            _ => Control::Other,
        },
    }
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
    params(crate::responses::CapsulePath),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol; frames as described above"),
        (status = 400, description = "`invalid_request`: not a WebSocket handshake", body = ErrorBody),
        Authed, NoCapsule, NotRunning,
    )
)]
pub async fn pty(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let c = running(&state, &caller, &id).await?;
    // Its host is known reachable before the upgrade: `host_unavailable` is an HTTP answer.
    let agent = state.agent_for(&c).await?;
    Ok(upgrade
        .protocols([crate::accounts::auth::WS_PROTOCOL])
        .on_upgrade(move |ws| async move {
            if let Err(e) = terminal(ws, agent, c.id).await {
                tracing::debug!(error = %e, "terminal session ended with an error");
            }
        }))
}

async fn terminal(
    mut ws: WebSocket,
    mut agent: AgentClient<Channel>,
    capsule: String,
) -> Result<()> {
    let Some(first) = first_frame(&mut ws).await else {
        return Ok(());
    };
    let fatal = |m: String| json!({ "type": "error", "data": m, "fatal": true });
    if first.kind == "start" {
        if let Err(e) = check_start(&first) {
            let _ = send_json(&mut ws, fatal(e.public_message())).await;
            return Ok(());
        }
    }
    let new_tag = || format!("pty-{}", &Id::new(IdKind::Build).to_string()[4..12]);
    let (tag, req) = match pty_request(&capsule, first, new_tag) {
        Ok(r) => r,
        Err(e) => {
            let _ = send_json(&mut ws, fatal(e)).await;
            return Ok(());
        }
    };
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
                Some(Ok(Message::Text(t))) => match parse_control(&t) {
                    Control::Bad => {
                        let _ = send_json(&mut ws, json!({ "type": "error", "data": "bad control message", "fatal": false })).await;
                    }
                    Control::Resize { cols, rows } => {
                        if let Err(s) = agent.pty_resize(PtyResizeRequest {
                            capsule_id: capsule.clone(),
                            tag: tag.clone(),
                            cols,
                            rows,
                        }).await {
                            let _ = send_json(&mut ws, json!({ "type": "error", "data": shown(&s), "fatal": false })).await;
                        }
                    }
                    Control::Kill => {
                        let _ = agent.kill_process(KillProcessRequest {
                            capsule_id: capsule.clone(),
                            selector: Some(kill_process_request::Selector::Tag(tag.clone())),
                            signal: "SIGKILL".into(),
                        }).await;
                    }
                    Control::Other => {} // pong and anything else
                },
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
