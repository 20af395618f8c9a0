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
    capsules::lookup::running,
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    responses::{AgentFailed, HostUnavailable, Internal, Unauthorized},
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

/// The client's first text frame, or the message that refuses it.
fn parse_first(text: &str) -> std::result::Result<StartFrame, String> {
    serde_json::from_str::<StartFrame>(text).map_err(|e| format!("bad first message: {e}"))
}

/// The client's first text frame.
async fn first_frame(ws: &mut WebSocket) -> Option<StartFrame> {
    while let Some(Ok(msg)) = ws.recv().await {
        match msg {
            Message::Text(t) => {
                return match parse_first(&t) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        let err = json!({ "type": "error", "data": e, "fatal": true });
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

/// The exec a streamed exec's first frame asks for, or the message that refuses it.
fn exec_request(capsule: &str, start: StartFrame) -> std::result::Result<ExecRequest, String> {
    if start.kind != "start" || start.cmd.is_empty() {
        return Err("the first message must be {\"type\":\"start\",\"cmd\":…}".into());
    }
    Ok(ExecRequest {
        capsule_id: capsule.to_string(),
        cmd: start.cmd,
        args: start.args,
        env: start.envs,
        cwd: start.cwd,
        user: String::new(),
        timeout_ms: 0,
    })
}

/// The terminal a PTY socket's first frame asks for (its tag and the attach request; `new_tag`
/// names a new terminal), or the message that refuses it.
fn pty_request(
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
        let events = state.agent().exec_stream(req).await;
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

/// What a terminal's client asks for in a text frame after the first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Control {
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

fn parse_control(text: &str) -> Control {
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

#[cfg(test)]
mod tests {
    //! Property-based fuzzing of the sockets' message parsers (`PROPTEST_CASES` cases each).

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// A JSON value of any shape, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("type".to_string()),
                        Just("cmd".to_string()),
                        Just("cols".to_string()),
                        Just("tag".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The fields of a generated first frame.
    #[derive(Debug, Clone)]
    struct Fields {
        kind: String,
        cmd: String,
        args: Vec<String>,
        envs: HashMap<String, String>,
        cwd: String,
        cols: u32,
        rows: u32,
        tag: String,
    }

    /// A well-formed first frame, and the fields it carries.
    fn start_frame() -> impl Strategy<Value = (Value, Fields)> {
        (
            prop_oneof![
                Just("start".to_string()),
                Just("connect".to_string()),
                ".{0,8}"
            ],
            ".{0,16}",
            proptest::collection::vec(".{0,8}", 0..5),
            proptest::collection::hash_map("[A-Za-z_][A-Za-z0-9_]{0,8}", ".{0,8}", 0..4),
            ".{0,16}",
            any::<u32>(),
            any::<u32>(),
            ".{0,12}",
        )
            .prop_map(|(kind, cmd, args, envs, cwd, cols, rows, tag)| {
                let v = json!({
                    "type": kind, "cmd": cmd, "args": args, "envs": envs, "cwd": cwd,
                    "cols": cols, "rows": rows, "tag": tag,
                });
                let f = Fields {
                    kind,
                    cmd,
                    args,
                    envs,
                    cwd,
                    cols,
                    rows,
                    tag,
                };
                (v, f)
            })
    }

    proptest! {
        #[test]
        fn first_frames_of_any_text_are_parsed_or_refused(text in ".{0,64}", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for t in [text, String::from_utf8_lossy(&bytes).into_owned()] {
                match parse_first(&t) {
                    Ok(f) => {
                        // Whatever parsed is either a valid request or a clear refusal.
                        let _ = exec_request("cl-x", f);
                    }
                    Err(e) => prop_assert!(e.starts_with("bad first message: "), "{e}"),
                }
            }
        }

        #[test]
        fn first_frames_of_any_json_never_panic(v in any_json()) {
            let text = v.to_string();
            if let Ok(f) = parse_first(&text) {
                let kind = f.kind.clone();
                let cmd_empty = f.cmd.is_empty();
                let r = exec_request("cl-x", f);
                prop_assert_eq!(r.is_ok(), kind == "start" && !cmd_empty);
            }
            if let Ok(f) = parse_first(&text) {
                let kind = f.kind.clone();
                let has_tag = !f.tag.is_empty();
                match pty_request("cl-x", f, || "pty-new".into()) {
                    Ok((tag, req)) => {
                        prop_assert!(kind == "start" || (kind == "connect" && has_tag));
                        prop_assert_eq!(&req.tag, &tag);
                        prop_assert!(!tag.is_empty());
                    }
                    Err(e) => prop_assert!(e.starts_with("unexpected first message type"), "{e}"),
                }
            }
            if !v.is_object() && !v.is_array() {
                prop_assert!(parse_first(&text).is_err(), "{text}");
            }
        }

        #[test]
        fn exec_frames_carry_their_fields(
            (v, Fields { kind, cmd, args, envs, cwd, .. }) in start_frame()
        ) {
            let f = parse_first(&v.to_string()).expect("a well-formed frame parses");
            match exec_request("cl-abc", f) {
                Ok(req) => {
                    prop_assert!(kind == "start" && !cmd.is_empty());
                    prop_assert_eq!(req.capsule_id, "cl-abc");
                    prop_assert_eq!(req.cmd, cmd);
                    prop_assert_eq!(req.args, args);
                    prop_assert_eq!(req.env, envs);
                    prop_assert_eq!(req.cwd, cwd);
                    prop_assert_eq!(req.timeout_ms, 0);
                }
                Err(e) => {
                    prop_assert!(kind != "start" || cmd.is_empty());
                    prop_assert!(e.contains("\"start\""), "{e}");
                }
            }
        }

        #[test]
        fn pty_frames_carry_their_fields(
            (v, Fields { kind, cmd, args, envs, cwd, cols, rows, tag }) in start_frame()
        ) {
            let f = parse_first(&v.to_string()).expect("a well-formed frame parses");
            match (kind.as_str(), pty_request("cl-abc", f, || "pty-new".into())) {
                ("start", Ok((t, req))) => {
                    prop_assert_eq!(&t, "pty-new");
                    prop_assert_eq!(req.tag, t);
                    prop_assert_eq!(req.cmd, if cmd.is_empty() { "/bin/bash".to_string() } else { cmd });
                    prop_assert_eq!(req.args, args);
                    prop_assert_eq!(req.env, envs);
                    prop_assert_eq!(req.cwd, cwd);
                    prop_assert_eq!(req.cols, if cols == 0 { 80 } else { cols });
                    prop_assert_eq!(req.rows, if rows == 0 { 24 } else { rows });
                }
                ("connect", Ok((t, req))) => {
                    prop_assert!(!tag.is_empty());
                    prop_assert_eq!(&t, &tag);
                    prop_assert_eq!(req.tag, tag);
                    prop_assert_eq!(req.cmd, "");
                }
                ("connect", Err(_)) => prop_assert!(tag.is_empty()),
                (other, r) => prop_assert!(r.is_err(), "type {other:?} accepted"),
            }
        }

        #[test]
        fn control_frames(text in ".{0,48}", v in any_json(), cols in any::<u32>(), rows in any::<u32>()) {
            let _ = parse_control(&text);
            let c = parse_control(&v.to_string());
            if !v.is_object() && !v.is_array() {
                prop_assert_eq!(c, Control::Bad);
            }
            let resize = json!({ "type": "resize", "cols": cols, "rows": rows }).to_string();
            prop_assert_eq!(parse_control(&resize), Control::Resize { cols, rows });
            prop_assert_eq!(parse_control(r#"{"type":"kill"}"#), Control::Kill);
            prop_assert_eq!(parse_control(r#"{"type":"pong"}"#), Control::Other);
            // Out-of-range sizes are refused, not wrapped.
            let big = format!(r#"{{"type":"resize","cols":{},"rows":1}}"#, u64::from(cols) + (1 << 32));
            prop_assert_eq!(parse_control(&big), Control::Bad);
        }

        #[test]
        fn events_are_json_with_the_bytes(data in proptest::collection::vec(any::<u8>(), 0..256), pid in any::<u32>(), code in any::<i32>()) {
            let lossy = String::from_utf8_lossy(&data).into_owned();
            for (ev, kind) in [
                (exec_event::Event::Stdout(data.clone()), "stdout"),
                (exec_event::Event::Stderr(data.clone()), "stderr"),
                (exec_event::Event::Pty(data.clone()), "stderr"),
            ] {
                let v = event_json(ev).expect("an output event is sent");
                let back: Value = serde_json::from_str(&v.to_string()).unwrap();
                prop_assert_eq!(&back["type"], kind);
                prop_assert_eq!(back["data"].as_str(), Some(lossy.as_str()));
            }
            let start = event_json(exec_event::Event::Start(exec_event::Start { pid })).unwrap();
            prop_assert_eq!(&start["pid"], pid);
            let end = event_json(exec_event::Event::End(exec_event::End { exit_code: code, ..Default::default() })).unwrap();
            prop_assert_eq!(&end["exit_code"], code);
        }
    }
}
