//! Platform templates, fast and without QEMU (the real router and SQLite storage, the fake
//! host agent of [`fake_agent`]): only platform admins queue `/v1/admin/builds`; a platform
//! build's template (the platform team's, marked platform, as the build runner leaves it) is
//! listed to and usable by every team, read-only to them; a team's own template of the same
//! name comes first for that team only. The real build, end to end, is in `builds.rs`.

#[allow(dead_code)] // The fake's tools other suites use.
mod fake_agent;

#[path = "state/mod.rs"]
mod state;

mod two_teams;

use reqwest::StatusCode;
use serde_json::{json, Value};
use wrenn_server::db::{now_ms, TemplateRow};

use two_teams::TwoTeams as Server;

async fn call(
    s: &Server,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    s.keyed(key, method, path, body).await
}

/// A template row of `team` named `name`, held by the fake host as `agent_name`.
async fn plant(s: &Server, team: &str, name: &str, agent_name: &str) {
    let host = s.state.db.builtin_host_id().await.unwrap();
    s.state
        .db
        .insert_template(&TemplateRow {
            id: wrenn_types::Id::new(wrenn_types::IdKind::Template).to_string(),
            team_id: team.into(),
            name: name.into(),
            agent_name: agent_name.into(),
            vcpus: 1,
            memory_mb: 512,
            size_bytes: 10,
            source_capsule: "cl-x".into(),
            metadata: Default::default(),
            created_at: now_ms(),
            host_id: host,
            platform: 0,
            kind: "snapshot".into(),
        })
        .await
        .unwrap();
    s.agent.add_template(agent_name);
}

/// The host-side template a capsule created as `key` from `name` got (or the error status).
async fn create_from(s: &Server, key: &str, name: &str) -> Result<String, StatusCode> {
    let (st, b) = call(
        s,
        key,
        "POST",
        "/v1/capsules",
        Some(json!({ "template": name })),
    )
    .await;
    if st != StatusCode::CREATED {
        return Err(st);
    }
    let id = b["id"].as_str().unwrap();
    Ok(s.agent.capsules()[id].template.clone())
}

/// `name` in the team's template list: its `platform` and `protected` flags, each time it
/// appears.
async fn listed(s: &Server, key: &str, name: &str) -> Vec<(Value, Value)> {
    let (st, list) = call(s, key, "GET", "/v1/snapshots", None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == name)
        .map(|t| (t["platform"].clone(), t["protected"].clone()))
        .collect()
}

#[tokio::test]
async fn platform_builds_are_admins_only_and_their_templates_serve_every_team() {
    let s = two_teams::start(5).await;
    let (a, b) = (s.key_a.clone(), s.key_b.clone());
    let team_a = s.state.db.platform_team().await.unwrap().unwrap();
    let body = json!({ "name": "shared-env", "recipe": ["RUN echo hi"] });

    // Only platform admins build platform templates and see every team's builds.
    let (st, e) = call(&s, &b, "POST", "/v1/admin/builds", Some(body.clone())).await;
    assert_eq!(
        (st, &e["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    assert_eq!(
        call(&s, &b, "GET", "/v1/admin/builds", None).await.0,
        StatusCode::FORBIDDEN
    );
    let (st, built) = call(&s, &a, "POST", "/v1/admin/builds", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{built}");
    let id = built["id"].as_str().unwrap();
    let row = s.state.db.any_build(id).await.unwrap().unwrap();
    assert_eq!((row.platform, row.team_id.as_str()), (1, team_a.as_str()));
    let (st, all) = call(&s, &a, "GET", "/v1/admin/builds", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        all.as_array().unwrap().iter().any(|x| x["id"] == id),
        "{all}"
    );
    assert_eq!(
        call(&s, &a, "GET", &format!("/v1/admin/builds/{id}"), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&s, &b, "GET", &format!("/v1/admin/builds/{id}"), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&s, &b, "GET", &format!("/v1/builds/{id}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // A team build's template stays the team's.
    let (st, own) = call(
        &s,
        &a,
        "POST",
        "/v1/builds",
        Some(json!({ "name": "a-only", "recipe": ["RUN true"] })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{own}");
    let own = s
        .state
        .db
        .any_build(own["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.platform, 0);

    // The build's result, as the runner leaves it: the platform team's template, marked.
    plant(&s, &team_a, "shared-env", "tpl-platform1").await;
    plant(&s, &team_a, "a-only", "tpl-aonly").await;
    s.state
        .db
        .mark_platform_template(&team_a, "shared-env")
        .await
        .unwrap();

    // Team B sees it as a platform template and creates from it; A's own stays hidden.
    let t = json!(true);
    assert_eq!(
        listed(&s, &b, "shared-env").await,
        vec![(t.clone(), t.clone())]
    );
    assert!(listed(&s, &b, "a-only").await.is_empty());
    // The platform team sees it as platform too, and not protected: it may delete it.
    assert_eq!(
        listed(&s, &a, "shared-env").await,
        vec![(t.clone(), json!(false))]
    );
    assert_eq!(
        create_from(&s, &b, "shared-env").await,
        Ok("tpl-platform1".into())
    );
    assert_eq!(
        create_from(&s, &b, "a-only").await,
        Err(StatusCode::NOT_FOUND)
    );
    // Read-only for B: deleting it is refused and it stays.
    let (st, e) = call(&s, &b, "DELETE", "/v1/snapshots/shared-env", None).await;
    assert_eq!(
        (st, &e["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    assert_eq!(listed(&s, &b, "shared-env").await.len(), 1);

    // B's own template of that name comes first, for B only.
    plant(&s, &b_team(&s).await, "shared-env", "tpl-bown").await;
    let f = json!(false);
    assert_eq!(listed(&s, &b, "shared-env").await, vec![(f.clone(), f)]);
    assert_eq!(
        create_from(&s, &b, "shared-env").await,
        Ok("tpl-bown".into())
    );
    assert_eq!(
        create_from(&s, &a, "shared-env").await,
        Ok("tpl-platform1".into())
    );
    assert_eq!(
        call(&s, &b, "DELETE", "/v1/snapshots/shared-env", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(listed(&s, &b, "shared-env").await, vec![(t.clone(), t)]);

    // The platform team (its admins) deletes it; then no team has it.
    assert_eq!(
        call(&s, &a, "DELETE", "/v1/snapshots/shared-env", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert!(listed(&s, &b, "shared-env").await.is_empty());
    assert_eq!(
        create_from(&s, &b, "shared-env").await,
        Err(StatusCode::NOT_FOUND)
    );
}

/// Team B's id (its key's team).
async fn b_team(s: &Server) -> String {
    let caller = s
        .state
        .db
        .authenticate_key(&s.key_b)
        .await
        .unwrap()
        .unwrap();
    caller.team_id
}
