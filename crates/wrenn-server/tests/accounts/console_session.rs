//! The web console's cookie session (`/v1/auth/session`) and its CSRF check, over real HTTP.

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use super::{error_code, start, As, Server};

/// Signs in by cookie; returns the `Set-Cookie` value and the session body.
async fn sign_in(s: &Server, extra: Option<(&str, &str)>) -> (String, Value) {
    let mut rb = s
        .req(Method::POST, "/v1/auth/session", As::Nobody)
        .json(&json!({ "email": "ada@example.com", "password": "correct horse" }));
    if let Some((k, v)) = extra {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    (cookie, resp.json().await.unwrap())
}

/// `name=value` of a `Set-Cookie`.
fn pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

#[tokio::test]
async fn the_cookie_is_httponly_strict_and_secure_over_tls() {
    let s = start().await;
    s.signup("ada@example.com").await;
    let (cookie, body) = sign_in(&s, None).await;
    assert!(cookie.starts_with("wrenn_session=ey"), "{cookie}");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=86400"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert!(body["csrf_token"].as_str().unwrap().len() >= 40, "{body}");
    assert!(
        body.get("token").is_none(),
        "the token is never in the body: {body}"
    );
    let (tls, _) = sign_in(&s, Some(("x-forwarded-proto", "https"))).await;
    assert!(tls.contains("; Secure"), "{tls}");
}

#[tokio::test]
async fn a_reload_finds_the_session_and_changes_need_the_csrf_token() {
    let s = start().await;
    s.signup("ada@example.com").await;
    let (cookie, body) = sign_in(&s, None).await;
    let cookie = pair(&cookie).to_string();
    let csrf = body["csrf_token"].as_str().unwrap().to_string();

    // A reload: the cookie alone gives the user and the same CSRF token back.
    let (st, again) = s
        .send(
            s.req(Method::GET, "/v1/auth/session", As::Nobody)
                .header(header::COOKIE, &cookie),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["csrf_token"], body["csrf_token"]);
    let (st, b) = s
        .call(Method::GET, "/v1/auth/session", As::Nobody, None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));

    // Reads by cookie need no token.
    let (st, teams) = s
        .send(
            s.req(Method::GET, "/v1/teams", As::Nobody)
                .header(header::COOKIE, &cookie),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{teams}");

    // A cross-site style POST: the cookie rides along, the token does not (or is wrong).
    let key_body = json!({ "name": "forged" });
    for bad in [None, Some("AAAA"), Some("not a token")] {
        let mut rb = s
            .req(Method::POST, "/v1/api-keys", As::Nobody)
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, "https://evil.example")
            .json(&key_body);
        if let Some(t) = bad {
            rb = rb.header("x-csrf-token", t);
        }
        let (st, b) = s.send(rb).await;
        assert_eq!(error_code(st, &b), (403, "forbidden"), "{bad:?}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains("CSRF"),
            "{b}"
        );
    }
    let (st, keys) = s
        .send(
            s.req(Method::GET, "/v1/api-keys", As::Nobody)
                .header(header::COOKIE, &cookie),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        keys.as_array().unwrap().len(),
        0,
        "nothing was made: {keys}"
    );

    // With the token it works; a team change too.
    let (st, b) = s
        .send(
            s.req(Method::POST, "/v1/api-keys", As::Nobody)
                .header(header::COOKIE, &cookie)
                .header("x-csrf-token", &csrf)
                .json(&key_body),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (st, b) = s
        .send(
            s.req(Method::POST, "/v1/teams", As::Nobody)
                .header(header::COOKIE, &cookie)
                .header("x-csrf-token", &csrf)
                .json(&json!({ "name": "second" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    // A WebSocket upgrade by cookie needs the token too (as a subprotocol): without it the
    // handshake is refused before any upgrade.
    let (st, b) = s
        .send(
            s.req(Method::GET, "/v1/capsules/cl-x/pty", As::Nobody)
                .header(header::COOKIE, &cookie)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-protocol", "wrenn"),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server_and_clears_the_cookie() {
    let s = start().await;
    s.signup("ada@example.com").await;
    let (cookie, body) = sign_in(&s, None).await;
    let cookie = pair(&cookie).to_string();
    let csrf = body["csrf_token"].as_str().unwrap();
    let token = cookie.trim_start_matches("wrenn_session=").to_string();

    let (st, b) = s
        .send(
            s.req(Method::DELETE, "/v1/auth/session", As::Nobody)
                .header(header::COOKIE, &cookie),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"), "no CSRF token");

    let resp = s
        .req(Method::DELETE, "/v1/auth/session", As::Nobody)
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cleared = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("wrenn_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // The session is over on the server: the old cookie and its token are refused.
    let (st, b) = s
        .send(
            s.req(Method::GET, "/v1/auth/session", As::Nobody)
                .header(header::COOKIE, &cookie),
        )
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    let (st, b) = s
        .call(Method::GET, "/v1/teams", As::User(&token), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
}

#[tokio::test]
async fn tokens_and_keys_work_as_before_and_ignore_the_cookie() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let (cookie, _) = sign_in(&s, None).await;
    let cookie = pair(&cookie).to_string();
    // A bearer token changes things with no CSRF token, cookie or not.
    let (st, b) = s
        .send(
            s.req(Method::POST, "/v1/api-keys", As::User(&ada.token))
                .header(header::COOKIE, &cookie)
                .json(&json!({ "name": "by-token" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let key = b["key"].as_str().unwrap().to_string();
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/api-keys",
            As::Key(&key),
            Some(json!({ "name": "by-key" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    // The log-in of the SDK still answers a token.
    let token = s.login("ada@example.com", "correct horse").await;
    assert!(token.starts_with("ey"));
}
