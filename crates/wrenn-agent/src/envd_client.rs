//! The agent's client of envd inside a capsule: Connect (JSON codec) for processes and the
//! filesystem, plain HTTP for `/init`, `/health` and `/files`; the capsule's access token on
//! every request.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use base64::Engine;
use serde_json::{json, Value};

use crate::error::{chain, AgentError, Refusal, Result};

/// Output of a finished command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    /// Set when the process was killed by a signal or envd reported an error.
    pub error: Option<String>,
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: String,
    pub args: Vec<String>,
    pub env: HashMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub timeout: Option<Duration>,
}

/// Defaults sent to `/init`.
#[derive(Debug, Clone, Default)]
pub struct InitRequest {
    pub access_token: Option<String>,
    pub env_vars: HashMap<String, String>,
    pub default_user: Option<String>,
    pub default_workdir: Option<String>,
}

/// A client of one capsule's envd.
#[derive(Debug, Clone)]
pub struct EnvdClient {
    base: String,
    pub(crate) token: Option<String>,
    http: reqwest::Client,
}

fn envd_error(context: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Envd(format!("{context}: {e}"))
}

/// A request to envd that failed on the way: why, without envd's URL (its address is internal
/// and error messages travel to API clients).
fn send_error(context: &str, e: reqwest::Error) -> AgentError {
    AgentError::Envd(format!("{context}: {}", chain(&e.without_url())))
}

impl EnvdClient {
    pub fn new(addr: SocketAddr, token: Option<String>) -> EnvdClient {
        EnvdClient {
            base: format!("http://{addr}"),
            token,
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("x-access-token", t);
        }
        req
    }

