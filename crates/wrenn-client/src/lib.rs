//! wrenn-client: an async client of Wrenn's REST API (`/v1/...`) and its WebSockets, as the
//! `wrenn` CLI and the end-to-end tests use it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wrenn_client::ClientError> {
//! use wrenn_client::{Client, CreateCapsule, Exec};
//! // The base URL and the key come from the caller (the `wrenn` CLI reads `WRENN_BASE_URL`
//! // and `WRENN_API_KEY`): the library never reads the environment.
//! let client = Client::new(wrenn_client::DEFAULT_BASE_URL, "wrn_...")?;
//! let capsule = client.create_capsule(&CreateCapsule::default()).await?;
//! let out = client.exec(&capsule.id, &Exec::shell("uname -a")).await?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! client.destroy_capsule(&capsule.id).await?;
//! # Ok(()) }
//! ```
//!
//! Every request carries `X-API-Key`. Paths are appended to the base URL's path, so
//! `http://host/api` serves `http://host/api/v1/...`. Errors are [`ClientError`]: the server's
//! `error.code`, message and HTTP status, or a local failure.

pub mod builds;
mod error;
mod files;
pub mod hosts;
mod types;
mod ws;

use std::time::Duration;

use base64::Engine;
use reqwest::{header, Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use url::Url;

pub use error::{ClientError, Result};
pub use hosts::{HostClient, HOST_TOKEN_HEADER};
pub use types::*;
pub use ws::{ExecStream, Pty, PtyEvent, PtyReader, PtyStart, PtyWriter, StreamEvent};

/// The base URL when `WRENN_BASE_URL` is not set: a local `wrenn up`.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8000";

/// The header that carries the API key, on requests and WebSocket handshakes.
pub const API_KEY_HEADER: &str = "X-API-Key";

/// How long a JSON call may take (creating or snapshotting a capsule can take a while on a
/// slow host). File transfers and WebSockets have no overall limit.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A foreground exec may take its own timeout plus this.
const EXEC_GRACE: Duration = Duration::from_secs(60);

/// The server's default foreground exec timeout (when the request sets none).
const SERVER_EXEC_TIMEOUT_SECS: u64 = 60;

/// A client of one Wrenn server with one API key. Cheap to clone (the connection pool is
/// shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// A base URL: `http` or `https`, no query or fragment.
fn parse_base(raw: &str) -> Result<Url> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    Ok(url)
}

/// `base` with `segments` appended to its path, each percent-encoded as one segment.
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// The WebSocket URL of an HTTP URL (`http` → `ws`, `https` → `wss`).
fn websocket_url(mut url: Url) -> Url {
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    // Both are special schemes, so the change is always accepted.
    let _ = url.set_scheme(scheme);
    url
}

