//! Sign-up, log-in and user tokens: the policies, invitations, bodies refused, and an answer
//! that never tells which emails have accounts.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use wrenn_server::{accounts::SignupPolicy, db::now_ms};

use super::{error_code, start, start_with, As};

#[tokio::test]
async fn signup_login_and_user_tokens() {
    let s = start().await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "  Ada@Example.COM ", "password": "correct horse", "name": "Ada L" })),
        )
        .await;
    // Taken; the answer holds only what was sent (so it is the same for a taken email).
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["status"], "accepted");
    assert_eq!(b["email"], "ada@example.com");
    assert!(b.get("token").is_none() && b.get("user").is_none());
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            As::Nobody,
            Some(json!({ "email": "ada@example.com", "password": "correct horse" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user"]["email"], "ada@example.com");
    assert_eq!(b["user"]["name"], "Ada L");
    assert!(b["user"]["id"].as_str().unwrap().starts_with("usr-"));
    assert!(b["user"].get("password_hash").is_none());
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["expires_at"].as_str().unwrap().ends_with('Z'));
    let token = b["token"].as_str().unwrap().to_string();
    // The password is stored as an argon2id hash only.
    let (_, hash) =
        s.db.user_by_email("ada@example.com")
            .await
            .unwrap()
            .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("correct horse"));

    // The token works on the account routes and on the rest of the API.
    let (st, teams) = s
        .call(Method::GET, "/v1/teams", As::User(&token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(teams.as_array().unwrap().len(), 1);
    assert_eq!(teams[0]["name"], "Ada L's team");
    assert_eq!(teams[0]["role"], "owner");
    let (st, caps) = s
        .call(Method::GET, "/v1/capsules", As::User(&token), None)
        .await;
    assert_eq!((st, caps), (StatusCode::OK, json!([])));

    // Log in (any case of the email).
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            As::Nobody,
            Some(json!({ "email": "ADA@example.com", "password": "correct horse" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user"]["email"], "ada@example.com");
    let again = b["token"].as_str().unwrap();
    let (st, _) = s
        .call(Method::GET, "/v1/teams", As::User(again), None)
        .await;
    assert_eq!(st, StatusCode::OK);

    // Wrong password and unknown email: one answer.
    let mut messages = Vec::new();
    for (email, password) in [
        ("ada@example.com", "wrong horse"),
        ("nobody@example.com", "correct horse"),
        ("not an email", "correct horse"),
    ] {
        let (st, b) = s
            .call(
                Method::POST,
                "/v1/auth/login",
                As::Nobody,
                Some(json!({ "email": email, "password": password })),
            )
            .await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
        messages.push(b["error"]["message"].clone());
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");

    // Sign-up rules.
    for (body, want) in [
        (
            json!({ "email": "bob@example.com", "password": "password" }),
            (400, "invalid_request"),
        ),
        (
            json!({ "email": "bob@example.com", "password": "Bob@Example.com" }),
            (400, "invalid_request"),
        ),
        (
            json!({ "email": "bob@example.com", "password": "short" }),
            (400, "invalid_request"),
        ),
        (
            json!({ "email": "bob@", "password": "long enough" }),
            (400, "invalid_request"),
        ),
        (
            json!({ "email": "bob@example.com", "password": "long enough", "name": " " }),
            (400, "invalid_request"),
        ),
    ] {
        let (st, b) = s
            .call(Method::POST, "/v1/auth/signup", As::Nobody, Some(body))
            .await;
        assert_eq!(error_code(st, &b), want, "{b}");
    }

    // Bad credentials.
    for who in [
        As::Nobody,
        As::User("garbage"),
        As::User("a.b.c"),
        As::Key("wrn_00000000000000000000000000000000"),
        As::BearerKey("wrn_00000000000000000000000000000000"),
    ] {
        let (st, b) = s.call(Method::GET, "/v1/api-keys", who, None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
    // A user token is not an API key.
    let (st, b) = s
        .call(Method::GET, "/v1/api-keys", As::Key(&token), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (st, b) = s
        .call(Method::GET, "/v1/teams", As::User(&tampered), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
}

#[tokio::test]
async fn malformed_bodies_are_invalid_request() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let cases: Vec<(&str, RequestBuilder)> = vec![
        (
            "not JSON",
            s.req(Method::POST, "/v1/auth/signup", As::Nobody)
                .header("content-type", "application/json")
                .body("{\"email\":"),
        ),
        (
            "wrong type",
            s.req(Method::POST, "/v1/auth/login", As::Nobody)
                .json(&json!({ "email": 5, "password": "x" })),
        ),
        (
            "unknown field",
            s.req(Method::POST, "/v1/auth/signup", As::Nobody)
                .json(&json!({ "email": "x@example.com", "password": "12345678", "admin": true })),
        ),
        (
            "missing field",
            s.req(Method::POST, "/v1/auth/login", As::Nobody)
                .json(&json!({ "email": "x@example.com" })),
        ),
        (
            "no content type",
            s.req(Method::POST, "/v1/teams", As::User(&ada.token))
                .body("{\"name\":\"x\"}"),
        ),
        (
            "unknown field (teams)",
            s.req(Method::POST, "/v1/teams", As::User(&ada.token))
                .json(&json!({ "name": "x", "owner": "someone" })),
        ),
        (
            "wrong type (keys)",
            s.req(Method::POST, "/v1/api-keys", As::User(&ada.token))
                .json(&json!({ "name": ["x"] })),
        ),
        (
            "bad role",
            s.req(
                Method::PATCH,
                &format!("/v1/teams/{}/members/{}", ada.team, ada.id),
                As::User(&ada.token),
            )
            .json(&json!({ "role": "superuser" })),
        ),
    ];
    for (what, rb) in cases {
        let (st, b) = s.send(rb).await;
        assert_eq!(error_code(st, &b), (400, "invalid_request"), "{what}: {b}");
    }
}

/// Sign-up answers the same for a taken email as for a new one (status and body), and a
/// taken email's account is left as it was.
#[tokio::test]
async fn signup_does_not_tell_which_emails_exist() {
    let s = start().await;
    let signup = |email: &str, password: &str| {
        s.call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": email, "password": password })),
        )
    };
    let (st_new, new) = signup("ada@example.com", "correct horse").await;
    let (st_taken, taken) = signup("ADA@example.com ", "another horse").await;
    assert_eq!(st_new, StatusCode::ACCEPTED);
    assert_eq!((st_taken, &taken), (st_new, &new));
    // The first password still works; the second never did.
    s.login("ada@example.com", "correct horse").await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            As::Nobody,
            Some(json!({ "email": "ada@example.com", "password": "another horse" })),
        )
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    // And only one account, one team.
    let (_, teams) = s
        .call(
            Method::GET,
            "/v1/teams",
            As::User(&s.login("ada@example.com", "correct horse").await),
            None,
        )
        .await;
    assert_eq!(teams.as_array().unwrap().len(), 1);
}

/// `closed`: nobody signs up, and invitations are refused; `invite`: only with a live
/// invitation, which works once and joins its team with its role.
#[tokio::test]
async fn signup_policies_and_invitations() {
    let closed = start_with(SignupPolicy::Closed).await;
    let (st, b) = closed
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "x@example.com", "password": "correct horse" })),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));

    let s = start_with(SignupPolicy::Invite).await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "x@example.com", "password": "correct horse" })),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    // An owner exists (made the way the admin of `wrenn up` is).
    let hash = wrenn_server::accounts::password::hash("correct horse".into())
        .await
        .unwrap();
    let (_, team) =
        s.db.create_user_with_team("ada@example.com", "Ada", &hash, "Ada's team")
            .await
            .unwrap();
    let ada = s.login("ada@example.com", "correct horse").await;
    let invite = |who: As<'static>, body: Value| {
        let path = format!("/v1/teams/{}/invitations", team.id);
        let s = &s;
        async move { s.call(Method::POST, &path, who, Some(body)).await }
    };
    let ada_static: &'static str = Box::leak(ada.clone().into_boxed_str());
    let (st, inv) = invite(As::User(ada_static), json!({ "role": "admin" })).await;
    assert_eq!(st, StatusCode::CREATED, "{inv}");
    let token = inv["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("wri_"));
    assert_eq!(inv["role"], "admin");
    assert!(inv["used_by"].is_null());
    for bad in [
        json!({ "role": "owner" }),
        json!({ "expires_in_hours": 0 }),
        json!({ "expires_in_hours": 721 }),
    ] {
        let (st, b) = invite(As::User(ada_static), bad).await;
        assert_eq!(error_code(st, &b), (400, "invalid_request"));
    }
    // Grace signs up with it: she is an admin of Ada's team, with no team of her own.
    let grace = s.signup_with("grace@example.com", Some(&token)).await;
    assert_eq!(grace.team, team.id);
    let (_, teams) = s
        .call(Method::GET, "/v1/teams", As::User(&grace.token), None)
        .await;
    assert_eq!(teams.as_array().unwrap().len(), 1);
    assert_eq!(teams[0]["role"], "admin");
    // Single use; unknown tokens are refused the same way.
    for t in [token.as_str(), "wri_00000000000000000000000000000000"] {
        let (st, b) = s
            .call(
                Method::POST,
                "/v1/auth/signup",
                As::Nobody,
                Some(json!({ "email": "eve@example.com", "password": "correct horse", "invitation": t })),
            )
            .await;
        assert_eq!(error_code(st, &b), (404, "not_found"));
    }
    // Expired invitations are refused.
    let caller = wrenn_server::db::Caller::user(
        &team.id,
        &s.db
            .user_by_email("ada@example.com")
            .await
            .unwrap()
            .unwrap()
            .0,
    );
    let (_, stale) =
        s.db.create_invitation(&caller, wrenn_server::db::Role::Member, now_ms() - 1)
            .await
            .unwrap();
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "eve@example.com", "password": "correct horse", "invitation": stale })),
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found"));
    // A taken email with a live invitation: the same answer, and the invitation stays unused.
    let (_, live) = invite(As::User(ada_static), json!({})).await;
    let live_token = live["token"].as_str().unwrap();
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "grace@example.com", "password": "other horse", "invitation": live_token })),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    // The list shows who used what; a plain member may not see or make invitations.
    let path = format!("/v1/teams/{}/invitations", team.id);
    let (st, list) = s.call(Method::GET, &path, As::User(&ada), None).await;
    assert_eq!(st, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|i| i.get("token").is_none()));
    let used: Vec<&Value> = list.iter().filter(|i| !i["used_by"].is_null()).collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["used_by"], grace.id.as_str());
    // Withdrawn: the token stops working.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("{path}/{}", live["id"].as_str().unwrap()),
            As::User(&ada),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "eve@example.com", "password": "correct horse", "invitation": live_token })),
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found"));
    // Grace, an admin, invites Eve as a member; Eve (a member) may not invite.
    let (st, inv) = s
        .call(Method::POST, &path, As::User(&grace.token), Some(json!({})))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let eve = s
        .signup_with("eve@example.com", inv["token"].as_str())
        .await;
    for (m, body) in [(Method::POST, Some(json!({}))), (Method::GET, None)] {
        let (st, b) = s.call(m, &path, As::User(&eve.token), body).await;
        assert_eq!(error_code(st, &b), (403, "forbidden"));
    }
    // Outsiders do not see the team at all; API keys may not invite.
    let (_, key) = s.db.create_api_key(&team.id, "k").await.unwrap();
    let (st, b) = s
        .call(Method::POST, &path, As::Key(&key), Some(json!({})))
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    let (st, b) = closed
        .call(Method::GET, "/v1/teams", As::Nobody, None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
}
