//! Who may make, see and change hosts; tags; drain; delete; the BYOC flag; the platform admin
//! of an install without `wrenn up`.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{error_code, next_event, on_both, As, Server};

on_both!(permissions, permissions, true);
on_both!(byoc, byoc, true);
on_both!(tags_and_drain, tags_and_drain, true);
on_both!(delete, delete, true);
on_both!(first_account, first_account, false);

async fn permissions(s: &Server) {
    let made = s
        .create_host(
            s.admin(),
            json!({"provider": "lab", "tags": ["b", "a", "a"]}),
        )
        .await;
    let host = &made["host"];
    let id = host["id"].as_str().unwrap();
    assert!(id.starts_with("host-"), "{host}");
    assert_eq!(host["type"], "regular");
    assert_eq!(host["status"], "pending");
    assert_eq!(host["tags"], json!(["a", "b"]));
    assert_eq!(host["provider"], "lab");
    let token = made["registration_token"].as_str().unwrap();
    assert!(
        token.starts_with("wrnh_") && token.len() == 5 + 64,
        "{token}"
    );
    assert!(made["expires_at"].is_string());

    // Someone else: no regular hosts, none visible.
    let bob = s.signup("bob@example.com").await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/hosts",
            As::User(&bob.token),
            Some(json!({"type": "regular"})),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden".into()));
    let (st, b) = s
        .call(Method::GET, "/v1/hosts", As::User(&bob.token), None)
        .await;
    assert_eq!((st, b), (StatusCode::OK, json!([])));
    for (m, path) in [
        (Method::GET, format!("/v1/hosts/{id}")),
        (Method::GET, format!("/v1/hosts/{id}/tags")),
        (Method::POST, format!("/v1/hosts/{id}/token")),
        (Method::POST, format!("/v1/hosts/{id}/drain")),
        (Method::DELETE, format!("/v1/hosts/{id}")),
        (Method::GET, format!("/v1/hosts/{id}/delete-preview")),
    ] {
        let (st, b) = s.call(m, &path, As::User(&bob.token), None).await;
        assert_eq!(error_code(st, &b), (404, "not_found".into()), "{path}");
    }
    // Not a platform admin: no BYOC switch.
    let (st, b) = s
        .call(
            Method::PUT,
            &format!("/v1/admin/teams/{}/byoc", bob.team),
            As::User(&bob.token),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden".into()));
    // The admin sees it; no credentials is 401.
    let (st, b) = s.call(Method::GET, "/v1/hosts", s.admin(), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b.as_array().unwrap().len(), 1);
    let (st, b) = s.call(Method::GET, "/v1/hosts", As::Nobody, None).await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    // Bad input.
    for body in [
        json!({"tags": ["Bad"]}),
        json!({"tags": ["-x"]}),
        json!({"type": "regular", "team_id": bob.team}),
        json!({"type": "cloud"}),
        json!({"surprise": 1}),
    ] {
        let (st, b) = s
            .call(Method::POST, "/v1/hosts", s.admin(), Some(body.clone()))
            .await;
        assert_eq!(
            error_code(st, &b),
            (400, "invalid_request".into()),
            "{body}"
        );
    }
}

async fn byoc(s: &Server) {
    let owner = s.signup("owner@example.com").await;
    let member = s.signup("member@example.com").await;
    let other = s.signup("other@example.com").await;
    let (st, b) = s
        .call(
            Method::POST,
            &format!("/v1/teams/{}/members", owner.team),
            As::User(&owner.token),
            Some(json!({"email": "member@example.com"})),
        )
        .await;
    assert!(st.is_success(), "{b}");

    // Not BYOC-enabled yet.
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/hosts",
            As::User(&owner.token),
            Some(json!({"type": "byoc"})),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden".into()));
    assert!(
        b["error"]["message"].as_str().unwrap().contains("BYOC"),
        "{b}"
    );

    let path = format!("/v1/admin/teams/{}/byoc", owner.team);
    let (st, b) = s
        .call(
            Method::PUT,
            &path,
            s.admin(),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"team_id": owner.team, "enabled": true}));
    let (st, b) = s
        .call(
            Method::PUT,
            &path,
            s.admin(),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(error_code(st, &b), (409, "invalid_state".into()));
    let (st, b) = s
        .call(
            Method::PUT,
            "/v1/admin/teams/team-nope/byoc",
            s.admin(),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found".into()));

    let made = s
        .create_host(
            As::User(&owner.token),
            json!({"type": "byoc", "tags": ["home"]}),
        )
        .await;
    let id = made["host"]["id"].as_str().unwrap().to_string();
    assert_eq!(made["host"]["type"], "byoc");
    assert_eq!(made["host"]["team_id"], owner.team.as_str());

    // Another team: cannot make one for the BYOC team, cannot see it.
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/hosts",
            As::User(&other.token),
            Some(json!({"type": "byoc", "team_id": owner.team})),
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found".into()));
    let (st, b) = s
        .call(
            Method::GET,
            &format!("/v1/hosts/{id}"),
            As::User(&other.token),
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found".into()));
    let (_, b) = s
        .call(Method::GET, "/v1/hosts", As::User(&other.token), None)
        .await;
    assert_eq!(b, json!([]));

    // A member (in the BYOC team) sees it but does not change it.
    let member_in = |m: Method, p: String| {
        s.req(m, &p, As::User(&member.token))
            .header("x-team-id", owner.team.as_str())
    };
    let resp = member_in(Method::GET, format!("/v1/hosts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let list: serde_json::Value = member_in(Method::GET, "/v1/hosts".into())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["tags"], json!(["home"]));
    for (m, p) in [
        (Method::POST, format!("/v1/hosts/{id}/drain")),
        (Method::DELETE, format!("/v1/hosts/{id}/tags/home")),
        (Method::POST, "/v1/hosts".to_string()),
    ] {
        let resp = member_in(m, p.clone())
            .json(&json!({"type": "byoc"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{p}");
    }
    // The owner changes it; the admin sees it with the regular ones.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/hosts/{id}/tags"),
            As::User(&owner.token),
            Some(json!({"tag": "gpu"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, all) = s.call(Method::GET, "/v1/hosts", s.admin(), None).await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == id.as_str()),
        "{all}"
    );
    // The owner's own listing has only the team's hosts.
    s.create_host(s.admin(), json!({})).await;
    let (_, mine) = s
        .call(Method::GET, "/v1/hosts", As::User(&owner.token), None)
        .await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");

    // Its events go to the owning team's stream and the platform team's (its admins see every
    // host); a regular host's to the platform team's only.
    let mut owners = s.events_of(As::User(&owner.token)).await;
    next_event(&mut owners, "connected").await;
    let mut admins = s.events().await;
    next_event(&mut admins, "connected").await;
    let (st, b) = s
        .register(
            made["registration_token"].as_str().unwrap(),
            "127.0.0.4:7200",
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let e = next_event(&mut owners, "host.registered").await;
    assert_eq!(e["resource"]["id"], id.as_str());
    let e = next_event(&mut admins, "host.registered").await;
    assert_eq!(
        e["resource"]["id"],
        id.as_str(),
        "admins hear of the byoc host"
    );
    let (regular, _) = s.registered_host("127.0.0.2:7200").await;
    let e = next_event(&mut admins, "host.registered").await;
    assert_eq!(e["resource"]["id"], regular.as_str());
}

async fn tags_and_drain(s: &Server) {
    let (id, _) = s.registered_host("127.0.0.2:7100").await;
    let tags = format!("/v1/hosts/{id}/tags");
    for tag in ["zone:b", "gpu", "gpu", "a.b_c-d"] {
        let (st, b) = s
            .call(Method::POST, &tags, s.admin(), Some(json!({"tag": tag})))
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    let (_, b) = s.call(Method::GET, &tags, s.admin(), None).await;
    assert_eq!(b, json!(["a.b_c-d", "gpu", "zone:b"]));
    for bad in ["", "GPU", ".x", "a b", &"x".repeat(64)] {
        let (st, b) = s
            .call(Method::POST, &tags, s.admin(), Some(json!({"tag": bad})))
            .await;
        assert_eq!(
            error_code(st, &b),
            (400, "invalid_request".into()),
            "{bad:?}"
        );
    }
    let (st, _) = s
        .call(Method::DELETE, &format!("{tags}/gpu"), s.admin(), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(Method::DELETE, &format!("{tags}/gpu"), s.admin(), None)
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found".into()));
    let (_, b) = s
        .call(Method::GET, &format!("/v1/hosts/{id}"), s.admin(), None)
        .await;
    assert_eq!(b["tags"], json!(["a.b_c-d", "zone:b"]));

    // Drain: an empty body, or one that asks to move paused capsules.
    assert_eq!(b["draining"], false);
    let drain = format!("/v1/hosts/{id}/drain");
    let resp = s.req(Method::POST, &drain, s.admin()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, b) = s
        .call(Method::GET, &format!("/v1/hosts/{id}"), s.admin(), None)
        .await;
    assert_eq!(b["draining"], true);
    let (st, b) = s
        .call(
            Method::POST,
            &drain,
            s.admin(),
            Some(json!({"move_paused": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"moved": [], "failed": {}}));
    let (st, b) = s
        .call(Method::POST, &drain, s.admin(), Some(json!({"move": 1})))
        .await;
    assert_eq!(error_code(st, &b), (400, "invalid_request".into()));
    let (st, b) = s
        .call(
            Method::POST,
            &format!("/v1/hosts/{id}/undrain"),
            s.admin(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["draining"], false);
    let audit = s.host_audit(&id).await;
    for action in [
        "host.create",
        "host.registered",
        "host.tag",
        "host.untag",
        "host.drain",
        "host.undrain",
    ] {
        assert!(audit.iter().any(|a| a == action), "{action} in {audit:?}");
    }
}

async fn delete(s: &Server) {
    let (id, creds) = s.registered_host("127.0.0.3:7100").await;
    let team = s.platform_team().await;
    s.capsule_on("cl-running", &team, &id, "running").await;
    s.capsule_on("cl-paused", &team, &id, "paused").await;
    s.capsule_on("cl-gone", &team, &id, "stopped").await;

    let (st, b) = s
        .call(
            Method::GET,
            &format!("/v1/hosts/{id}/delete-preview"),
            s.admin(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["host"]["id"], id.as_str());
    let mut ids: Vec<String> = serde_json::from_value(b["capsule_ids"].clone()).unwrap();
    ids.sort();
    assert_eq!(ids, ["cl-paused", "cl-running"]);

    let (st, b) = s
        .call(Method::DELETE, &format!("/v1/hosts/{id}"), s.admin(), None)
        .await;
    assert_eq!(error_code(st, &b), (409, "invalid_state".into()));
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("cl-running") && msg.contains("cl-paused") && !msg.contains("cl-gone"),
        "{msg}"
    );
    let (st, b) = s
        .call(
            Method::DELETE,
            &format!("/v1/hosts/{id}?force=maybe"),
            s.admin(),
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (400, "invalid_request".into()));

    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/hosts/{id}?force=true"),
            s.admin(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for c in ["cl-running", "cl-paused", "cl-gone"] {
        assert_eq!(s.capsule_status(c).await, "stopped", "{c}");
    }
    let (st, b) = s
        .call(Method::GET, &format!("/v1/hosts/{id}"), s.admin(), None)
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found".into()));
    // Its identity is revoked: heartbeats are 404 (the agent then stops), refresh 401.
    let host_token = creds["host_token"].as_str().unwrap();
    let (st, b) = s.heartbeat(&id, As::Host(host_token), 0).await;
    assert_eq!(error_code(st, &b), (404, "not_found".into()));
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/hosts/auth/refresh",
            As::Nobody,
            Some(json!({"refresh_token": creds["refresh_token"]})),
        )
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized".into()));
    // An empty host goes without force.
    let made = s.create_host(s.admin(), json!({})).await;
    let other = made["host"]["id"].as_str().unwrap();
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/hosts/{other}"),
            s.admin(),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(s.host_audit(&id).await.iter().any(|a| a == "host.delete"));
}

/// Without `wrenn up`'s admin, the first account to sign up administers the platform; the next
/// does not.
async fn first_account(s: &Server) {
    let first = s.signup("first@example.com").await;
    let second = s.signup("second@example.com").await;
    assert_eq!(
        s.db.platform_team().await.unwrap(),
        Some(first.team.clone())
    );
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/hosts",
            As::User(&first.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/hosts",
            As::User(&second.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden".into()));
    // And the quotas, which follow the same rule.
    let (st, b) = s
        .call(
            Method::GET,
            &format!("/v1/teams/{}/quotas", second.team),
            As::User(&first.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
}