    /// `GET /health` answered 2xx.
    pub async fn healthy(&self) -> bool {
        matches!(
            self.http
                .get(format!("{}/health", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await,
            Ok(r) if r.status().is_success()
        )
    }

    /// `POST /init` with the capsule's defaults, its token and the current time.
    pub async fn init(&self, req: &InitRequest, previous_token: Option<&str>) -> Result<()> {
        let now = wrenn_time_now();
        let mut body = json!({ "timestamp": now, "envVars": req.env_vars });
        if let Some(t) = &req.access_token {
            body["accessToken"] = json!(t);
        }
        if let Some(u) = &req.default_user {
            body["defaultUser"] = json!(u);
        }
        if let Some(w) = &req.default_workdir {
            body["defaultWorkdir"] = json!(w);
        }
        let mut http = self
            .http
            .post(format!("{}/init", self.base))
            .timeout(Duration::from_secs(10))
            .json(&body);
        if let Some(t) = previous_token {
            http = http.header("x-access-token", t);
        }
        let resp = http.send().await.map_err(|e| send_error("POST /init", e))?;
        if !resp.status().is_success() {
            return Err(http_error(resp).await);
        }
        Ok(())
    }

    fn with_user(req: reqwest::RequestBuilder, user: Option<&str>) -> reqwest::RequestBuilder {
        match user {
            Some(u) if !u.is_empty() => {
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:"));
                req.header("authorization", format!("Basic {b}"))
            }
            _ => req,
        }
    }

    /// A unary Connect call with the JSON codec.
    pub async fn unary<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        procedure: &str,
        req: &Req,
        user: Option<&str>,
    ) -> Result<Resp> {
        let http = self
            .post(procedure)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(60))
            .json(req);
        let resp = Self::with_user(http, user)
            .send()
            .await
            .map_err(|e| send_error(procedure, e))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| send_error(procedure, e))?;
        if !status.is_success() {
            return Err(classify(&body));
        }
        serde_json::from_value(body).map_err(|e| envd_error(procedure, e))
    }

    /// Starts a process and returns its events as they come: `Start` first, `End` last.
    pub async fn exec_stream(
        &self,
        req: &ExecRequest,
        tag: Option<&str>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ExecEvent>>> {
        let mut process = json!({ "cmd": req.cmd, "args": req.args, "envs": req.env });
        if let Some(cwd) = &req.cwd {
            process["cwd"] = json!(cwd);
        }
        let mut body = json!({ "process": process, "stdin": false });
        if let Some(t) = tag {
            body["tag"] = json!(t);
        }
        self.process_stream(
            "/process.Process/Start",
            &body,
            req.user.as_deref(),
            req.timeout,
        )
        .await
    }

    /// Starts `req` on a PTY of `cols` × `rows` under `tag`.
    pub async fn start_pty(
        &self,
        req: &ExecRequest,
        tag: &str,
        cols: u32,
        rows: u32,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ExecEvent>>> {
        let mut process = json!({ "cmd": req.cmd, "args": req.args, "envs": req.env });
        if let Some(cwd) = &req.cwd {
            process["cwd"] = json!(cwd);
        }
        let body = json!({
            "process": process,
            "pty": { "size": { "cols": cols, "rows": rows } },
            "tag": tag,
        });
        self.process_stream("/process.Process/Start", &body, req.user.as_deref(), None)
            .await
    }

    /// Reattaches to a running (or recently ended) process: `Start` first (with what it
    /// already wrote, kept by envd), live output, then `End`.
    pub async fn connect_process(
        &self,
        selector: &Value,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ExecEvent>>> {
        self.process_stream(
            "/process.Process/Connect",
            &json!({ "process": selector }),
            None,
            None,
        )
        .await
    }

    async fn process_stream(
        &self,
        procedure: &str,
        body: &Value,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<ExecEvent>>> {
        self.connect_stream(
            procedure,
            body,
            user,
            timeout,
            events_of,
            Some(|ev: &ExecEvent| matches!(ev, ExecEvent::End { .. })),
        )
        .await
    }

    /// Watches `path` (and below it with `recursive`): `Started` once the watch is set, then
    /// each change, until the receiver is dropped.
    pub async fn watch_dir(
        &self,
        path: &str,
        recursive: bool,
        user: Option<&str>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<WatchEvent>>> {
        self.connect_stream(
            "/filesystem.Filesystem/WatchDir",
            &json!({ "path": path, "recursive": recursive }),
            user,
            None,
            watch_events_of,
            None,
        )
        .await
    }

    /// A server-streaming Connect call (JSON codec): each message parsed by `parse`. With
    /// `last`, a stream that closes before a message `last` accepts is an error.
    async fn connect_stream<T: Send + 'static>(
        &self,
        procedure: &str,
        body: &Value,
        user: Option<&str>,
        timeout: Option<Duration>,
        parse: fn((u8, Value)) -> Vec<Result<T>>,
        last: Option<fn(&T) -> bool>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<T>>> {
        let body = body.to_string();
        let mut framed = Vec::with_capacity(body.len() + 5);
        framed.push(0);
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(body.as_bytes());
        let mut http = self
            .post(procedure)
            .header("content-type", "application/connect+json")
            .body(framed);
        http = Self::with_user(http, user);
        if let Some(t) = timeout {
            http = http.header("connect-timeout-ms", t.as_millis().to_string());
        }
        let mut resp = http.send().await.map_err(|e| send_error(procedure, e))?;
        if !resp.status().is_success() {
            // A Connect error before the stream (a unary-style JSON error), if envd sent one.
            let status = resp.status();
            return Err(match resp.json::<Value>().await {
                Ok(err) if err.get("code").is_some_and(Value::is_string) => classify(&err),
                _ => AgentError::Envd(format!("{procedure}: {status}")),
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut ended = false;
            loop {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(send_error("reading output", e))).await;
                        return;
                    }
                };
                buf.extend_from_slice(&chunk);
                loop {
                    let frame = match take_frame(&mut buf) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    for ev in parse(frame) {
                        ended |= matches!((&ev, last), (Ok(e), Some(is_last)) if is_last(e));
                        if tx.send(ev).await.is_err() {
                            return; // the caller went away; the process keeps running
                        }
                    }
                }
            }
            if !ended && last.is_some() {
                let _ = tx
                    .send(Err(AgentError::Envd(
                        "the process stream ended without an end event".into(),
                    )))
                    .await;
            }
        });
        Ok(rx)
    }

    /// Runs a command to completion and collects its output.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput> {
        let mut events = self.exec_stream(req, None).await?;
        let mut out = ExecOutput::default();
        while let Some(ev) = events.recv().await {
            match ev? {
                ExecEvent::Start { .. } => {}
                ExecEvent::Stdout(b) => out.stdout.extend(b),
                ExecEvent::Stderr(b) | ExecEvent::Pty(b) => out.stderr.extend(b),
                ExecEvent::End { exit_code, error } => {
                    out.exit_code = exit_code;
                    out.error = error;
                    return Ok(out);
                }
            }
        }
        Err(AgentError::Envd(
            "the process stream ended without an end event".into(),
        ))
    }

    /// Starts a background process and returns its pid once it runs.
    pub async fn start_background(&self, req: &ExecRequest, tag: Option<&str>) -> Result<u32> {
        let mut events = self.exec_stream(req, tag).await?;
        match events.recv().await {
            Some(Ok(ExecEvent::Start { pid })) => Ok(pid),
            Some(Err(e)) => Err(e),
            _ => Err(AgentError::Envd("no start event".into())),
        }
    }

    /// Uploads `body` to `path` (streamed, any size).
    pub async fn write_file(
        &self,
        path: &str,
        user: Option<&str>,
        body: reqwest::Body,
    ) -> Result<()> {
        let mut query = vec![("path", path)];
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            query.push(("username", u));
        }
        let resp = self
            .post("/files")
            .query(&query)
            .header("content-type", "application/octet-stream")
            // envd may answer before it has read the whole body (a full disk: 507) and then
            // closes the connection; never return such a connection to the pool, where the next
            // call would meet it closed.
            .header("connection", "close")
            .body(body)
            .send()
            .await
            .map_err(|e| send_error("POST /files", e))?;
        if !resp.status().is_success() {
            return Err(http_error(resp).await);
        }
        Ok(())
    }

    /// Opens a download of `path`; read it with `chunk()`.
    pub async fn read_file_stream(
        &self,
        path: &str,
        user: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut query = vec![("path", path)];
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            query.push(("username", u));
        }
        let mut req = self.http.get(format!("{}/files", self.base)).query(&query);
        if let Some(t) = &self.token {
            req = req.header("x-access-token", t);
        }
        let resp = req.send().await.map_err(|e| send_error("GET /files", e))?;
        if !resp.status().is_success() {
            return Err(http_error(resp).await);
        }
        Ok(resp)
    }
}

