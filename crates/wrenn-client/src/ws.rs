//! The WebSockets: a streamed exec (`/exec/stream`), reattaching to a process
//! (`/processes/{pid}/stream`) and terminals (`/pty`). The handshake is a GET on the API's
//! origin (`ws://` or `wss://` from the base URL) with the `X-API-Key` header. Exec events are
//! JSON text frames; terminal bytes are binary frames both ways, control frames JSON text.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, http::HeaderValue, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::{Client, ClientError, Result, API_KEY_HEADER};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An event of a streamed process.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Start {
        pid: u32,
    },
    Stdout(String),
    Stderr(String),
    /// The last event of a process that ran to its end.
    Exit {
        exit_code: i32,
    },
    /// The last event of a stream that failed.
    Error(String),
    /// A frame of a type this crate does not know (the JSON as it came).
    Other(Value),
}

impl StreamEvent {
    fn parse(text: &str) -> StreamEvent {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return StreamEvent::Error(format!("not JSON: {text}"));
        };
        let data = || v["data"].as_str().unwrap_or_default().to_string();
        match v["type"].as_str().unwrap_or_default() {
            "start" => StreamEvent::Start {
                pid: v["pid"].as_u64().unwrap_or(0) as u32,
            },
            "stdout" => StreamEvent::Stdout(data()),
            "stderr" => StreamEvent::Stderr(data()),
            "exit" => StreamEvent::Exit {
                exit_code: v["exit_code"].as_i64().map_or(-1, |c| c as i32),
            },
            "error" => StreamEvent::Error(data()),
            _ => StreamEvent::Other(v),
        }
    }

    fn ends(&self) -> bool {
        matches!(self, StreamEvent::Exit { .. } | StreamEvent::Error(_))
    }
}

/// A process's events as they happen. Dropping it detaches (the process keeps running).
pub struct ExecStream {
    ws: Socket,
    done: bool,
}

impl ExecStream {
    /// The next event; `None` after `exit`/`error` or when the server closes.
    pub async fn next(&mut self) -> Option<Result<StreamEvent>> {
        if self.done {
            return None;
        }
        loop {
            match self.ws.next().await {
                None | Some(Ok(Message::Close(_))) => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
                Some(Ok(Message::Text(t))) => {
                    let ev = StreamEvent::parse(&t);
                    self.done = ev.ends();
                    return Some(Ok(ev));
                }
                Some(Ok(_)) => {} // pings are answered by the socket itself
            }
        }
    }

    /// Closes the socket (the process keeps running).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// How to start a terminal.
#[derive(Debug, Clone)]
pub struct PtyStart {
    /// Default `/bin/bash`.
    pub cmd: Option<String>,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub cols: u16,
    pub rows: u16,
}

impl Default for PtyStart {
    fn default() -> PtyStart {
        PtyStart {
            cmd: None,
            args: Vec::new(),
            envs: BTreeMap::new(),
            cwd: None,
            cols: 80,
            rows: 24,
        }
    }
}

impl PtyStart {
    fn frame(&self) -> Value {
        let mut v = json!({
            "type": "start",
            "cmd": self.cmd.as_deref().unwrap_or("/bin/bash"),
            "cols": self.cols,
            "rows": self.rows,
        });
        if !self.args.is_empty() {
            v["args"] = json!(self.args);
        }
        if !self.envs.is_empty() {
            v["envs"] = json!(self.envs);
        }
        if let Some(cwd) = self.cwd.as_deref().filter(|c| !c.is_empty()) {
            v["cwd"] = json!(cwd);
        }
        v
    }
}

/// What a terminal sends.
#[derive(Debug, Clone, PartialEq)]
pub enum PtyEvent {
    /// The terminal's process started (its tag reattaches to it).
    Started { tag: String, pid: u32 },
    /// Bytes the terminal wrote.
    Output(Bytes),
    /// The process ended; the last event.
    Exit { exit_code: i32 },
    /// A problem; a fatal one is the last event.
    Error { message: String, fatal: bool },
}

/// The sending half of a terminal: input, size, kill. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PtyWriter {
    tx: mpsc::Sender<Message>,
}

