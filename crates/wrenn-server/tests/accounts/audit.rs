//! The audit log of account changes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{start, As};

#[tokio::test]
async fn audit_records_account_changes() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    let team = ada.team.as_str();
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/teams/{team}/members"),
            As::User(&ada.token),
            Some(json!({ "email": "bob@example.com", "role": "member" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = s
        .call(
            Method::PATCH,
            &format!("/v1/teams/{team}/members/{}", bob.id),
            As::User(&ada.token),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (key_id, key) = s.new_key(As::UserIn(&bob.token, team), "ci").await;
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{key_id}"),
            As::Key(&key),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{team}/members/{}", bob.id),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // A refused change writes nothing.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{team}/members/{}", ada.id),
            As::User(&ada.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    let (st, log) = s
        .call(Method::GET, "/v1/audit", As::User(&ada.token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let got: Vec<(&str, &str, &str)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"]["type"].as_str().unwrap(),
                e["actor"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("team.member.remove", "user", bob.id.as_str()),
            ("api_key.delete", "api_key", key_id.as_str()),
            ("api_key.create", "user", bob.id.as_str()),
            ("team.member.role", "user", ada.id.as_str()),
            ("team.member.add", "user", ada.id.as_str()),
            ("user.signup", "user", ada.id.as_str()),
        ]
    );
    let first = &log["entries"][0];
    assert_eq!(first["resource"]["type"], "user");
    assert_eq!(first["resource"]["id"], bob.id.as_str());
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn audit_pages_by_cursor_and_filters_by_action_and_resource() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let me = As::User(&ada.token);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.new_key(me, &format!("k{i}")).await.0);
    }
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{}", ids[0]),
            me,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, all) = s.call(Method::GET, "/v1/audit", me, None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(all["next_cursor"].is_null(), "{all}");
    let everything: Vec<String> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(everything.len() >= 6, "{all}");

    // Pages of 2, following next_cursor, give the same entries in the same order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=2&cursor={c}"),
            None => "/v1/audit?limit=2".to_string(),
        };
        let (st, page) = s.call(Method::GET, &path, me, None).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        paged.extend(
            entries
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, everything);

    // Filters: an action exactly or by prefix, a resource type and id.
    let actions = |v: &serde_json::Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, created) = s
        .call(Method::GET, "/v1/audit?action=api_key.create", me, None)
        .await;
    assert_eq!(actions(&created), vec!["api_key.create"; 5]);
    let (_, by_prefix) = s
        .call(Method::GET, "/v1/audit?action=api_key", me, None)
        .await;
    assert_eq!(actions(&by_prefix).len(), 6, "{by_prefix}");
    let (_, none) = s.call(Method::GET, "/v1/audit?action=api_", me, None).await;
    assert_eq!(actions(&none).len(), 0, "a prefix ends at a dot: {none}");
    let (_, one) = s
        .call(
            Method::GET,
            &format!("/v1/audit?resource_type=api_key&resource_id={}", ids[0]),
            me,
            None,
        )
        .await;
    assert_eq!(
        actions(&one),
        vec!["api_key.delete", "api_key.create"],
        "{one}"
    );

    // Bad paging is a 400 with the error body.
    for bad in ["limit=0", "limit=501", "cursor=abc", "cursor=-3", "limit=x"] {
        let (st, b) = s
            .call(Method::GET, &format!("/v1/audit?{bad}"), me, None)
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(b["error"]["code"].is_string(), "{b}");
    }
}
