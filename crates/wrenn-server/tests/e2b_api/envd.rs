//! envd through the port proxy, reached the E2B way (its headers): the answers the SDK reads.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::start;

#[tokio::test]
async fn envd_through_the_proxy_answers_as_e2b_does() {
    let s = start().await;
    let c = s.create(json!({"templateID": "minimal"})).await;
    let id = c["sandboxID"].as_str().unwrap().to_string();
    let token = c["envdAccessToken"].as_str().unwrap().to_string();
    let envd = |sid: &str, tok: Option<&str>| {
        let mut r = s
            .http
            .get(format!("{}/health", s.base))
            .header("E2b-Sandbox-Id", sid)
            .header("E2b-Sandbox-Port", "49983");
        if let Some(t) = tok {
            r = r.header("X-Access-Token", t);
        }
        r.send()
    };
    let not_found = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let b: Value = r.json().await.unwrap();
        assert!(
            b["message"].as_str().unwrap().contains("was not found"),
            "{b}"
        );
        assert_eq!(b["code"], 502);
    };
    // Missing, malformed, without the token, with a wrong token: all the same "not found".
    not_found(
        envd("cl-0123456789abcdefghijklmno", Some(&token))
            .await
            .unwrap(),
    )
    .await;
    not_found(envd("nope", Some(&token)).await.unwrap()).await;
    not_found(envd(&id, None).await.unwrap()).await;
    not_found(envd(&id, Some("wrong")).await.unwrap()).await;
    // With the token the proxy goes on to the capsule (the fake's has no address: nothing
    // listens, so "port is not open").
    let r = envd(&id, Some(&token)).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["message"].as_str().unwrap().contains("port is not open"),
        "{b}"
    );
    // envd's own /init is never served through the proxy.
    let r = s
        .http
        .post(format!("{}/init", s.base))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", "49983")
        .header("X-Access-Token", &token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // One header without the other.
    let r = s
        .http
        .get(format!("{}/health", s.base))
        .header("E2b-Sandbox-Id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Paused: not found.
    s.a("POST", &format!("/sandboxes/{id}/pause"), None).await;
    not_found(envd(&id, Some(&token)).await.unwrap()).await;
    // Team B's key never opens team A's envd.
    let r = s
        .http
        .get(format!("{}/health", s.base))
        .header("E2b-Sandbox-Id", &id)
        .header("E2b-Sandbox-Port", "49983")
        .header("X-API-Key", &s.key_b)
        .send()
        .await
        .unwrap();
    not_found(r).await;
}
