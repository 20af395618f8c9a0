//! Two teams' capsules, templates and files: neither sees the other's.

use std::process::Command;

use crate::common::Up;
use serde_json::{json, Value};

use super::proxy::host_name_of;

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
    let host_a = host_name_of(&up.images(), &id);
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
    let host_b = host_name_of(&up.images(), &bid);
    assert_ne!(host_a, host_b);
    // The old host-side naming (`t` + the team id's last 12 characters + `.` + the name), as
    // a folder on the host: A cannot reach B's template through it either.
    let legacy = format!("t{}.env", &team_b[team_b.len() - 12..]);
    let planted = up.images().join(&legacy);
    let copied = Command::new("cp")
        .arg("-al")
        .arg(up.images().join(&host_b))
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
        assert!(!up.images().join(host).exists(), "{host} removed");
    }
}
