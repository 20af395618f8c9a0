//! Bad input and how it is answered, over real HTTP and without any VM: the router on a loopback
//! listener with a SQLite database in a temporary folder and an agent client that never
//! connects. Whatever the client got wrong is `400 invalid_request` in the documented shape
//! before anything reaches the host (an unreachable agent would answer `503
//! host_unavailable`, so a 400 here proves the check came first); the port proxy refuses a
//! capsule host it cannot use instead of passing it on to the API.

#[path = "state/mod.rs"]
mod state;

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use wrenn_server::db::{CapsuleRow, Db};

const RUNNING: &str = "cl-eeeeeeeeeeeeeeeeeeeeeeee1";

struct Server {
    base: String,
    http: reqwest::Client,
    key: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wrenn.db").display()
    );
    let db = Db::open(&url).await.unwrap();
    let state = state::with_agent(
        db.clone(),
        wrenn_server::accounts::SignupPolicy::Closed,
        state::no_agent(),
    )
    .await;
    let team = db.create_team("errors").await.unwrap();
    let (_, key) = db.create_api_key(&team.id, "k").await.unwrap();
    db.insert_capsule(&CapsuleRow {
        id: RUNNING.into(),
        team_id: team.id.clone(),
        template: "minimal".into(),
        status: wrenn_types::CapsuleStatus::Running,
        vcpus: 1,
        memory_mb: 256,
        disk_size_mb: 1024,
        timeout_sec: 0,
        metadata: Default::default(),
        error: Some("resume failed: envd at http://169.254.0.21:49983 on 10.200.0.5".into()),
        created_at: 1,
        started_at: Some(1),
        last_active_at: None,
        updated_at: 1,
        host_id: None,
    })
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, wrenn_server::router(state)).await });
    Server {
        base,
        http: reqwest::Client::new(),
        key,
        _dir: dir,
    }
}