impl PtyWriter {
    async fn send(&self, msg: Message) -> Result<()> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| ClientError::Stream("the terminal connection is closed".into()))
    }

    /// Input bytes, as typed (Ctrl-C is byte 3).
    pub async fn write(&self, data: impl Into<Bytes>) -> Result<()> {
        self.send(Message::Binary(data.into())).await
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let frame = json!({ "type": "resize", "cols": cols.max(1), "rows": rows.max(1) });
        self.send(Message::text(frame.to_string())).await
    }

    /// Kills the terminal's process.
    pub async fn kill(&self) -> Result<()> {
        self.send(Message::text(json!({ "type": "kill" }).to_string()))
            .await
    }

    /// Closes the connection; the terminal keeps running (reattach by its tag).
    pub async fn close(&self) -> Result<()> {
        self.send(Message::Close(None)).await
    }
}

/// The receiving half of a terminal. Answers the server's `ping` frames with `pong`.
pub struct PtyReader {
    ws: SplitStream<Socket>,
    tx: mpsc::Sender<Message>,
    pending: Option<PtyEvent>,
    done: bool,
}

#[derive(Debug, Deserialize)]
struct Control {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    pid: u32,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    fatal: Option<bool>,
}

impl PtyReader {
    /// The next event; `None` after `exit` or a fatal error, or when the connection closes.
    pub async fn next(&mut self) -> Option<Result<PtyEvent>> {
        if let Some(ev) = self.pending.take() {
            return Some(Ok(ev));
        }
        if self.done {
            return None;
        }
        loop {
            let msg = match self.ws.next().await {
                None | Some(Ok(Message::Close(_))) => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
                Some(Ok(m)) => m,
            };
            let text = match msg {
                Message::Binary(b) => return Some(Ok(PtyEvent::Output(b))),
                Message::Text(t) => t,
                _ => continue,
            };
            let Ok(ctl) = serde_json::from_str::<Control>(&text) else {
                return Some(Ok(PtyEvent::Error {
                    message: format!("unexpected frame: {text}"),
                    fatal: false,
                }));
            };
            let event = match ctl.kind.as_str() {
                // The server checks the connection; an empty type is a ping too.
                "ping" | "" => {
                    let pong = Message::text(json!({ "type": "pong" }).to_string());
                    let _ = self.tx.send(pong).await;
                    continue;
                }
                "started" => PtyEvent::Started {
                    tag: ctl.tag,
                    pid: ctl.pid,
                },
                "exit" => PtyEvent::Exit {
                    exit_code: ctl.exit_code.unwrap_or(-1),
                },
                "error" => PtyEvent::Error {
                    message: match ctl.data {
                        Some(Value::String(s)) => s,
                        Some(other) => other.to_string(),
                        None => "unknown error".into(),
                    },
                    fatal: ctl.fatal.unwrap_or(false),
                },
                other => PtyEvent::Error {
                    message: format!("unexpected frame type {other:?}"),
                    fatal: false,
                },
            };
            self.done = matches!(
                event,
                PtyEvent::Exit { .. } | PtyEvent::Error { fatal: true, .. }
            );
            return Some(Ok(event));
        }
    }
}

/// A terminal in a capsule.
pub struct Pty {
    /// The terminal's tag (reattach with [`Client::pty_connect`]).
    pub tag: String,
    /// Its process id, when the server said.
    pub pid: Option<u32>,
    writer: PtyWriter,
    reader: PtyReader,
}

impl Pty {
    pub fn writer(&self) -> &PtyWriter {
        &self.writer
    }

    /// The halves, to send input while reading output in another task.
    pub fn split(self) -> (PtyWriter, PtyReader) {
        (self.writer, self.reader)
    }

    pub async fn next(&mut self) -> Option<Result<PtyEvent>> {
        self.reader.next().await
    }
}

/// Sends what the writer half queues, in order; closes the socket when every sender is gone.
async fn pump(mut sink: SplitSink<Socket, Message>, mut rx: mpsc::Receiver<Message>) {
    while let Some(msg) = rx.recv().await {
        let close = matches!(msg, Message::Close(_));
        if sink.send(msg).await.is_err() || close {
            return;
        }
    }
    let _ = sink.close().await;
}

