//! The capsule handlers' own logic, fast and without QEMU: the real router and the real
//! SQLite storage, with a fake host agent ([`fake_agent`]: agent.v1 served in-process, capsules
//! in memory) behind the server's gRPC client. State rules, rollback when the agent or the
//! database fails, the reconciler's decisions and tenant isolation.

mod fake_agent;

#[path = "state/mod.rs"]
mod state;

mod two_teams;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Status;
use wrenn_proto::agent::v1::CapsuleState;
use wrenn_server::quotas::{self, Limits};

use two_teams::TwoTeams as Server;

/// The server with one capsule allowed per team.
async fn start() -> Server {
    two_teams::start(1).await
}

impl Server {
    /// `method path` as `key`: the status and the JSON body (`Null` when empty).
    async fn call(&self, key: &str, method: &str, path: &str) -> (StatusCode, Value) {
        let body = (method == "POST").then(|| json!({}));
        self.keyed(key, method, path, body).await
    }

    async fn a(&self, method: &str, path: &str) -> (StatusCode, Value) {
        self.call(&self.key_a, method, path).await
    }

    /// A new capsule of team A (201), its id.
    async fn create(&self) -> String {
        let (status, body) = self.a("POST", "/v1/capsules").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "running");
        body["id"].as_str().unwrap().to_string()
    }

    /// A plain connection to the database (to plant faults the API cannot cause).
    async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

/// The error code of an error answer.
fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error body: {body}"))
}

