//! Registration tokens, the identity a registration answers (host token, refresh token,
//! certificate), refresh rotation and reuse, and which credentials a heartbeat takes.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wrenn_rpc::tls::{cert_info, signed_by};

use crate::{error_code, on_both, As, Server};

on_both!(registration_tokens, registration_tokens, true);
on_both!(issued_identity, issued_identity, true);
on_both!(refresh_rotation, refresh_rotation, true);
on_both!(heartbeat_credentials, heartbeat_credentials, true);

async fn registration_tokens(s: &Server) {
    let made = s.create_host(s.admin(), json!({})).await;
    let id = made["host"]["id"].as_str().unwrap();
    let first = made["registration_token"].as_str().unwrap();
    // A new token while pending: the old one stops working.
    let (st, b) = s
        .call(
            Method::POST,
            &format!("/v1/hosts/{id}/token"),
            s.admin(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let second = b["registration_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let (st, b) = s.register(first, "127.0.0.2:7000").await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("registration token"),
        "{b}"
    );
    // Bad addresses are refused before the token is spent.
    for bad in ["127.0.0.2", "127.0.0.2:0", "not an address:1", ""] {
        let (st, b) = s.register(&second, bad).await;
        assert_eq!(error_code(st, &b), (400, "invalid_request".into()), "{bad}");
    }
    let (st, creds) = s.register(&second, "127.0.0.2:7000").await;
    assert_eq!(st, StatusCode::CREATED, "{creds}");
    assert_eq!(creds["host_id"], id);
    // Single use.
    let (st, b) = s.register(&second, "127.0.0.2:7000").await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    // Registered: no new token.
    let (st, b) = s
        .call(
            Method::POST,
            &format!("/v1/hosts/{id}/token"),
            s.admin(),
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (409, "invalid_state".into()));
    let (_, host) = s
        .call(Method::GET, &format!("/v1/hosts/{id}"), s.admin(), None)
        .await;
    assert_eq!(host["status"], "online");
    assert_eq!(host["address"], "127.0.0.2:7000");
    assert_eq!(host["specs"]["slots"], "3300-3319");
    assert!(host["last_heartbeat_at"].is_string(), "{host}");

    // An expired token.
    let made = s.create_host(s.admin(), json!({})).await;
    let token = made["registration_token"].as_str().unwrap();
    sqlx::query("UPDATE host_tokens SET expires_at = 1 WHERE host_id = $1")
        .bind(made["host"]["id"].as_str().unwrap())
        .execute(&s.raw)
        .await
        .unwrap();
    let (st, b) = s.register(token, "127.0.0.3:7000").await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    // Nonsense.
    let (st, b) = s.register("wrnh_nope", "127.0.0.3:7000").await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    // Tokens are stored hashed.
    use sqlx::Row;
    let rows = sqlx::query("SELECT token_hash FROM host_tokens")
        .fetch_all(&s.raw)
        .await
        .unwrap();
    for r in rows {
        let h: String = r.try_get("token_hash").unwrap();
        assert!(h.len() == 64 && !h.starts_with("wrn"), "{h}");
    }
}

/// The certificate is the CA's, for this host at this address, for serving only.
fn check_cert(s: &Server, creds: &Value, id: &str, ip: &str) -> String {
    let cert = creds["cert_pem"].as_str().unwrap();
    let ca = creds["ca_cert_pem"].as_str().unwrap();
    let info = cert_info(cert).unwrap();
    assert_eq!(info.common_name, id);
    assert_eq!(info.names, [ip]);
    assert!(info.server_auth && !info.client_auth, "{info:?}");
    assert!(signed_by(cert, ca).unwrap());
    // The CA is the server's own (its PKI folder), and another CA did not sign it.
    let on_disk = std::fs::read_to_string(s.dir.path().join("pki/ca.pem")).unwrap();
    assert_eq!(on_disk, ca);
    let other = tempfile::tempdir().unwrap();
    let other_ca = wrenn_rpc::pki::Pki::load_or_create(other.path()).unwrap();
    assert!(!signed_by(cert, other_ca.ca_pem()).unwrap());
    // The private key is the certificate's.
    wrenn_rpc::tls::Identity {
        cert_pem: cert.into(),
        key_pem: creds["key_pem"].as_str().unwrap().into(),
    }
    .check()
    .unwrap();
    // About a week (the default), never more.
    let left = info.not_after - wrenn_server::db::now_ms() / 1000;
    assert!(left > 6 * 24 * 3600 && left <= 7 * 24 * 3600, "{left}");
    info.sha256
}

async fn stored_fingerprint(s: &Server, id: &str) -> String {
    use sqlx::Row;
    sqlx::query("SELECT cert_fingerprint FROM hosts WHERE id = $1")
        .bind(id)
        .fetch_one(&s.raw)
        .await
        .unwrap()
        .try_get("cert_fingerprint")
        .unwrap()
}

async fn issued_identity(s: &Server) {
    let (id, creds) = s.registered_host("127.0.0.4:7000").await;
    let fp = check_cert(s, &creds, &id, "127.0.0.4");
    assert_eq!(stored_fingerprint(s, &id).await, fp);
    assert!(creds["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("wrnr_"));
    for k in [
        "host_token_expires_at",
        "refresh_token_expires_at",
        "cert_expires_at",
    ] {
        assert!(creds[k].as_str().unwrap().ends_with('Z'), "{k}: {creds}");
    }
    // The control plane's client certificate is in its PKI folder.
    let client = wrenn_rpc::tls::Identity::load(&s.dir.path().join("pki"), "client").unwrap();
    let info = cert_info(&client.cert_pem).unwrap();
    assert_eq!(info.common_name, "wrenn-control-plane");
    assert!(info.client_auth && !info.server_auth);
    // A DNS name works too, and is the certificate's name.
    let made = s.create_host(s.admin(), json!({})).await;
    let (st, creds) = s
        .register(
            made["registration_token"].as_str().unwrap(),
            "agent-7.example:7000",
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{creds}");
    assert_eq!(
        cert_info(creds["cert_pem"].as_str().unwrap())
            .unwrap()
            .names,
        ["agent-7.example"]
    );
}

async fn refresh(s: &Server, token: &Value) -> (StatusCode, Value) {
    s.call(
        Method::POST,
        "/v1/hosts/auth/refresh",
        As::Nobody,
        Some(json!({ "refresh_token": token })),
    )
    .await
}

async fn refresh_rotation(s: &Server) {
    let (id, first) = s.registered_host("127.0.0.2:7001").await;
    let (st, second) = refresh(s, &first["refresh_token"]).await;
    assert_eq!(st, StatusCode::OK, "{second}");
    assert_eq!(second["host_id"], id.as_str());
    for k in ["refresh_token", "host_token", "cert_pem", "key_pem"] {
        assert_ne!(first[k], second[k], "{k} is new");
    }
    let fp = check_cert(s, &second, &id, "127.0.0.2");
    assert_eq!(stored_fingerprint(s, &id).await, fp);
    // The new host token works, and so does the old one until it expires.
    let (st, _) = s
        .heartbeat(&id, As::Host(second["host_token"].as_str().unwrap()), 0)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // The next refresh works once more.
    let (st, third) = refresh(s, &second["refresh_token"]).await;
    assert_eq!(st, StatusCode::OK, "{third}");
    // A spent refresh token again: refused, and (someone has a copy) the live one is revoked.
    let (st, b) = refresh(s, &second["refresh_token"]).await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    let (st, b) = refresh(s, &third["refresh_token"]).await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    // Not a refresh token.
    let (st, b) = refresh(s, &json!("wrnr_0000")).await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    let (st, b) = refresh(s, &json!(null)).await;
    assert_eq!(error_code(st, &b), (400, "invalid_request".into()));
}

async fn heartbeat_credentials(s: &Server) {
    let (a, a_creds) = s.registered_host("127.0.0.2:7002").await;
    let (b, b_creds) = s.registered_host("127.0.0.3:7002").await;
    let a_token = a_creds["host_token"].as_str().unwrap();
    let (st, _) = s.heartbeat(&a, As::Host(a_token), 3).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, host) = s
        .call(Method::GET, &format!("/v1/hosts/{a}"), s.admin(), None)
        .await;
    assert_eq!(host["load"]["running"], 3);
    // Another host's token: forbidden.
    let (st, body) = s.heartbeat(&b, As::Host(a_token), 0).await;
    assert_eq!(error_code(st, &body), (403, "forbidden".into()));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("its own host"),
        "{body}"
    );
    // A user's token, an API key, a refresh token, a registration token, nothing: unauthorized.
    let user = s.signup("carol@example.com").await;
    let admin_key = s.admin_key.clone().unwrap();
    let made = s.create_host(s.admin(), json!({})).await;
    let refresh = b_creds["refresh_token"].as_str().unwrap();
    for bad in [
        user.token.as_str(),
        admin_key.as_str(),
        refresh,
        made["registration_token"].as_str().unwrap(),
        "x.y.z",
    ] {
        let (st, body) = s.heartbeat(&a, As::Host(bad), 0).await;
        assert_eq!(error_code(st, &body), (401, "unauthorized".into()), "{bad}");
    }
    let (st, body) = s.heartbeat(&a, As::Nobody, 0).await;
    assert_eq!(error_code(st, &body), (401, "unauthorized".into()));
    // A user's credentials as a user never reach a heartbeat either.
    let (st, body) = s.heartbeat(&a, As::User(&user.token), 0).await;
    assert_eq!(error_code(st, &body), (401, "unauthorized".into()));
    // A host token is not a user's credential.
    let (st, body) = s
        .call(Method::GET, "/v1/hosts", As::User(a_token), None)
        .await;
    assert_eq!(error_code(st, &body), (401, "unauthorized".into()));
    // A host token of another server (another signing key) is refused.
    let forged = wrenn_server::accounts::jwt::sign(
        b"another server's key",
        &json!({"sub": a, "typ": "host", "iat": 0, "exp": 9_999_999_999i64, "jti": "x"}),
    );
    let (st, body) = s.heartbeat(&a, As::Host(&forged), 0).await;
    assert_eq!(error_code(st, &body), (401, "unauthorized".into()));
    // A bad body, after the token is checked.
    let (st, body) = s
        .call(
            Method::POST,
            &format!("/v1/hosts/{a}/heartbeat"),
            As::Host(a_token),
            Some(json!({"x": 1})),
        )
        .await;
    assert_eq!(error_code(st, &body), (400, "invalid_request".into()));
}
