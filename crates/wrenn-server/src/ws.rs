//! WebSockets: a streamed exec, reattaching to a process, and terminals (PTY), as the SDK's
//! `commands.stream`, `commands.connect` and `capsule.pty` speak them. Events are JSON text
//! frames; terminal bytes travel as binary frames both ways.

pub mod exec;
pub mod terminal;

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket};
use serde::Deserialize;
use serde_json::json;
use tonic::Streaming;
use wrenn_proto::agent::v1::{exec_event, ExecEvent, ExecRequest};

use crate::error::Result;

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

#[cfg(test)]
mod tests {
    //! Property-based fuzzing of the sockets' message parsers (`PROPTEST_CASES` cases each).

    use proptest::prelude::*;
    use serde_json::Value;

    use super::{terminal::*, *};

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
