//! Starts the real envd binary on loopback and talks Connect and HTTP to it.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine;
use serde_json::{json, Value};

pub struct Envd {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
}

impl Drop for Envd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("valid base64")
}

pub fn basic(user: &str) -> String {
    format!("Basic {}", b64(format!("{user}:").as_bytes()))
}

pub fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A fresh directory under /tmp that any user may write to.
pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("envd-test-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

impl Envd {
    pub async fn start() -> Envd {
        Envd::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Envd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_envd"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn envd");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            line
        })
        .await
        .unwrap();
        let addr = line
            .trim()
            .strip_prefix("envd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Envd {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A unary JSON call; returns status and body.
    pub async fn unary(&self, path: &str, body: Value) -> (u16, Value) {
        self.unary_with(path, body, &[]).await
    }

    pub async fn unary_with(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }))
        };
        (status, value)
    }

    /// Opens a server-streaming JSON call.
    pub async fn open_stream(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> StreamCall {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(envelope(0, body.to_string().as_bytes()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "stream status");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/connect+json"
        );
        StreamCall {
            resp,
            buf: Vec::new(),
            end: None,
        }
    }

    /// A whole server-streaming call: its messages and its end-stream JSON.
    pub async fn stream(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (Vec<Value>, Value) {
        let mut call = self.open_stream(path, body, headers).await;
        let mut msgs = Vec::new();
        while let Some(m) = call.next().await {
            msgs.push(m);
        }
        (msgs, call.end.clone().expect("end-stream frame"))
    }

    /// Starts `bash -c script` and collects everything.
    pub async fn run(&self, script: &str, extra: Value, headers: &[(&str, &str)]) -> Run {
        let mut body =
            json!({"process": {"cmd": "/bin/bash", "args": ["-c", script]}, "stdin": false});
        merge(&mut body, extra);
        let (msgs, end) = self.stream("/process.Process/Start", body, headers).await;
        Run::from_messages(msgs, end)
    }
}

pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

pub struct StreamCall {
    resp: reqwest::Response,
    buf: Vec<u8>,
    pub end: Option<Value>,
}

impl StreamCall {
    /// The next message, `None` after the end-stream frame (kept in `end`).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let flags = self.buf[0];
                    let payload: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
                    let v: Value = serde_json::from_slice(&payload).expect("JSON frame");
                    if flags & 2 != 0 {
                        self.end = Some(v);
                        return None;
                    }
                    return Some(v);
                }
            }
            match self.resp.chunk().await.expect("read stream") {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return None,
            }
        }
    }
}

/// The collected events of one process.
#[derive(Debug, Default)]
pub struct Run {
    pub pid: u64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub end: Value,
    pub keepalives: usize,
    pub stream_end: Value,
    pub first: Value,
}

impl Run {
    pub fn from_messages(msgs: Vec<Value>, stream_end: Value) -> Run {
        let mut run = Run {
            stream_end,
            ..Default::default()
        };
        for (i, m) in msgs.iter().enumerate() {
            let ev = &m["event"];
            if i == 0 {
                run.first = ev.clone();
            }
            if let Some(pid) = ev["start"]["pid"].as_u64() {
                run.pid = pid;
            }
            if let Some(d) = ev.get("data") {
                for (k, sink) in [
                    ("stdout", &mut run.stdout),
                    ("stderr", &mut run.stderr),
                    ("pty", &mut run.pty),
                ] {
                    if let Some(s) = d[k].as_str() {
                        sink.extend(unb64(s));
                    }
                }
            }
            if ev.get("keepalive").is_some() {
                run.keepalives += 1;
            }
            if let Some(e) = ev.get("end") {
                run.end = e.clone();
            }
        }
        run
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn exit_code(&self) -> i64 {
        self.end["exitCode"].as_i64().unwrap_or(0)
    }
}