#[tokio::test]
async fn lifecycle_follows_the_state_rules() {
    let s = start().await;
    let id = s.create().await;
    assert_eq!(s.agent.capsules()[&id].state, CapsuleState::Running as i32);

    let (status, list) = s.a("GET", "/v1/capsules").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    let (status, got) = s.a("GET", &format!("/v1/capsules/{id}")).await;
    assert_eq!(
        (status, got["status"].as_str()),
        (StatusCode::OK, Some("running"))
    );

    let (status, paused) = s.a("POST", &format!("/v1/capsules/{id}/pause")).await;
    assert_eq!(
        (status, paused["status"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    // Pausing a paused capsule, resuming a running one: invalid_state, nothing changes.
    let (status, again) = s.a("POST", &format!("/v1/capsules/{id}/pause")).await;
    assert_eq!(
        (status, code(&again)),
        (StatusCode::CONFLICT, "invalid_state")
    );
    let (_, got) = s.a("GET", &format!("/v1/capsules/{id}")).await;
    assert_eq!(got["status"], "paused");

    let (status, resumed) = s.a("POST", &format!("/v1/capsules/{id}/resume")).await;
    assert_eq!(
        (status, resumed["status"].as_str()),
        (StatusCode::OK, Some("running"))
    );
    let (status, again) = s.a("POST", &format!("/v1/capsules/{id}/resume")).await;
    assert_eq!(
        (status, code(&again)),
        (StatusCode::CONFLICT, "invalid_state")
    );

    let (status, _) = s.a("DELETE", &format!("/v1/capsules/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(s.agent.capsules().is_empty(), "destroyed on the host");
    // Deleting twice, or reading a destroyed capsule: not_found.
    let (status, again) = s.a("DELETE", &format!("/v1/capsules/{id}")).await;
    assert_eq!((status, code(&again)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, gone) = s.a("GET", &format!("/v1/capsules/{id}")).await;
    assert_eq!((status, code(&gone)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, list) = s.a("GET", "/v1/capsules").await;
    assert_eq!(list, json!([]));
    assert_eq!(s.agent.calls("destroy_capsule"), vec![id]);
}

#[tokio::test]
async fn a_destroy_the_host_already_did_still_stops_the_row() {
    let s = start().await;
    let id = s.create().await;
    s.agent.forget(&id);
    let (status, _) = s.a("DELETE", &format!("/v1/capsules/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.a("GET", &format!("/v1/capsules/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_failed_agent_create_leaves_no_row_and_releases_the_quota() {
    let s = start().await;
    s.agent
        .fail_next("create_capsule", Status::unavailable("the host is full"));
    let (status, body) = s.a("POST", "/v1/capsules").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "host_unavailable")
    );
    let (_, list) = s.a("GET", "/v1/capsules").await;
    assert_eq!(list, json!([]));
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM capsules")
        .fetch_one(&s.raw().await)
        .await
        .unwrap();
    assert_eq!(rows, 0, "no row of any status");
    // The team may hold one capsule: the failed create's reservation is gone, so this fits.
    s.create().await;
    let (status, body) = s.a("POST", "/v1/capsules").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded")
    );
}

#[tokio::test]
async fn an_agent_failing_pause_or_resume_changes_nothing() {
    let s = start().await;
    let id = s.create().await;
    s.agent
        .fail_next("pause_capsule", Status::internal("the VMM did not answer"));
    let (status, body) = s.a("POST", &format!("/v1/capsules/{id}/pause")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_GATEWAY, "agent_error")
    );
    let (_, got) = s.a("GET", &format!("/v1/capsules/{id}")).await;
    assert_eq!(got["status"], "running");

    s.a("POST", &format!("/v1/capsules/{id}/pause")).await;
    s.agent
        .fail_next("resume_capsule", Status::unavailable("no room"));
    let (status, _) = s.a("POST", &format!("/v1/capsules/{id}/resume")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, got) = s.a("GET", &format!("/v1/capsules/{id}")).await;
    assert_eq!(got["status"], "paused");
}

#[tokio::test]
async fn a_failed_insert_destroys_the_capsule_the_agent_made() {
    let s = start().await;
    let raw = s.raw().await;
    sqlx::query(
        "CREATE TRIGGER refuse_capsules BEFORE INSERT ON capsules \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&raw)
    .await
    .unwrap();
    let (status, body) = s.a("POST", "/v1/capsules").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
    );
    let made = s.agent.calls("create_capsule").len();
    assert_eq!(made, 1, "the agent made it");
    assert_eq!(
        s.agent.calls("destroy_capsule").len(),
        1,
        "and was told to destroy it"
    );
    assert!(s.agent.capsules().is_empty(), "nothing left on the host");
    let (_, list) = s.a("GET", "/v1/capsules").await;
    assert_eq!(list, json!([]));

    sqlx::query("DROP TRIGGER refuse_capsules")
        .execute(&raw)
        .await
        .unwrap();
    // The reservation went with the failure: the team's one capsule fits.
    s.create().await;
}

/// A client that gives up while the host is still making its capsule: the create goes on
/// without it, and the capsule the host made gets its row (never a capsule on a host that no
/// row knows).
#[tokio::test]
async fn a_create_whose_client_goes_away_still_records_its_capsule() {
    let s = start().await;
    s.agent.slow_create(std::time::Duration::from_millis(1500));
    let gone = s
        .http
        .post(format!("{}/v1/capsules", s.base))
        .header("X-API-Key", &s.key_a)
        .json(&json!({}))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first: {gone:?}");
    let on_host: Vec<String> = s.agent.capsules().into_keys().collect();
    assert_eq!(on_host.len(), 1, "the host made it");
    let mut listed = json!([]);
    for _ in 0..100 {
        listed = s.a("GET", "/v1/capsules").await.1;
        if listed.as_array().is_some_and(|l| !l.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], on_host[0].as_str());
    assert_eq!(listed[0]["status"], "running");
    assert!(s.agent.calls("destroy_capsule").is_empty());
}

#[tokio::test]
async fn the_reconciler_makes_rows_follow_the_host() {
    let s = start().await;
    // Three capsules of three teams' worth: lift the one-capsule limit.
    quotas::set_defaults(&s.state.db, &Limits::default())
        .await
        .unwrap();
    let paused = s.create().await;
    let lost = s.create().await;
    let crashed = s.create().await;
    let steady = s.create().await;
    s.agent.set_state(&paused, CapsuleState::Paused, "");
    s.agent.forget(&lost);
    s.agent
        .set_state(&crashed, CapsuleState::Error, "the VMM exited");
    let mut events = s.state.events.subscribe();

    wrenn_server::reconcile(&s.state).await.unwrap();

    let status = |id: &str| {
        let s = &s;
        let id = id.to_string();
        async move { s.a("GET", &format!("/v1/capsules/{id}")).await.1 }
    };
    assert_eq!(status(&paused).await["status"], "paused");
    let row = status(&lost).await;
    assert_eq!(row["status"], "error");
    assert_eq!(row["error"], "the host no longer has this capsule");
    let row = status(&crashed).await;
    assert_eq!(
        (row["status"].as_str(), row["error"].as_str()),
        (Some("error"), Some("the VMM exited"))
    );
    assert_eq!(status(&steady).await["status"], "running");
    // One event per change, by the reconciler.
    let mut changed = Vec::new();
    while let Ok(e) = events.try_recv() {
        assert_eq!(e.event, "capsule.state.changed");
        assert_eq!(e.actor.id, "reconciler");
        changed.push(e.resource.id);
    }
    changed.sort();
    let mut expected = vec![paused.clone(), lost.clone(), crashed.clone()];
    expected.sort();
    assert_eq!(changed, expected);

    // A second pass finds nothing to change.
    wrenn_server::reconcile(&s.state).await.unwrap();
    assert!(events.try_recv().is_err());
    // The host failing to list: the pass fails, the rows stay.
    s.agent
        .fail_next("list_capsules", Status::unavailable("restarting"));
    assert!(wrenn_server::reconcile(&s.state).await.is_err());
    assert_eq!(status(&steady).await["status"], "running");
}

/// A capsule its host lists and no live row places there (a create whose control plane died
/// before writing the row, a move's old copy): noted by a pass, destroyed once it has been so
/// for the grace; a capsule with its row is never touched.
#[tokio::test]
async fn the_reconciler_destroys_a_stray_after_the_grace() {
    let s = start().await;
    let kept = s.create().await;
    let stray = wrenn_types::Id::new(wrenn_types::IdKind::Capsule).to_string();
    s.agent.put(wrenn_proto::agent::v1::Capsule {
        id: stray.clone(),
        template: "minimal".into(),
        state: CapsuleState::Running as i32,
        ..Default::default()
    });
    let strays = wrenn_server::Strays::default();
    let hour = std::time::Duration::from_secs(3600);
    // A plain pass, and a pass within the grace: noted, not destroyed.
    wrenn_server::reconcile(&s.state).await.unwrap();
    wrenn_server::reconcile_with(&s.state, &strays, hour)
        .await
        .unwrap();
    assert!(s.agent.capsules().contains_key(&stray));
    assert!(s.agent.calls("destroy_capsule").is_empty());
    // Past the grace: destroyed; the capsule with a row stays.
    wrenn_server::reconcile_with(&s.state, &strays, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(s.agent.calls("destroy_capsule"), vec![stray.clone()]);
    let left: Vec<String> = s.agent.capsules().into_keys().collect();
    assert_eq!(left, vec![kept.clone()]);
    let (_, row) = s.a("GET", &format!("/v1/capsules/{kept}")).await;
    assert_eq!(row["status"], "running");
}

#[tokio::test]
async fn another_team_can_neither_see_nor_touch_a_capsule() {
    let s = start().await;
    let id = s.create().await;
    let b = |method: &'static str, path: String| {
        let s = &s;
        async move { s.call(&s.key_b, method, &path).await }
    };
    let (status, list) = b("GET", "/v1/capsules".into()).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    for (method, path) in [
        ("GET", format!("/v1/capsules/{id}")),
        ("POST", format!("/v1/capsules/{id}/pause")),
        ("POST", format!("/v1/capsules/{id}/resume")),
        ("POST", format!("/v1/capsules/{id}/ping")),
        ("DELETE", format!("/v1/capsules/{id}")),
    ] {
        let (status, body) = b(method, path.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{method} {path}"
        );
    }
    // Nothing reached the host, and team A's capsule runs on.
    assert!(s.agent.calls("pause_capsule").is_empty());
    assert!(s.agent.calls("destroy_capsule").is_empty());
    let (_, got) = s.a("GET", &format!("/v1/capsules/{id}")).await;
    assert_eq!(got["status"], "running");
}