impl Server {
    fn req(&self, m: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(m, format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
    }
}

/// The answer is `status` with `{"error":{"code","message"}}`; returns the message.
async fn error(resp: reqwest::Response, status: StatusCode, code: &str) -> String {
    let got = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    assert_eq!(ctype.as_deref(), Some("application/json"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(v["error"]["code"], code, "{text}");
    let message = v["error"]["message"].as_str().expect("a message");
    assert!(!message.is_empty());
    message.to_string()
}

#[tokio::test]
async fn bad_envs_and_metadata_are_refused_before_anything_is_made() {
    let s = start().await;
    let create = |body: Value| s.req(Method::POST, "/v1/capsules").json(&body).send();
    for name in ["1A", "A=B", "", "A B", "A-B", "É"] {
        let m = error(
            create(json!({ "envs": { name: "v" } })).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        assert!(m.contains("[A-Za-z_][A-Za-z0-9_]*"), "{name:?}: {m}");
    }
    // A 1 MB value: it would make every command in the capsule fail (E2BIG).
    let m = error(
        create(json!({ "envs": { "BIG": "x".repeat(1_000_000) } }))
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert!(m.contains("BIG") && m.contains("at most"), "{m}");
    assert!(m.len() < 200, "the value is not echoed: {} bytes", m.len());
    let many: serde_json::Map<String, Value> = (0..8)
        .map(|i| (format!("V{i}"), json!("x".repeat(30_000))))
        .collect();
    let m = error(
        create(json!({ "envs": many })).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert!(m.contains("in all"), "{m}");
    // Metadata: keys, lengths, total.
    for metadata in [
        json!({ "": "v" }),
        json!({ "k".repeat(129): "v" }),
        json!({ "k": "v".repeat(1025) }),
        Value::Object((0..65).map(|i| (format!("k{i}"), json!("v"))).collect()),
        Value::Object(
            (0..17)
                .map(|i| (format!("k{i}"), json!("v".repeat(1000))))
                .collect(),
        ),
    ] {
        let m = error(
            create(json!({ "metadata": metadata })).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        assert!(m.starts_with("metadata:"), "{m}");
    }
    // Input within bounds goes on to the host, which is unreachable here: 503, the host's fault.
    error(
        create(json!({ "envs": { "GOOD_1": "v" }, "metadata": { "owner": "me" } }))
            .await
            .unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "host_unavailable",
    )
    .await;
}

#[tokio::test]
async fn bad_exec_input_is_a_client_error() {
    let s = start().await;
    let exec = |body: Value| {
        s.req(Method::POST, &format!("/v1/capsules/{RUNNING}/exec"))
            .json(&body)
            .send()
    };
    for body in [
        json!({ "cmd": "env", "envs": { "A=B": "1" } }),
        json!({ "cmd": "env", "envs": { "9": "1" } }),
        json!({ "cmd": "env", "envs": { "A": "x".repeat(200_000) } }),
        json!({ "cmd": "env", "envs": { "A": "a\u{0}b" } }),
        json!({ "cmd": "echo", "args": ["x".repeat(200_000)] }),
        json!({ "cmd": "ec\u{0}ho" }),
        json!({ "cmd": "echo", "background": true, "envs": { "-x": "1" } }),
    ] {
        error(
            exec(body.clone()).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
    // A good command reaches for the host (unreachable here).
    error(
        exec(json!({ "cmd": "env", "envs": { "A": "1" } }))
            .await
            .unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "host_unavailable",
    )
    .await;
}

#[tokio::test]
async fn every_rejection_is_the_error_shape() {
    let s = start().await;
    let files = |op: &str| format!("/v1/capsules/{RUNNING}/files/{op}");
    // Multipart: no boundary, not multipart at all, a broken body.
    for op in ["write", "stream/write"] {
        let no_boundary = s
            .req(Method::POST, &files(op))
            .header("content-type", "multipart/form-data")
            .body("x")
            .send()
            .await
            .unwrap();
        error(no_boundary, StatusCode::BAD_REQUEST, "invalid_request").await;
        let not_multipart = s
            .req(Method::POST, &files(op))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        error(not_multipart, StatusCode::BAD_REQUEST, "invalid_request").await;
        let broken = s
            .req(Method::POST, &files(op))
            .header("content-type", "multipart/form-data; boundary=XYZ")
            .body("--XYZ\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/tmp/a\r\n--XYZ\r\nbroken")
            .send()
            .await
            .unwrap();
        error(broken, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // JSON: malformed, wrong type, unknown field, no content type.
    for (ctype, body) in [
        ("application/json", "{not json"),
        ("application/json", r#"{"path": 5}"#),
        ("application/json", r#"{"path": "/x", "surprise": 1}"#),
        ("text/plain", r#"{"path": "/x"}"#),
    ] {
        let r = s
            .req(Method::POST, &files("read"))
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // Query: a value of the wrong type.
    let r = s
        .req(Method::POST, "/v1/snapshots?overwrite=perhaps")
        .json(&json!({ "sandbox_id": RUNNING, "name": "n" }))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Path: a segment that is not UTF-8.
    let r = s
        .req(Method::GET, "/v1/capsules/%FF%FE")
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = s
        .req(Method::DELETE, "/v1/capsules/x/processes/%C0")
        .send()
        .await
        .unwrap();
    error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    // A WebSocket route asked without a handshake.
    for p in ["exec/stream", "pty", "processes/1/stream"] {
        let r = s
            .req(Method::GET, &format!("/v1/capsules/{RUNNING}/{p}"))
            .send()
            .await
            .unwrap();
        error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // Too large a JSON body.
    let r = s
        .req(Method::POST, &files("read"))
        .header("content-type", "application/json")
        .body(format!("{{\"path\":\"{}\"}}", "x".repeat(2 << 20)))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    // And the API's own errors, as before.
    let r = s
        .req(Method::GET, "/v1/no/such/route")
        .send()
        .await
        .unwrap();
    error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s
        .http
        .get(format!("{}/v1/capsules", s.base))
        .send()
        .await
        .unwrap();
    error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn internal_addresses_are_never_shown() {
    let s = start().await;
    let c: Value = s
        .req(Method::GET, &format!("/v1/capsules/{RUNNING}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reason = c["error"].as_str().expect("the failure's reason");
    assert!(reason.starts_with("resume failed: envd at "), "{reason}");
    for internal in ["169.254", "10.200", "http://"] {
        assert!(!reason.contains(internal), "{reason}");
    }
    let listed = s
        .req(Method::GET, "/v1/capsules")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !listed.contains("169.254") && !listed.contains("10.200"),
        "{listed}"
    );
}

#[tokio::test]
async fn the_proxy_refuses_hosts_it_cannot_use() {
    let s = start().await;
    // (a path under /v1/: outside it, reads are the web console's)
    let get = |host: String| {
        s.http
            .get(format!("{}/v1/nope", s.base))
            .header("host", host)
            .send()
    };
    for port in [
        "0", "65536", "99999", "080", "+80", "-1", "http", "8o80", "",
    ] {
        let m = error(
            get(format!("{port}-{RUNNING}.wrenn.test")).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        assert!(m.contains("port") || m.contains("host name"), "{port}: {m}");
    }
    let m = error(
        get(format!("8080-a.{RUNNING}.wrenn.test")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert!(m.contains("host name"), "{m}");
    // Headers: one without the other, or a bad port.
    for (k, v) in [("x-wrenn-capsule", RUNNING), ("x-wrenn-port", "8080")] {
        let r = s
            .http
            .get(format!("{}/", s.base))
            .header(k, v)
            .send()
            .await
            .unwrap();
        error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // Any case is the same host: the proxy takes it (and, without credentials, does not say
    // whether the capsule exists), never the API's "no such route".
    for host in [
        format!("8080-{RUNNING}.wrenn.test"),
        format!("8080-{}.WRENN.TEST", RUNNING.to_uppercase()),
        format!("8080-{RUNNING}.Wrenn.Test:8000"),
    ] {
        let m = error(
            get(host.clone()).await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        assert!(m.contains(RUNNING), "{host}: {m}");
    }
    // The API's own host names still reach the API.
    let m = error(
        get("wrenn.test".into()).await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(m, "no such route");
}

/// Sends `request` on a fresh connection and returns the answer's head (status line and
/// headers, lower-cased).
async fn raw_head(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before an answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    text[..text.find("\r\n\r\n").unwrap()].to_string()
}

#[tokio::test]
async fn an_error_before_the_body_is_read_closes_the_connection() {
    let s = start().await;
    // Refused for its credentials while its body has not even arrived: the connection cannot
    // carry another request, and the answer says so.
    let head = raw_head(
        &s.base,
        &format!(
            "POST /v1/capsules/{RUNNING}/exec HTTP/1.1\r\nhost: x\r\nx-api-key: wrn_bad\r\n\
             content-type: application/json\r\ncontent-length: 20\r\n\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    // Without a body the connection stays usable.
    let head = raw_head(
        &s.base,
        &format!("GET /v1/capsules/{RUNNING} HTTP/1.1\r\nhost: x\r\nx-api-key: wrn_bad\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
}
