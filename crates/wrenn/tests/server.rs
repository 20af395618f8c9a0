//! A real `wrenn up` (control plane + agent + microVMs) driven over HTTP: the port proxy (HTTP
//! and an upgraded connection to a server inside a capsule), its access rules, and bad input.
//! Needs root, QEMU and the `python` image (`make images`).

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    time::Duration,
};

use common::{images_dir, ready, Up};
use serde_json::{json, Value};

impl Up {
    /// A `wrenn up` owning network slots `slots` (tests run in parallel: each its own range).
    fn start(slots: &str) -> Up {
        Up::in_temp_dir(slots, "minimal,python", |cmd| {
            cmd.env("WRENN_SIGNUP", "open");
            // The host's own limits are under test here, not the team's disk quota.
            cmd.env("WRENN_QUOTA_DISK_MB", "unlimited");
        })
    }
}

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

/// `wrenn server` and `wrenn agent` as separate processes over mutual TLS, with the PKI made
/// by `wrenn agent-cert`; the server refuses an agent that is not in its PKI.
#[tokio::test(flavor = "multi_thread")]
async fn server_and_agent_apart_over_mtls() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let pki = dir.path().join("pki");
    let bin = env!("CARGO_BIN_EXE_wrenn");
    let ok = Command::new(bin)
        .args(["agent-cert", "--name", "localhost", "--dir"])
        .arg(&pki)
        .status()
        .unwrap();
    assert!(ok.success());
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let agent_port = free_port();
    let mut agent = Command::new(bin)
        .args(["agent", "--slots", "2450-2499", "--listen"])
        .arg(format!("127.0.0.1:{agent_port}"))
        .arg("--tls-dir")
        .arg(&pki)
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .arg("--images")
        .arg(images_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Warnings (a data folder's loose modes fixed) may come first.
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let mut line = String::new();
    while line.is_empty() || line.starts_with("warning: ") {
        line.clear();
        out.read_line(&mut line).unwrap();
    }
    assert!(line.contains("listening"), "{line}");

    let mut server = Command::new(bin)
        .args(["server", "--listen", "127.0.0.1:0", "--agent"])
        .arg(format!("localhost:{agent_port}"))
        .arg("--pki-dir")
        .arg(&pki)
        .arg("--data-dir")
        .arg(dir.path().join("server"))
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, key) = ready(&mut server, &dir.path().join("server"));
    let http = reqwest::Client::new();
    let c: Value = http
        .post(format!("http://{addr}/v1/capsules"))
        .header("x-api-key", &key)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = c["id"].as_str().expect("a capsule").to_string();
    let out: Value = http
        .post(format!("http://{addr}/v1/capsules/{id}/exec"))
        .header("x-api-key", &key)
        .json(&json!({ "cmd": "echo", "args": ["over mTLS"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["stdout"], "over mTLS\n");
    let gone = http
        .delete(format!("http://{addr}/v1/capsules/{id}"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);

    // A server with a PKI of its own (a different CA) cannot reach this agent.
    let stranger = Command::new(bin)
        .args(["server", "--listen", "127.0.0.1:0", "--agent"])
        .arg(format!("localhost:{agent_port}"))
        .arg("--data-dir")
        .arg(dir.path().join("stranger"))
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let failed = tokio::task::spawn_blocking(move || {
        let mut stranger = stranger;
        for _ in 0..300 {
            if stranger.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = stranger.kill();
        stranger.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("agent"), "{err}");

    for child in [&mut server, &mut agent] {
        // SAFETY: kill(2) of our own children.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = child.wait();
    }
}

/// Two teams on one server: with team B's key, every read or write of team A's capsule, its
/// files, processes, terminals, port, snapshot and audit log is `not_found`; names are per team.
#[tokio::test(flavor = "multi_thread")]
async fn tenants_cannot_see_each_other() {
    let up = Up::start("2420-2439");
    let http = reqwest::Client::new();
    let url = |p: &str| up.url(p);
    let key_a = up.key.clone();
    // Team B: a user who signs up, and a key of their team.
    let signup = http
        .post(url("/v1/auth/signup"))
        .json(&json!({ "email": "b@example.com", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), reqwest::StatusCode::ACCEPTED);
    let signed: Value = http
        .post(url("/v1/auth/login"))
        .json(&json!({ "email": "b@example.com", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = signed["token"].as_str().expect("a token").to_string();
    let teams: Value = http
        .get(url("/v1/teams"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team_b = teams[0]["id"].as_str().expect("a team").to_string();
    let made: Value = http
        .post(url("/v1/api-keys"))
        .bearer_auth(&jwt)
        .json(&json!({ "name": "b" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_b = made["key"].as_str().expect("a key").to_string();

    let call = |key: &str, m: reqwest::Method, p: &str, body: Option<Value>| {
        let mut r = http.request(m, url(p)).header("x-api-key", key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    use reqwest::Method as M;
    let a: Value = call(&key_a, M::POST, "/v1/capsules", Some(json!({})))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = a["id"].as_str().unwrap().to_string();
    call(
        &key_a,
        M::POST,
        &format!("/v1/capsules/{id}/exec"),
        Some(json!({ "cmd": "/bin/sh", "args": ["-c", "echo team-a > /tmp/owner"] })),
    )
    .await
    .unwrap();

    // Every capsule route, with B's key: 404, never A's data.
    let body = Some(json!({ "path": "/tmp/owner" }));
    let attempts: Vec<(M, String, Option<Value>)> = vec![
        (M::GET, format!("/v1/capsules/{id}"), None),
        (M::POST, format!("/v1/capsules/{id}/pause"), None),
        (M::POST, format!("/v1/capsules/{id}/resume"), None),
        (M::POST, format!("/v1/capsules/{id}/ping"), None),
        (
            M::POST,
            format!("/v1/capsules/{id}/exec"),
            Some(json!({ "cmd": "true" })),
        ),
        (M::GET, format!("/v1/capsules/{id}/processes"), None),
        (M::DELETE, format!("/v1/capsules/{id}/processes/1"), None),
        (M::GET, format!("/v1/capsules/{id}/metrics"), None),
        (M::GET, format!("/v1/capsules/{id}/network"), None),
        (
            M::PATCH,
            format!("/v1/capsules/{id}/network"),
            Some(json!({ "egress": false })),
        ),
        (
            M::POST,
            format!("/v1/capsules/{id}/files/read"),
            body.clone(),
        ),
        (
            M::POST,
            format!("/v1/capsules/{id}/files/stream/read"),
            body.clone(),
        ),
        (
            M::POST,
            format!("/v1/capsules/{id}/files/list"),
            Some(json!({ "path": "/tmp" })),
        ),
        (
            M::POST,
            format!("/v1/capsules/{id}/files/mkdir"),
            Some(json!({ "path": "/tmp/x" })),
        ),
        (
            M::POST,
            format!("/v1/capsules/{id}/files/remove"),
            body.clone(),
        ),
        (M::GET, format!("/v1/capsules/{id}/pty"), None),
        (M::GET, format!("/v1/capsules/{id}/exec/stream"), None),
        (
            M::POST,
            "/v1/snapshots".into(),
            Some(json!({ "sandbox_id": id, "name": "stolen" })),
        ),
        (M::DELETE, format!("/v1/capsules/{id}"), None),
    ];
    for (m, p, b) in attempts {
        let mut req = http.request(m.clone(), url(&p)).header("x-api-key", &key_b);
        if p.ends_with("/pty") || p.ends_with("/exec/stream") {
            // A real WebSocket handshake, so only the capsule check can refuse it.
            req = req
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        if let Some(b) = b {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 404, "{m} {p} with team B's key");
        let text = r.text().await.unwrap();
        assert!(!text.contains("team-a"), "{text}");
    }
    let upload = http
        .post(url(&format!("/v1/capsules/{id}/files/write")))
        .header("x-api-key", &key_b)
        .multipart(
            reqwest::multipart::Form::new()
                .text("path", "/tmp/owner")
                .text("file", "team-b"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 404);
    let proxied = http
        .get(url("/"))
        .header("host", format!("8080-{id}.wrenn.localhost"))
        .header("x-api-key", &key_b)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 404);
    let listed: Value = call(&key_b, M::GET, "/v1/capsules", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
    // A's file is untouched and A's capsule still runs.
    let out: Value = call(
        &key_a,
        M::POST,
        &format!("/v1/capsules/{id}/exec"),
        Some(json!({ "cmd": "cat", "args": ["/tmp/owner"] })),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(out["stdout"], "team-a\n");

    // Snapshots: names are per team; B sees neither A's template nor its capsule.
    let snap = call(
        &key_a,
        M::POST,
        "/v1/snapshots",
        Some(json!({ "sandbox_id": id, "name": "env" })),
    )
    .await
    .unwrap();
    assert_eq!(snap.status(), 201);
    let b_list: Value = call(&key_b, M::GET, "/v1/snapshots?type=snapshot", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b_list, json!([]));
    let from_a = call(
        &key_b,
        M::POST,
        "/v1/capsules",
        Some(json!({ "template": "env" })),
    )
    .await
    .unwrap();
    assert_eq!(from_a.status(), 404);
    // The host-side name of A's template (whatever it is: found on the host by its source
    // capsule) is no name B may use: 404, never a capsule with A's files.
    let host_a = host_name_of(&id);
    for template in [host_a.clone(), format!("{host_a}/"), format!("../{host_a}")] {
        let r = call(
            &key_b,
            M::POST,
            "/v1/capsules",
            Some(json!({ "template": template })),
        )
        .await
        .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            status == 404 || status == 400,
            "{template}: {status} {text}"
        );
    }
    let r = call(
        &key_b,
        M::POST,
        "/v1/capsules",
        Some(json!({ "template": host_a })),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    assert_eq!(
        call(&key_b, M::DELETE, &format!("/v1/snapshots/{host_a}"), None)
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        call(&key_b, M::DELETE, "/v1/snapshots/env", None)
            .await
            .unwrap()
            .status(),
        404
    );
    let b: Value = call(&key_b, M::POST, "/v1/capsules", Some(json!({})))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bid = b["id"].as_str().unwrap().to_string();
    // The same name in another team, even with `overwrite`: B's own, A's untouched.
    let b_snap = call(
        &key_b,
        M::POST,
        "/v1/snapshots?overwrite=true",
        Some(json!({ "sandbox_id": bid, "name": "env" })),
    )
    .await
    .unwrap();
    assert_eq!(b_snap.status(), 201, "the same name in another team");
    let host_b = host_name_of(&bid);
    assert_ne!(host_a, host_b);
    // The old host-side naming (`t` + the team id's last 12 characters + `.` + the name), as
    // a folder on the host: A cannot reach B's template through it either.
    let legacy = format!("t{}.env", &team_b[team_b.len() - 12..]);
    let planted = images_dir().join(&legacy);
    let copied = Command::new("cp")
        .arg("-al")
        .arg(images_dir().join(&host_b))
        .arg(&planted)
        .status()
        .unwrap();
    assert!(copied.success());
    for template in [&legacy, &host_b] {
        let r = call(
            &key_a,
            M::POST,
            "/v1/capsules",
            Some(json!({ "template": template })),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 404, "A with B's {template}");
    }
    std::fs::remove_dir_all(&planted).unwrap();
    // A's template still gives A's files.
    let ac: Value = call(
        &key_a,
        M::POST,
        "/v1/capsules",
        Some(json!({ "template": "env" })),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let acid = ac["id"]
        .as_str()
        .expect("a capsule from A's env")
        .to_string();
    let out: Value = call(
        &key_a,
        M::POST,
        &format!("/v1/capsules/{acid}/exec"),
        Some(json!({ "cmd": "cat", "args": ["/tmp/owner"] })),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(out["stdout"], "team-a\n");
    let b_list: Value = call(&key_b, M::GET, "/v1/snapshots?type=snapshot", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b_list.as_array().map(Vec::len), Some(1), "{b_list}");
    assert_eq!(b_list[0]["metadata"], json!({}), "{b_list}");
    // B's template is B's: a capsule from it has no A file.
    let bc: Value = call(
        &key_b,
        M::POST,
        "/v1/capsules",
        Some(json!({ "template": "env" })),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let bcid = bc["id"].as_str().unwrap().to_string();
    let out: Value = call(
        &key_b,
        M::POST,
        &format!("/v1/capsules/{bcid}/exec"),
        Some(json!({ "cmd": "/bin/sh", "args": ["-c", "cat /tmp/owner || echo none"] })),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(out["stdout"], "none\n");

    // Audit logs and keys are per team.
    let audit_b: Value = call(&key_b, M::GET, "/v1/audit", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!audit_b.to_string().contains(&id), "{audit_b}");
    let keys_b: Value = call(&key_b, M::GET, "/v1/api-keys", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!keys_b.to_string().contains("admin"), "{keys_b}");

    // Requests that can never fit this host are the request's fault (400), not the host's.
    for (body, says) in [
        (json!({ "disk_size_mb": 1 << 20 }), "can never fit"),
        (json!({ "vcpus": 3 }), "not a shape"),
    ] {
        let r = call(&key_b, M::POST, "/v1/capsules", Some(body.clone()))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_request");
        assert!(
            e["error"]["message"].as_str().unwrap_or("").contains(says),
            "{e}"
        );
    }

    for (key, c) in [
        (&key_b, &bcid),
        (&key_b, &bid),
        (&key_a, &id),
        (&key_a, &acid),
    ] {
        call(key, M::DELETE, &format!("/v1/capsules/{c}"), None)
            .await
            .unwrap();
    }
    for key in [&key_a, &key_b] {
        let r = call(key, M::DELETE, "/v1/snapshots/env", None)
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "each team deletes its own template");
    }
    for host in [&host_a, &host_b] {
        assert!(!images_dir().join(host).exists(), "{host} removed");
    }
}

/// An action that happened is in the audit log, or the request fails: with the audit table
/// refusing writes (a trigger in the real database), a create is undone (no capsule left
/// running, on the host or in the list), and a pause that happened answers an error; once the
/// log takes writes again, every action is in it.
#[tokio::test(flavor = "multi_thread")]
async fn actions_are_audited_or_fail() {
    use sqlx::Connection;
    let up = Up::start("2900-2919");
    let http = reqwest::Client::new();
    let api =
        |m: reqwest::Method, path: &str| http.request(m, up.url(path)).header("x-api-key", &up.key);
    let made: Value = api(reqwest::Method::POST, "/v1/capsules")
        .json(&json!({ "template": "minimal" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_str().expect("a capsule").to_string();

    let db_url = format!("sqlite://{}", up.data_dir.join("wrenn.db").display());
    let mut db = sqlx::SqliteConnection::connect(&db_url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();

    let refused = api(reqwest::Method::POST, "/v1/capsules")
        .json(&json!({ "template": "minimal" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        500,
        "a create that cannot be audited fails"
    );
    let listed: Value = api(reqwest::Method::GET, "/v1/capsules")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "the unaudited create was undone");
    let folders = std::fs::read_dir(up.data_dir.join("capsules"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("cl-"))
        .count();
    assert_eq!(folders, 1, "the undone capsule left nothing on the host");

    let paused = api(reqwest::Method::POST, &format!("/v1/capsules/{id}/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 500, "a pause that cannot be audited fails");

    sqlx::query("DROP TRIGGER refuse_audit")
        .execute(&mut db)
        .await
        .unwrap();
    let resumed = api(reqwest::Method::POST, &format!("/v1/capsules/{id}/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let destroyed = api(reqwest::Method::DELETE, &format!("/v1/capsules/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(destroyed.status(), 204);
    let log: Value = api(reqwest::Method::GET, "/v1/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<String> = log["entries"]
        .as_array()
        .expect("audit entries")
        .iter()
        .filter(|e| e["resource"]["id"] == id.as_str())
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    for want in ["capsule.create", "capsule.resume", "capsule.destroy"] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
}

/// The folder on the host of the snapshot template made from capsule `id` (its
/// `template.json` names the source capsule).
fn host_name_of(id: &str) -> String {
    std::fs::read_dir(images_dir())
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
