//! Tokens that must not work (expired, foreign, orphaned), log-in limits, log-out.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wrenn_server::{
    accounts::jwt,
    db::{now_ms, JWT_SECRET},
};

use super::{error_code, start, As};

#[tokio::test]
async fn expired_foreign_and_orphan_tokens_are_refused() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let key = s.db.secret(JWT_SECRET).await.unwrap();
    let now = now_ms() / 1000;
    let sid =
        s.db.create_session(&ada.id, (now + jwt::LIFETIME_SECS) * 1000)
            .await
            .unwrap();
    let (expired, _) = jwt::issue(key.as_bytes(), &ada.id, &sid, now - jwt::LIFETIME_SECS - 1);
    let (foreign, _) = jwt::issue(b"some other server's key", &ada.id, &sid, now);
    let (orphan, _) = jwt::issue(key.as_bytes(), "usr-0000000000000000000000000", &sid, now);
    // Signed by the server but with no session, or another user's session: refused.
    let (sessionless, _) = jwt::issue(key.as_bytes(), &ada.id, "", now);
    let (unknown_session, _) = jwt::issue(key.as_bytes(), &ada.id, "ses-0", now);
    let bob = s.signup("bob@example.com").await;
    let (borrowed, _) = jwt::issue(key.as_bytes(), &bob.id, &sid, now);
    let (fresh, _) = jwt::issue(key.as_bytes(), &ada.id, &sid, now);
    for t in [
        &expired,
        &foreign,
        &orphan,
        &sessionless,
        &unknown_session,
        &borrowed,
    ] {
        let (st, b) = s.call(Method::GET, "/v1/teams", As::User(t), None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
        let (st, b) = s.call(Method::GET, "/v1/audit", As::User(t), None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
    let (st, _) = s
        .call(Method::GET, "/v1/teams", As::User(&fresh), None)
        .await;
    assert_eq!(st, StatusCode::OK);
}

/// Failed log-ins are limited per account and per client address: beyond the limit the
/// answer is 429 `rate_limited` with `Retry-After`, even with the right password.
#[tokio::test]
async fn login_rate_limits() {
    use wrenn_server::accounts::limits::{ACCOUNT_FAILURES, ADDRESS_FAILURES};
    let s = start().await;
    s.signup("ada@example.com").await;
    let login = |email: &str, password: &str| {
        s.req(Method::POST, "/v1/auth/login", As::Nobody)
            .json(&json!({ "email": email, "password": password }))
            .send()
    };
    for _ in 0..ACCOUNT_FAILURES {
        let r = login("ada@example.com", "wrong horse").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    for password in ["wrong horse", "correct horse"] {
        let r = login("Ada@Example.com", password).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=300).contains(&wait), "{wait}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "rate_limited", "{b}");
    }
    // The address: failures on many accounts add up.
    for i in ACCOUNT_FAILURES..ADDRESS_FAILURES {
        let r = login(&format!("nobody{i}@example.com"), "wrong horse")
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login("someone.new@example.com", "whatever horse")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}

/// User tokens are revocable: log out ends one token, log out everywhere ends all of the
/// user's tokens; API keys cannot log out.
#[tokio::test]
async fn logout_and_logout_everywhere() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    let second = s.login("ada@example.com", "correct horse").await;
    let third = s.login("ada@example.com", "correct horse").await;
    let ok = |t: String| {
        let s = &s;
        async move { s.call(Method::GET, "/v1/teams", As::User(&t), None).await.0 }
    };
    for t in [&ada.token, &second, &third, &bob.token] {
        assert_eq!(ok(t.clone()).await, StatusCode::OK);
    }
    let (st, _) = s
        .call(Method::POST, "/v1/auth/logout", As::User(&ada.token), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(Method::GET, "/v1/capsules", As::User(&ada.token), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    assert_eq!(ok(second.clone()).await, StatusCode::OK);
    // Logging out twice: the token is already dead.
    let (st, b) = s
        .call(Method::POST, "/v1/auth/logout", As::User(&ada.token), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    let (st, _) = s
        .call(Method::POST, "/v1/auth/logout-all", As::User(&second), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for t in [&second, &third] {
        assert_eq!(ok(t.clone()).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        ok(bob.token.clone()).await,
        StatusCode::OK,
        "others' tokens live on"
    );
    // Logging in again works.
    assert_eq!(
        ok(s.login("ada@example.com", "correct horse").await).await,
        StatusCode::OK
    );
    let (_, key) = s.new_key(As::User(&bob.token), "k").await;
    for path in ["/v1/auth/logout", "/v1/auth/logout-all"] {
        let (st, b) = s.call(Method::POST, path, As::Key(&key), None).await;
        assert_eq!(error_code(st, &b), (403, "forbidden"));
        let (st, b) = s.call(Method::POST, path, As::Nobody, None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
}
