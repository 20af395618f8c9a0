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
