//! `/v1/admin/users|teams|templates`: platform admins see every team; anyone else is
//! `forbidden` (over HTTP, SQLite, an agent client that never connects).

#[allow(dead_code)] // The fake's tools other suites use.
mod fake_agent;

#[path = "state/mod.rs"]
mod state;

mod two_teams;

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wrenn_server::db::{now_ms, TemplateRow};

use two_teams::{send, Options, TwoTeams as Server};

async fn start() -> Server {
    two_teams::start_with(Options::admin_only(None)).await
}

impl Server {
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: (&str, &str),
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(auth.0, auth.1);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        send(rb).await
    }
}

const PATHS: [&str; 3] = ["/v1/admin/users", "/v1/admin/teams", "/v1/admin/templates"];

#[tokio::test]
async fn platform_admins_see_every_team_others_are_forbidden() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bearer = |t: &str| format!("Bearer {t}");
    let (_, teams) = s
        .call(
            Method::GET,
            "/v1/teams",
            ("authorization", &bearer(&ada)),
            None,
        )
        .await;
    let ada_team = teams[0]["id"].as_str().unwrap().to_string();
    s.state
        .db
        .insert_template(&TemplateRow {
            id: "tpl-ada-1".into(),
            team_id: ada_team.clone(),
            name: "ada-env".into(),
            agent_name: format!("{ada_team}-ada-env"),
            vcpus: 2,
            memory_mb: 512,
            size_bytes: 12345,
            source_capsule: "cl-x".into(),
            metadata: HashMap::new(),
            created_at: now_ms(),
            host_id: None,
            platform: 0,
            kind: "snapshot".into(),
        })
        .await
        .unwrap();

    // The admin user of the first start signs in with the password in its file.
    let admin = s.login("admin@localhost", &s.admin_password).await;
    for who in [
        ("authorization", bearer(&admin)),
        ("x-api-key", s.key_a.clone()),
    ] {
        let (st, users) = s.call(Method::GET, PATHS[0], (who.0, &who.1), None).await;
        assert_eq!(st, StatusCode::OK, "{users}");
        let emails: Vec<&str> = users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap())
            .collect();
        assert!(
            emails.contains(&"ada@example.com") && emails.contains(&"admin@localhost"),
            "{users}"
        );
        assert!(users[0].get("password_hash").is_none());
        let (st, teams) = s.call(Method::GET, PATHS[1], (who.0, &who.1), None).await;
        assert_eq!(st, StatusCode::OK);
        let ada_row = teams
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == ada_team.as_str())
            .unwrap();
        assert_eq!(
            (ada_row["members"].as_i64(), ada_row["templates"].as_i64()),
            (Some(1), Some(1)),
            "{teams}"
        );
        let (st, tpls) = s.call(Method::GET, PATHS[2], (who.0, &who.1), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(tpls[0]["name"], "ada-env");
        assert_eq!(tpls[0]["team_id"], ada_team.as_str());
        assert_eq!(tpls[0]["size_bytes"], 12345);
    }

    // Ada (an owner of her own team), her API key, and nobody: refused with the error body.
    let (_, key) = s
        .call(
            Method::POST,
            "/v1/api-keys",
            ("authorization", &bearer(&ada)),
            Some(json!({ "name": "k" })),
        )
        .await;
    let ada_key = key["key"].as_str().unwrap().to_string();
    for p in PATHS {
        for who in [
            ("authorization", bearer(&ada)),
            ("x-api-key", ada_key.clone()),
        ] {
            let (st, b) = s.call(Method::GET, p, (who.0, &who.1), None).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{p}: {b}");
            assert_eq!(b["error"]["code"], "forbidden");
        }
        let (st, b) = s.call(Method::GET, p, ("x-nothing", "1"), None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{p}: {b}");
    }
    // Ada acting in the platform team is refused: she is no member of it (not found).
    let platform = s.state.db.platform_team().await.unwrap().unwrap();
    let resp = s
        .http
        .get(format!("{}{}", s.base, PATHS[0]))
        .bearer_auth(&ada)
        .header("x-team-id", &platform)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
