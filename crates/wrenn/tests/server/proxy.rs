//! The port proxy: HTTP and an upgraded connection to a server inside a capsule, and who may
//! use it.

use std::{
    io::{Read, Write},
    time::Duration,
};

use crate::common::Up;
use serde_json::{json, Value};

/// A tiny server for the guest: `GET` answers `hello`, an `Upgrade` request gets `101` and
/// then an echo of every byte.
const GUEST_SERVER: &str = r#"
import socket, threading
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            return
        data += chunk
    if b"upgrade:" in data.lower():
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        while True:
            chunk = c.recv(4096)
            if not chunk:
                break
            c.sendall(chunk)
    else:
        body = data if data.startswith(b"GET /headers") else b"hello"
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
async fn port_proxy_and_its_access_rules() {
    let up = Up::start("2400-2419");
    let http = reqwest::Client::new();
    let key = up.key.clone();
    let api =
        |m: reqwest::Method, path: &str| http.request(m, up.url(path)).header("x-api-key", &key);

    // Bad input gets typed errors.
    let bad = api(reqwest::Method::POST, "/v1/capsules")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    let unknown = api(reqwest::Method::POST, "/v1/capsules")
        .json(&json!({ "template": "python", "surprise": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let no_key = http.get(up.url("/v1/capsules")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    let wrong_type = api(reqwest::Method::POST, "/v1/capsules")
        .json(&json!({ "vcpus": "two" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 400);
    // On a connection of its own: the server may close it without reading the rest.
    let huge = reqwest::Client::new()
        .post(up.url("/v1/capsules"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body(format!("{{\"template\":\"{}\"}}", "x".repeat(2 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    let nowhere = api(reqwest::Method::GET, "/v1/nowhere")
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    let listed: Value = api(reqwest::Method::GET, "/v1/capsules")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]), "refused creates leave nothing");

    let create = |public: bool| {
        api(reqwest::Method::POST, "/v1/capsules")
            .json(&json!({ "template": "python", "public": public }))
            .send()
    };
    let c: Value = create(false).await.unwrap().json().await.unwrap();
    let id = c["id"].as_str().unwrap().to_string();
    let token = c["access_token"].as_str().unwrap().to_string();
    assert_eq!(c["status"], "running");
    // The token is shown once.
    let again: Value = api(reqwest::Method::GET, &format!("/v1/capsules/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(again.get("access_token").is_none());

    let started = api(reqwest::Method::POST, &format!("/v1/capsules/{id}/exec"))
        .json(&json!({
            "cmd": "/usr/bin/python3",
            "args": ["-c", GUEST_SERVER],
            "background": true,
            "tag": "web",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let host = format!("8080-{id}.wrenn.localhost");
    // Wait for the guest's server through the proxy (with the API key).
    let mut ok = false;
    for _ in 0..100 {
        let r = http
            .get(up.url("/index.html"))
            .header("host", &host)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            assert_eq!(r.text().await.unwrap(), "hello");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the guest's server answered through the proxy");

    // Access: nothing, a wrong token → 404 (existence is not revealed); the token, the
    // `wrenn_token` query and the headers route → 200.
    let get = |h: &[(&str, &str)], path: &str| {
        let mut r = http.get(up.url(path)).header("host", &host);
        for (k, v) in h {
            r = r.header(*k, *v);
        }
        r.send()
    };
    assert_eq!(get(&[], "/").await.unwrap().status(), 404);
    assert_eq!(
        get(&[("x-wrenn-access-token", "nope")], "/")
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        get(&[("x-wrenn-access-token", &token)], "/")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(&[], &format!("/?wrenn_token={token}"))
            .await
            .unwrap()
            .status(),
        200
    );
    let by_headers = http
        .get(up.url("/"))
        .header("x-wrenn-capsule", &id)
        .header("x-wrenn-port", "8080")
        .header("x-wrenn-access-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_headers.text().await.unwrap(), "hello");
    // The credentials that opened the proxy never reach the capsule's code.
    let seen = http
        .get(up.url("/headers"))
        .header("host", &host)
        .header("authorization", format!("Bearer {key}"))
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .to_lowercase();
    assert!(seen.contains("x-custom: kept"), "{seen}");
    assert!(
        !seen.contains(&key.to_lowercase()) && !seen.contains("authorization"),
        "{seen}"
    );
    let seen = get(&[("x-wrenn-access-token", &token)], "/headers")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!seen.contains(&token), "{seen}");
    // A port nothing listens on: a clear gateway error.
    let closed = http
        .get(up.url("/"))
        .header("host", format!("9999-{id}.wrenn.localhost"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 502);

    // An upgraded connection: raw bytes both ways after 101.
    let addr = up.addr.clone();
    let (host2, token2) = (host.clone(), token.clone());
    let echoed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: {host2}\r\nX-Wrenn-Access-Token: {token2}\r\n\
             Connection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        assert!(
            String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        s.write_all(b"ping-through-the-tunnel").unwrap();
        let mut got = [0u8; 23];
        s.read_exact(&mut got).unwrap();
        got.to_vec()
    })
    .await
    .unwrap();
    assert_eq!(echoed, b"ping-through-the-tunnel");

    // A public capsule needs nothing.
    let p: Value = create(true).await.unwrap().json().await.unwrap();
    let pid = p["id"].as_str().unwrap().to_string();
    api(reqwest::Method::POST, &format!("/v1/capsules/{pid}/exec"))
        .json(
            &json!({ "cmd": "/usr/bin/python3", "args": ["-c", GUEST_SERVER], "background": true }),
        )
        .send()
        .await
        .unwrap();
    let phost = format!("8080-{pid}.wrenn.localhost");
    let mut public_ok = false;
    for _ in 0..100 {
        let r = http
            .get(up.url("/"))
            .header("host", &phost)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            public_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(public_ok);

    // Paused: the proxy says so; destroyed: gone.
    api(reqwest::Method::POST, &format!("/v1/capsules/{id}/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get(&[("x-wrenn-access-token", &token)], "/")
            .await
            .unwrap()
            .status(),
        409
    );
    for c in [&id, &pid] {
        let r = api(reqwest::Method::DELETE, &format!("/v1/capsules/{c}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    assert_eq!(
        get(&[("x-wrenn-access-token", &token)], "/")
            .await
            .unwrap()
            .status(),
        404
    );
}

/// The folder in `images` of the snapshot template made from capsule `id` (its
/// `template.json` names the source capsule).
pub(super) fn host_name_of(images: &std::path::Path, id: &str) -> String {
    std::fs::read_dir(images)
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("template.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|m| m["from_capsule"] == id)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| panic!("no template from {id} on the host"))
}