fn take_frame(buf: &mut Vec<u8>) -> Result<Option<(u8, Value)>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let flags = buf[0];
    let msg = serde_json::from_slice(&buf[5..5 + len]).map_err(|e| envd_error("bad frame", e))?;
    buf.drain(..5 + len);
    Ok(Some((flags, msg)))
}

/// One event of a running process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Start {
        pid: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Pty(Vec<u8>),
    End {
        exit_code: i32,
        error: Option<String>,
    },
}

/// One event of a folder watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Started,
    /// A change: the name relative to the watched folder and envd's event type
    /// (`EVENT_TYPE_CREATE`, `…_WRITE`, `…_REMOVE`, `…_RENAME`, `…_CHMOD`).
    Changed {
        name: String,
        kind: String,
    },
}

fn watch_events_of((flags, msg): (u8, Value)) -> Vec<Result<WatchEvent>> {
    if flags & 2 != 0 {
        return match msg.get("error") {
            Some(err) => vec![Err(classify(err))],
            None => Vec::new(),
        };
    }
    // The response's `event` is a oneof: its fields sit at the top level in JSON.
    if msg.get("start").is_some() {
        return vec![Ok(WatchEvent::Started)];
    }
    match msg.get("filesystem") {
        Some(fs) => vec![Ok(WatchEvent::Changed {
            name: fs["name"].as_str().unwrap_or("").to_string(),
            kind: fs["type"].as_str().unwrap_or("").to_string(),
        })],
        None => Vec::new(), // keepalives
    }
}