impl Client {
    async fn websocket(&self, segments: &[&str]) -> Result<Socket> {
        let url = self.ws_url(segments);
        let mut req = url.as_str().into_client_request()?;
        let mut key =
            HeaderValue::from_str(self.api_key()).map_err(|_| ClientError::InvalidApiKey)?;
        key.set_sensitive(true);
        req.headers_mut().insert(API_KEY_HEADER, key);
        match tokio_tungstenite::connect_async_with_config(req, None, true).await {
            Ok((ws, _)) => Ok(ws),
            // Refused before the upgrade: the usual error body.
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp.body().as_deref().unwrap_or_default();
                Err(ClientError::from_response(resp.status().as_u16(), body))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `cmd` with `args` (no shell) and streams its events. `envs` and `cwd` apply when
    /// non-empty.
    pub async fn exec_stream(&self, id: &str, exec: &crate::Exec) -> Result<ExecStream> {
        let mut ws = self
            .websocket(&["v1", "capsules", id, "exec", "stream"])
            .await?;
        let mut start = json!({ "type": "start", "cmd": exec.cmd, "args": exec.args });
        if !exec.envs.is_empty() {
            start["envs"] = json!(exec.envs);
        }
        if let Some(cwd) = &exec.cwd {
            start["cwd"] = json!(cwd);
        }
        ws.send(Message::text(start.to_string())).await?;
        Ok(ExecStream { ws, done: false })
    }

    /// Streams a running process's events (by pid or tag) from now on.
    pub async fn connect_process(&self, id: &str, pid_or_tag: &str) -> Result<ExecStream> {
        let ws = self
            .websocket(&["v1", "capsules", id, "processes", pid_or_tag, "stream"])
            .await?;
        Ok(ExecStream { ws, done: false })
    }

    /// Starts a terminal; returns once it runs (or fails).
    pub async fn pty_start(&self, id: &str, start: &PtyStart) -> Result<Pty> {
        let mut pty = self.pty_open(id, start.frame(), String::new()).await?;
        // The first event says whether it started; anything else is kept for the caller.
        match pty.reader.next().await {
            Some(Ok(PtyEvent::Started { tag, pid })) => {
                pty.tag = tag;
                pty.pid = Some(pid);
            }
            Some(Ok(PtyEvent::Error {
                message,
                fatal: true,
            })) => return Err(ClientError::Stream(message)),
            Some(Ok(other)) => pty.reader.pending = Some(other),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(ClientError::Stream(
                    "the server closed the terminal before it started".into(),
                ))
            }
        }
        Ok(pty)
    }

    /// Reattaches to the terminal tagged `tag` (what it shows so far is replayed).
    pub async fn pty_connect(&self, id: &str, tag: &str) -> Result<Pty> {
        let frame = json!({ "type": "connect", "tag": tag });
        self.pty_open(id, frame, tag.to_string()).await
    }

    async fn pty_open(&self, id: &str, first: Value, tag: String) -> Result<Pty> {
        let mut ws = self.websocket(&["v1", "capsules", id, "pty"]).await?;
        ws.send(Message::text(first.to_string())).await?;
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(pump(sink, rx));
        Ok(Pty {
            tag,
            pid: None,
            writer: PtyWriter { tx: tx.clone() },
            reader: PtyReader {
                ws: stream,
                tx,
                pending: None,
                done: false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_parse() {
        assert_eq!(
            StreamEvent::parse(r#"{"type":"start","pid":12}"#),
            StreamEvent::Start { pid: 12 }
        );
        assert_eq!(
            StreamEvent::parse(r#"{"type":"stdout","data":"hi\n"}"#),
            StreamEvent::Stdout("hi\n".into())
        );
        let exit = StreamEvent::parse(r#"{"type":"exit","exit_code":3}"#);
        assert_eq!(exit, StreamEvent::Exit { exit_code: 3 });
        assert!(exit.ends());
        assert_eq!(
            StreamEvent::parse(r#"{"type":"exit"}"#),
            StreamEvent::Exit { exit_code: -1 }
        );
        assert!(StreamEvent::parse(r#"{"type":"error","data":"gone"}"#).ends());
        assert!(matches!(
            StreamEvent::parse(r#"{"type":"keepalive"}"#),
            StreamEvent::Other(_)
        ));
        assert!(matches!(StreamEvent::parse("nope"), StreamEvent::Error(_)));
    }

    #[test]
    fn pty_start_frame_has_only_what_is_set() {
        let f = PtyStart::default().frame();
        assert_eq!(
            f,
            json!({"type":"start","cmd":"/bin/bash","cols":80,"rows":24})
        );
        let f = PtyStart {
            cmd: Some("/bin/sh".into()),
            args: vec!["-l".into()],
            envs: [("TERM".to_string(), "xterm".to_string())].into(),
            cwd: Some("/tmp".into()),
            cols: 120,
            rows: 40,
        }
        .frame();
        assert_eq!(
            f,
            json!({"type":"start","cmd":"/bin/sh","args":["-l"],"envs":{"TERM":"xterm"},
                   "cwd":"/tmp","cols":120,"rows":40})
        );
    }
}
