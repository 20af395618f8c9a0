//! Every capsule action is audited, or fails.

use crate::common::Up;
use serde_json::{json, Value};

/// An action that happened is in the audit log, or the request fails: with the audit table
/// refusing writes (a trigger in the real database), a create is undone (no capsule left
/// running, on the host or in the list), and a pause that happened answers an error; once the
/// log takes writes again, every action is in it.
#[tokio::test(flavor = "multi_thread")]
async fn actions_are_audited_or_fail() {
    use sqlx::Connection;
    let up = Up::start("2900-2919");
    let http = reqwest::Client::new();
    let api =
        |m: reqwest::Method, path: &str| http.request(m, up.url(path)).header("x-api-key", &up.key);
    let made: Value = api(reqwest::Method::POST, "/v1/capsules")
        .json(&json!({ "template": "minimal" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_str().expect("a capsule").to_string();

    let db_url = format!("sqlite://{}", up.data_dir.join("wrenn.db").display());
    let mut db = sqlx::SqliteConnection::connect(&db_url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();

    let refused = api(reqwest::Method::POST, "/v1/capsules")
        .json(&json!({ "template": "minimal" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        500,
        "a create that cannot be audited fails"
    );
    let listed: Value = api(reqwest::Method::GET, "/v1/capsules")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "the unaudited create was undone");
    let folders = std::fs::read_dir(up.data_dir.join("capsules"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("cl-"))
        .count();
    assert_eq!(folders, 1, "the undone capsule left nothing on the host");

    let paused = api(reqwest::Method::POST, &format!("/v1/capsules/{id}/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 500, "a pause that cannot be audited fails");

    sqlx::query("DROP TRIGGER refuse_audit")
        .execute(&mut db)
        .await
        .unwrap();
    let resumed = api(reqwest::Method::POST, &format!("/v1/capsules/{id}/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let destroyed = api(reqwest::Method::DELETE, &format!("/v1/capsules/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(destroyed.status(), 204);
    let log: Value = api(reqwest::Method::GET, "/v1/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<String> = log["entries"]
        .as_array()
        .expect("audit entries")
        .iter()
        .filter(|e| e["resource"]["id"] == id.as_str())
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    for want in ["capsule.create", "capsule.resume", "capsule.destroy"] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
}
