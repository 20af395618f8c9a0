//! A real `wrenn up` (control plane + agent + microVMs) and what it answers to bad input and to
//! a capsule in trouble: client errors are 400 before anything is made, a capsule's full disk
//! is 507, no answer names an internal address, and the port proxy keeps its token to itself,
//! takes any case of a host and refuses bad ports. Needs root, QEMU and the `python` image
//! (`make images`); network slots 3400-3419.

mod common;

use std::time::Duration;

use common::Up;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

impl Up {
    fn start(slots: &str) -> Up {
        Up::in_temp_dir(slots, "minimal,python", |_| {})
    }
}

/// The answer is `status` with `{"error":{"code","message"}}` and no internal address; returns
/// the message.
async fn error(resp: reqwest::Response, status: StatusCode, code: &str) -> String {
    let got = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(v["error"]["code"], code, "{text}");
    for internal in ["10.200.", "169.254.", "http://", "127.0.0.1"] {
        assert!(!text.contains(internal), "an internal address: {text}");
    }
    v["error"]["message"].as_str().unwrap().to_string()
}

/// Answers `GET /echo…` with the request line it received.
const GUEST_SERVER: &str = r#"
import socket, threading
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            return
        data += chunk
    body = data.split(b"\r\n")[0]
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_full_disks_and_the_proxy() {
    let up = Up::start("3400-3419");
    let http = reqwest::Client::new();
    let api = |m: Method, path: &str| http.request(m, up.url(path)).header("x-api-key", &up.key);

    // Bad variables and metadata: 400 at once, nothing made.
    for body in [
        json!({ "template": "python", "envs": { "1BAD": "x" } }),
        json!({ "template": "python", "envs": { "A=B": "x" } }),
        json!({ "template": "python", "envs": { "BIG": "x".repeat(1_000_000) } }),
        json!({ "template": "python", "metadata": { "k": "v".repeat(5000) } }),
    ] {
        let r = api(Method::POST, "/v1/capsules")
            .json(&body)
            .send()
            .await
            .unwrap();
        error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let listed: Value = api(Method::GET, "/v1/capsules")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]), "refused creates leave nothing");

    // A capsule with variables within bounds; commands see them.
    let c: Value = api(Method::POST, "/v1/capsules")
        .json(&json!({ "template": "python", "envs": { "GREETING": "x".repeat(30_000) } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = c["id"].as_str().expect("a capsule").to_string();
    let token = c["access_token"].as_str().unwrap().to_string();
    let exec = |body: Value| {
        api(Method::POST, &format!("/v1/capsules/{id}/exec"))
            .json(&body)
            .send()
    };
    let out: Value = exec(json!({ "cmd": "/bin/sh", "args": ["-c", "printf %s \"$GREETING\" | wc -c"], "envs": { "B_2": "y" } }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["stdout"], "30000\n", "{out}");
    // Bad variables on exec: 400, and the capsule still works.
    for body in [
        json!({ "cmd": "env", "envs": { "A=B": "1" } }),
        json!({ "cmd": "env", "envs": { "A": "x".repeat(1_000_000) } }),
    ] {
        error(
            exec(body).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
    let out: Value = exec(json!({ "cmd": "echo", "args": ["alive"] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["stdout"], "alive\n");

    // The port proxy: the token stays with the proxy, any case of the host, bad ports refused.
    let started = exec(json!({
        "cmd": "/usr/bin/python3",
        "args": ["-c", GUEST_SERVER],
        "background": true,
    }))
    .await
    .unwrap();
    assert_eq!(started.status(), 202);
    let host = format!("8080-{id}.wrenn.localhost");
    let mut line = String::new();
    for _ in 0..100 {
        let r = http
            .get(up.url(&format!("/echo?a=1&wrenn_token={token}&b=%20two")))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            line = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(line, "GET /echo?a=1&b=%20two HTTP/1.1");
    let upper = http
        .get(up.url("/echo"))
        .header("host", host.to_uppercase())
        .header("x-wrenn-access-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(upper.status(), 200);
    assert_eq!(upper.text().await.unwrap(), "GET /echo HTTP/1.1");
    for port in ["0", "65536", "08080", "http"] {
        let r = http
            .get(up.url("/v1/capsules"))
            .header("host", format!("{port}-{id}.wrenn.localhost"))
            .header("x-api-key", &up.key)
            .send()
            .await
            .unwrap();
        error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // A port nothing listens on: a gateway error that names no address.
    let closed = http
        .get(up.url("/"))
        .header("host", format!("9999-{id}.wrenn.localhost"))
        .header("x-api-key", &up.key)
        .send()
        .await
        .unwrap();
    let m = error(closed, StatusCode::BAD_GATEWAY, "agent_error").await;
    assert!(m.contains("9999"), "{m}");

    // A full disk: uploads are 507, not a host problem.
    let fill =
        "fs=$(stat -f -c %S /); fallocate -l $(( $(stat -f -c %f /) * fs )) /fill0 || true; \
                i=1; for s in 1048576 65536 4096; do while fallocate -l $s /fill$i 2>/dev/null; \
                do i=$((i+1)); done; done; stat -f -c %f /";
    let out: Value =
        exec(json!({ "cmd": "/bin/sh", "args": ["-c", fill], "user": "root", "timeout_sec": 120 }))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(out["exit_code"], 0, "{out}");
    let upload = api(Method::POST, &format!("/v1/capsules/{id}/files/write"))
        .multipart(
            reqwest::multipart::Form::new()
                .text("path", "/home/user/more.bin")
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(vec![7u8; 64 * 1024]).file_name("more.bin"),
                ),
        )
        .send()
        .await
        .unwrap();
    let m = error(
        upload,
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
    )
    .await;
    assert!(m.contains("no space"), "{m}");
    // The capsule is fine otherwise; freeing space lets uploads through again.
    let out: Value =
        exec(json!({ "cmd": "/bin/sh", "args": ["-c", "rm -f /fill*"], "user": "root" }))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(out["exit_code"], 0, "{out}");
    let upload = api(Method::POST, &format!("/v1/capsules/{id}/files/write"))
        .multipart(
            reqwest::multipart::Form::new()
                .text("path", "/home/user/more.bin")
                .text("file", "fits now"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 204);

    let gone = api(Method::DELETE, &format!("/v1/capsules/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
}
