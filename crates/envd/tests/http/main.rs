//! The plain HTTP endpoints against a real envd on loopback.

#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

mod files;

fn files_url(envd: &Envd, path: &str, user: Option<&str>) -> String {
    let enc: String = percent(path);
    match user {
        Some(u) => envd.url(&format!("/files?path={enc}&username={u}")),
        None => envd.url(&format!("/files?path={enc}")),
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn health_metrics_envs() {
    let envd = Envd::start().await;
    let resp = envd.client.get(envd.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m: Value = envd
        .client
        .get(envd.url("/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(m["cpu_count"].as_u64().unwrap() >= 1);
    assert!(m["mem_total"].as_u64().unwrap() > m["mem_used"].as_u64().unwrap());
    assert!(m["disk_total"].as_u64().unwrap() > 0);
    assert!(m["ts"].as_i64().unwrap() > 1_700_000_000);
    let e: Value = envd
        .client
        .get(envd.url("/envs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e, json!({}));
    let resp = envd.client.get(envd.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 404);
    let resp = envd.client.delete(envd.url("/files")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    // CORS preflight from a web page.
    let resp = envd
        .client
        .request(reqwest::Method::OPTIONS, envd.url("/process.Process/Start"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-access-token",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn init_sets_defaults_and_token() {
    let envd = Envd::start().await;
    let dir = scratch();
    let resp = envd
        .client
        .post(envd.url("/init"))
        .json(&json!({
            "envVars": {"GREETING": "hi"},
            "defaultUser": "user",
            "defaultWorkdir": dir.path().to_str().unwrap(),
            "timestamp": "2026-01-01T00:00:00Z",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let run = envd
        .run("echo $GREETING:$(id -un):$(pwd)", json!({}), &[])
        .await;
    assert_eq!(
        run.stdout_str(),
        format!("hi:user:{}\n", dir.path().display())
    );
    let e: Value = envd
        .client
        .get(envd.url("/envs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e, json!({"GREETING": "hi"}));
    // The clock was not touched: envd runs without --set-clock here.
    let year: i32 = String::from_utf8(
        std::process::Command::new("date")
            .arg("+%Y")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    assert!(year >= 2026);

    for bad in [
        json!({"defaultUser": "ghost"}),
        json!({"defaultWorkdir": "rel"}),
        json!({"timestamp": "soon"}),
        json!({"envVars": 5}),
    ] {
        let resp = envd
            .client
            .post(envd.url("/init"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 400);
    }

    // Token: set it, then everything but /health needs it.
    let resp = envd
        .client
        .post(envd.url("/init"))
        .json(&json!({"accessToken": "s3cret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        envd.client
            .get(envd.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        envd.client
            .get(envd.url("/envs"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let (status, body) = envd.unary("/process.Process/List", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = envd
        .unary_with(
            "/process.Process/List",
            json!({}),
            &[("x-access-token", "wrong")],
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = envd
        .unary_with(
            "/process.Process/List",
            json!({}),
            &[("x-access-token", "s3cret")],
        )
        .await;
    assert_eq!(status, 200);
    // Re-init needs the current token.
    let resp = envd
        .client
        .post(envd.url("/init"))
        .json(&json!({"accessToken": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Signed download URL, as the SDK computes it.
    let file = dir.path().join("signed.txt");
    std::fs::write(&file, b"signed").unwrap();
    let path = file.to_str().unwrap();
    let sig = envd::auth::file_signature(
        path,
        "read",
        "",
        &envd::state::AccessToken::new("s3cret".into()),
        None,
    );
    let url = format!(
        "{}&signature={}",
        files_url(&envd, path, None),
        percent(&sig)
    );
    let resp = envd.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"signed");
    let bad = format!("{}&signature=v1_AAAA", files_url(&envd, path, None));
    assert_eq!(envd.client.get(&bad).send().await.unwrap().status(), 401);
    let exp_sig = envd::auth::file_signature(
        path,
        "read",
        "",
        &envd::state::AccessToken::new("s3cret".into()),
        Some(1000),
    );
    let expired = format!(
        "{}&signature={}&signature_expiration=1000",
        files_url(&envd, path, None),
        percent(&exp_sig)
    );
    assert_eq!(
        envd.client.get(&expired).send().await.unwrap().status(),
        401
    );
}