fn events_of((flags, msg): (u8, Value)) -> Vec<Result<ExecEvent>> {
    if flags & 2 != 0 {
        return match msg.get("error") {
            Some(err) => vec![Err(classify(err))],
            None => Vec::new(),
        };
    }
    let ev = &msg["event"];
    let mut out = Vec::new();
    if let Some(pid) = ev["start"]["pid"].as_u64() {
        out.push(Ok(ExecEvent::Start { pid: pid as u32 }));
    }
    if let Some(d) = ev.get("data") {
        for (key, make) in [
            ("stdout", ExecEvent::Stdout as fn(Vec<u8>) -> ExecEvent),
            ("stderr", ExecEvent::Stderr),
            ("pty", ExecEvent::Pty),
        ] {
            if let Some(s) = d[key].as_str() {
                out.push(b64(s).map(make));
            }
        }
    }
    if let Some(end) = ev.get("end") {
        let mut error = (end["exited"] != json!(true))
            .then(|| end["status"].as_str().unwrap_or("killed").to_string());
        if let Some(e) = end["error"].as_str() {
            error = Some(e.to_string());
        }
        out.push(Ok(ExecEvent::End {
            exit_code: end["exitCode"].as_i64().unwrap_or(0) as i32,
            error,
        }));
    }
    out
}

async fn http_error(resp: reqwest::Response) -> AgentError {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    let message = v["message"].as_str().unwrap_or("").to_string();
    match status.as_u16() {
        404 => Refusal::NotFound.error(message),
        400 | 401 => Refusal::Invalid.error(message),
        403 => Refusal::PermissionDenied.error(message),
        409 => Refusal::AlreadyExists.error(message),
        412 => Refusal::FailedPrecondition.error(message),
        413 => AgentError::TooLarge(message),
        429 => AgentError::CapsuleLimit(message),
        507 => AgentError::CapsuleDiskFull(message),
        _ => AgentError::Envd(format!("{status}: {message}")),
    }
}

fn b64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| envd_error("bad base64 output", e))
}

fn classify(err: &Value) -> AgentError {
    let code = err["code"].as_str().unwrap_or("unknown");
    let message = err["message"].as_str().unwrap_or("").to_string();
    match code {
        "invalid_argument" | "unauthenticated" => Refusal::Invalid.error(message),
        "permission_denied" => Refusal::PermissionDenied.error(message),
        "not_found" => Refusal::NotFound.error(message),
        "already_exists" => Refusal::AlreadyExists.error(message),
        "failed_precondition" => Refusal::FailedPrecondition.error(message),
        // A limit inside the capsule (its disk, inotify watches, a listing's size), never the
        // host's capacity.
        "resource_exhausted" => AgentError::CapsuleLimit(message),
        _ => AgentError::Envd(format!("{code}: {message}")),
    }
}

/// Now as RFC 3339 (UTC).
pub fn wrenn_time_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    wrenn_proto::wkt::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    }
    .to_rfc3339()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// envd's Connect codes by meaning: its `resource_exhausted` is the capsule's, never the
    /// host's; unknown codes are envd failing.
    #[test]
    fn connect_errors_classify_by_code() {
        let c = |code: &str| classify(&json!({ "code": code, "message": "m" }));
        assert_eq!(c("invalid_argument").refusal(), Some(Refusal::Invalid));
        assert_eq!(c("not_found").refusal(), Some(Refusal::NotFound));
        assert!(matches!(
            c("resource_exhausted"),
            AgentError::CapsuleLimit(_)
        ));
        assert!(matches!(c("internal"), AgentError::Envd(_)));
        assert!(matches!(c("unknown_code"), AgentError::Envd(_)));
    }

    /// A failed request to envd never names envd's address.
    #[tokio::test]
    async fn send_errors_do_not_name_envd() {
        // A port on loopback that nothing listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let envd = EnvdClient::new(addr, Some("t".into()));
        let err = envd
            .read_file_stream("/etc/hostname", None)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, AgentError::Envd(_)), "{text}");
        assert!(
            !text.contains("127.0.0.1") && !text.contains("http://"),
            "{text}"
        );
        assert!(text.starts_with("envd: GET /files: "), "{text}");
    }
}