/// A decoded exec answer (`encoding: base64` means both streams are base64).
fn decode_exec(raw: Value) -> Result<ExecResult> {
    let wire: ExecWire =
        serde_json::from_value(raw.clone()).map_err(|e| ClientError::Decode(e.to_string()))?;
    let base64 = match wire.encoding.as_deref() {
        None | Some("utf-8") | Some("utf8") | Some("") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ClientError::Decode(format!(
                "unknown output encoding {other:?}"
            )))
        }
    };
    let decode = |s: Option<String>, which: &str| -> Result<Vec<u8>> {
        let s = s.unwrap_or_default();
        if !base64 {
            return Ok(s.into_bytes());
        }
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|e| ClientError::Decode(format!("{which} is not valid base64: {e}")))
    };
    Ok(ExecResult {
        stdout: decode(wire.stdout, "stdout")?,
        stderr: decode(wire.stderr, "stderr")?,
        exit_code: wire.exit_code.unwrap_or(-1),
        duration_ms: wire.duration_ms.unwrap_or(0),
        error: wire.error.filter(|e| !e.is_empty()),
        raw,
    })
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:8000`) with `api_key`.
    pub fn new(base_url: &str, api_key: impl Into<String>) -> Result<Client> {
        let api_key = api_key.into().trim().to_string();
        if api_key.is_empty() {
            return Err(ClientError::MissingApiKey);
        }
        let base = parse_base(base_url)?;
        let mut key =
            header::HeaderValue::from_str(&api_key).map_err(|_| ClientError::InvalidApiKey)?;
        key.set_sensitive(true);
        let mut headers = header::HeaderMap::new();
        headers.insert(API_KEY_HEADER, key);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("wrenn-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Client {
            http,
            base,
            api_key,
        })
    }

    /// The base URL requests are made under.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        join(&self.base, segments)
    }

    pub(crate) fn ws_url(&self, segments: &[&str]) -> Url {
        websocket_url(self.url(segments))
    }

    pub(crate) fn api_key(&self) -> &str {
        &self.api_key
    }

    pub(crate) fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, self.url(segments))
    }

    /// Sends a request; a status >= 400 becomes [`ClientError::Api`].
    pub(crate) async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await?;
        let status = resp.status();
        tracing::debug!(url = %resp.url(), %status, "wrenn API");
        if status.as_u16() >= 400 {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(ClientError::from_response(status.as_u16(), &body));
        }
        Ok(resp)
    }

    /// Sends a request and parses its JSON answer (an empty body is `{}`).
    async fn value(&self, req: RequestBuilder) -> Result<Value> {
        let body = self.send(req).await?.bytes().await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn typed<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let v = self.value(req).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, segments: &[&str]) -> Result<T> {
        self.typed(self.request(method, segments).timeout(CALL_TIMEOUT))
            .await
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &impl serde::Serialize,
    ) -> Result<T> {
        self.typed(
            self.request(method, segments)
                .timeout(CALL_TIMEOUT)
                .json(body),
        )
        .await
    }

    /// For calls answered with no content.
    async fn call_empty(&self, method: Method, segments: &[&str]) -> Result<()> {
        self.send(self.request(method, segments).timeout(CALL_TIMEOUT))
            .await?;
        Ok(())
    }

    // ---- capsules -------------------------------------------------------------------------

    pub async fn create_capsule(&self, req: &CreateCapsule) -> Result<Capsule> {
        let c: Capsule = self
            .call_json(Method::POST, &["v1", "capsules"], req)
            .await?;
        if c.id.is_empty() {
            return Err(ClientError::Decode(
                "the created capsule has no id".to_string(),
            ));
        }
        Ok(c)
    }

    pub async fn list_capsules(&self) -> Result<Vec<Capsule>> {
        self.call(Method::GET, &["v1", "capsules"]).await
    }

    pub async fn get_capsule(&self, id: &str) -> Result<Capsule> {
        self.call(Method::GET, &["v1", "capsules", id]).await
    }

    pub async fn destroy_capsule(&self, id: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &["v1", "capsules", id])
            .await
    }

    pub async fn capsule_network(&self, id: &str) -> Result<CapsuleNetwork> {
        self.call(Method::GET, &["v1", "capsules", id, "network"])
            .await
    }

    /// Changes a running or paused capsule's egress at once.
    pub async fn set_capsule_network(
        &self,
        id: &str,
        patch: &NetworkPatch,
    ) -> Result<CapsuleNetwork> {
        self.call_json(Method::PATCH, &["v1", "capsules", id, "network"], patch)
            .await
    }

    pub async fn pause_capsule(&self, id: &str) -> Result<Capsule> {
        self.call(Method::POST, &["v1", "capsules", id, "pause"])
            .await
    }

    pub async fn resume_capsule(&self, id: &str) -> Result<Capsule> {
        self.call(Method::POST, &["v1", "capsules", id, "resume"])
            .await
    }

    /// Live fork: `count` (1..=32) new capsules that continue from capsule `id`'s exact
    /// state, on its host; all or none.
    pub async fn fork_capsule(&self, id: &str, count: u32) -> Result<Forked> {
        self.call_json(
            Method::POST,
            &["v1", "capsules", id, "fork"],
            &serde_json::json!({ "count": count }),
        )
        .await
    }

    /// Counts as activity: resets the capsule's idle timeout.
    pub async fn ping_capsule(&self, id: &str) -> Result<()> {
        self.call_empty(Method::POST, &["v1", "capsules", id, "ping"])
            .await
    }

    /// Resource use over `range` (`5m`, `10m`, `1h`, `2h`, `6h`, `12h`, `24h`; server default
    /// `10m`).
    pub async fn metrics(&self, id: &str, range: Option<&str>) -> Result<Metrics> {
        let mut req = self
            .request(Method::GET, &["v1", "capsules", id, "metrics"])
            .timeout(CALL_TIMEOUT);
        if let Some(r) = range {
            req = req.query(&[("range", r)]);
        }
        self.typed(req).await
    }

    // ---- commands -------------------------------------------------------------------------

    /// Runs a command to completion and returns its output and exit code (a non-zero exit is
    /// not an error).
    pub async fn exec(&self, id: &str, exec: &Exec) -> Result<ExecResult> {
        let secs = exec.timeout_sec.map_or(SERVER_EXEC_TIMEOUT_SECS, u64::from);
        let mut req = self
            .request(Method::POST, &["v1", "capsules", id, "exec"])
            .json(&ExecBody {
                exec,
                background: false,
            });
        // 0 means no timeout on the server either.
        if secs > 0 {
            req = req.timeout(Duration::from_secs(secs) + EXEC_GRACE);
        }
        decode_exec(self.value(req).await?)
    }

    /// Starts a command in the background (its `timeout_sec` is not sent).
    pub async fn exec_background(&self, id: &str, exec: &Exec) -> Result<BackgroundProcess> {
        let exec = Exec {
            timeout_sec: None,
            ..exec.clone()
        };
        self.call_json(
            Method::POST,
            &["v1", "capsules", id, "exec"],
            &ExecBody {
                exec: &exec,
                background: true,
            },
        )
        .await
    }

    pub async fn list_processes(&self, id: &str) -> Result<Vec<ProcessInfo>> {
        let list: ProcessList = self
            .call(Method::GET, &["v1", "capsules", id, "processes"])
            .await?;
        Ok(list.processes.unwrap_or_default())
    }

    /// Kills a process by pid or tag (SIGKILL).
    pub async fn kill_process(&self, id: &str, pid_or_tag: &str) -> Result<()> {
        self.call_empty(
            Method::DELETE,
            &["v1", "capsules", id, "processes", pid_or_tag],
        )
        .await
    }

    // ---- snapshots and templates ----------------------------------------------------------

    /// Makes a template from a capsule (which is left paused). Without `name` the server
    /// picks one; `overwrite` replaces a template of the same name.
    pub async fn create_snapshot(
        &self,
        capsule_id: &str,
        name: Option<&str>,
        overwrite: bool,
    ) -> Result<Template> {
        let mut body = json!({ "sandbox_id": capsule_id });
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        let mut req = self
            .request(Method::POST, &["v1", "snapshots"])
            .timeout(CALL_TIMEOUT)
            .json(&body);
        if overwrite {
            req = req.query(&[("overwrite", "true")]);
        }
        self.typed(req).await
    }

    /// Templates: the platform's base ones and the team's snapshots (or one kind).
    pub async fn list_templates(&self, kind: Option<TemplateKind>) -> Result<Vec<Template>> {
        let mut req = self
            .request(Method::GET, &["v1", "snapshots"])
            .timeout(CALL_TIMEOUT);
        if let Some(k) = kind {
            req = req.query(&[("type", k.as_str())]);
        }
        self.typed(req).await
    }

    pub async fn delete_template(&self, name: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &["v1", "snapshots", name])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_appended_to_the_base_path() {
        let c = Client::new("http://h:8000", "k").unwrap();
        assert_eq!(
            c.url(&["v1", "capsules"]).as_str(),
            "http://h:8000/v1/capsules"
        );
        let c = Client::new("http://h:8000/api", "k").unwrap();
        assert_eq!(
            c.url(&["v1", "capsules", "cl-1", "exec"]).as_str(),
            "http://h:8000/api/v1/capsules/cl-1/exec"
        );
        let c = Client::new("https://h/api/", "k").unwrap();
        assert_eq!(
            c.url(&["v1", "snapshots"]).as_str(),
            "https://h/api/v1/snapshots"
        );
    }

    #[test]
    fn segments_are_escaped() {
        let c = Client::new("http://h", "k").unwrap();
        assert_eq!(
            c.url(&["v1", "snapshots", "a/../b c?d#e"]).as_str(),
            "http://h/v1/snapshots/a%2F..%2Fb%20c%3Fd%23e"
        );
    }

    #[test]
    fn websocket_urls_follow_the_scheme() {
        let c = Client::new("http://127.0.0.1:8000/api", "k").unwrap();
        assert_eq!(
            c.ws_url(&["v1", "capsules", "cl-1", "pty"]).as_str(),
            "ws://127.0.0.1:8000/api/v1/capsules/cl-1/pty"
        );
        let c = Client::new("https://app.example", "k").unwrap();
        assert_eq!(c.ws_url(&["v1", "x"]).as_str(), "wss://app.example/v1/x");
    }

    #[test]
    fn bad_base_urls_and_keys_are_refused() {
        for bad in [
            "ftp://h",
            "127.0.0.1:8000",
            "http://h/?a=1",
            "http://h/#x",
            "",
        ] {
            let e = Client::new(bad, "k").unwrap_err();
            assert_eq!(e.code(), "invalid_url", "{bad}");
        }
        assert_eq!(
            Client::new("http://h", " ").unwrap_err().code(),
            "missing_api_key"
        );
        assert_eq!(
            Client::new("http://h", "a\u{7f}b").unwrap_err().code(),
            "invalid_api_key"
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let c = Client::new("http://h", "wrn_secret").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn exec_output_is_decoded() {
        let r = decode_exec(json!({
            "stdout": "aGk=", "stderr": "/w==", "exit_code": 3, "duration_ms": 7,
            "encoding": "base64"
        }))
        .unwrap();
        assert_eq!(r.stdout, b"hi");
        assert_eq!(r.stderr, [0xff]);
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.duration_ms, 7);
        assert_eq!(r.raw["stdout"], "aGk=");

        let r =
            decode_exec(json!({"stdout": "aGk=", "stderr": null, "encoding": "utf-8"})).unwrap();
        assert_eq!(r.stdout, b"aGk=");
        assert_eq!(r.stderr, b"");
        assert_eq!(r.exit_code, -1, "a missing exit code is -1");

        let e = decode_exec(json!({"stdout": "!!", "encoding": "base64"})).unwrap_err();
        assert_eq!(e.code(), "invalid_response");
        let e = decode_exec(json!({"stdout": "", "encoding": "rot13"})).unwrap_err();
        assert_eq!(e.code(), "invalid_response");
    }
}
