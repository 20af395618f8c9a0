//! Per-team quotas: who reads and sets them (over HTTP, SQLite, an agent client that never
//! connects), how create and resume are refused (429 `quota_exceeded` naming the quota, its
//! limit and use) before the host is asked, and that concurrent reservations never exceed a
//! quota (SQLite and PostgreSQL: `WRENN_TEST_DATABASE_URL`).

#[path = "pg/mod.rs"]
mod pg;

#[path = "state/mod.rs"]
mod state;

#[allow(dead_code)] // The fake's tools other suites use.
mod fake_agent;

mod two_teams;

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wrenn_server::{
    db::{now_ms, CapsuleRow, Db},
    quotas::{self, Amounts, Limits},
};

use two_teams::{send, Options, TwoTeams as Server};

#[derive(Clone, Copy)]
enum As<'a> {
    Key(&'a str),
    /// A user token acting in a team.
    UserIn(&'a str, &'a str),
}

async fn start(defaults: Limits) -> Server {
    two_teams::start_with(Options::admin_only(Some(defaults))).await
}

struct Account {
    token: String,
    team: String,
}

impl Server {
    async fn call(
        &self,
        method: Method,
        path: &str,
        who: As<'_>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        rb = match who {
            As::Key(k) => rb.header("x-api-key", k),
            As::UserIn(t, team) => rb.bearer_auth(t).header("x-team-id", team),
        };
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        send(rb).await
    }

    /// A new user (open sign-up) and its own team.
    async fn account(&self, email: &str) -> Account {
        let token = self.signup(email).await;
        let (_, teams) = send(
            self.http
                .get(format!("{}/v1/teams", self.base))
                .bearer_auth(&token),
        )
        .await;
        Account {
            token,
            team: teams[0]["id"].as_str().unwrap().into(),
        }
    }

    /// A capsule row of `team` (what the control plane records after a create).
    async fn capsule(&self, team: &str, status: &str, vcpus: i64, memory_mb: i64, disk: i64) {
        let now = now_ms();
        self.state
            .db
            .insert_capsule(&CapsuleRow {
                id: wrenn_types::Id::new(wrenn_types::IdKind::Capsule).to_string(),
                team_id: team.into(),
                template: "minimal".into(),
                status: status.parse().unwrap(),
                vcpus,
                memory_mb,
                disk_size_mb: disk,
                timeout_sec: 0,
                metadata: HashMap::new(),
                error: None,
                created_at: now,
                started_at: Some(now),
                last_active_at: Some(now),
                updated_at: now,
                host_id: None,
            })
            .await
            .unwrap();
    }
}

fn refused(r: &(StatusCode, Value)) -> String {
    assert_eq!(r.0, StatusCode::TOO_MANY_REQUESTS, "{}", r.1);
    assert_eq!(r.1["error"]["code"], "quota_exceeded");
    r.1["error"]["message"].as_str().unwrap().to_string()
}

const DEFAULTS: Limits = Limits {
    capsules: Some(2),
    vcpus: Some(4),
    memory_mb: Some(2048),
    disk_mb: Some(10_000),
    snapshots: Some(1),
};

#[tokio::test]
async fn owners_and_platform_admins_read_quotas_only_admins_set_them() {
    let s = start(DEFAULTS).await;
    let alice = s.account("alice@example.com").await;
    let bob = s.account("bob@example.com").await;
    let carol = s.account("carol@example.com").await;
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/teams/{}/members", alice.team),
            As::UserIn(&alice.token, &alice.team),
            Some(json!({ "email": "bob@example.com" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, key) = s
        .call(
            Method::POST,
            "/v1/api-keys",
            As::UserIn(&alice.token, &alice.team),
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let alice_key = key["key"].as_str().unwrap().to_string();
    let path = format!("/v1/teams/{}/quotas", alice.team);

    // Reading: the owner and a platform admin; a plain member and the team's key are
    // forbidden; someone outside the team does not learn it exists.
    let (st, q) = s
        .call(
            Method::GET,
            &path,
            As::UserIn(&alice.token, &alice.team),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{q}");
    assert_eq!(q["team_id"], alice.team.as_str());
    assert_eq!(q["limits"]["capsules"], 2);
    assert_eq!(q["overrides"]["capsules"], Value::Null);
    assert_eq!(q["defaults"]["snapshots"], 1);
    assert_eq!(q["usage"]["capsules"], 0);
    let (st, _) = s.call(Method::GET, &path, As::Key(&s.key_a), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = s
        .call(
            Method::GET,
            &path,
            As::UserIn(&bob.token, &alice.team),
            None,
        )
        .await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    let (st, _) = s.call(Method::GET, &path, As::Key(&alice_key), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, b) = s
        .call(
            Method::GET,
            &path,
            As::UserIn(&carol.token, &carol.team),
            None,
        )
        .await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    let (st, _) = s
        .call(
            Method::GET,
            "/v1/teams/team-nosuchteam/quotas",
            As::Key(&s.key_a),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Setting: platform admins only.
    let body = json!({ "capsules": 5, "vcpus": null });
    let (st, _) = s
        .call(
            Method::PUT,
            &path,
            As::UserIn(&alice.token, &alice.team),
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .call(
            Method::PUT,
            &path,
            As::UserIn(&carol.token, &carol.team),
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for bad in [json!({ "capsules": -1 }), json!({ "cpus": 3 }), json!([1])] {
        let (st, b) = s
            .call(Method::PUT, &path, As::Key(&s.key_a), Some(bad))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(b["error"]["code"], "invalid_request");
    }
    let (st, q) = s
        .call(Method::PUT, &path, As::Key(&s.key_a), Some(body))
        .await;
    assert_eq!(st, StatusCode::OK, "{q}");
    assert_eq!(q["limits"]["capsules"], 5);
    assert_eq!(q["overrides"]["capsules"], 5);
    assert_eq!(q["limits"]["vcpus"], 4, "null is the default");
    let (_, q) = s
        .call(
            Method::GET,
            &path,
            As::UserIn(&alice.token, &alice.team),
            None,
        )
        .await;
    assert_eq!(q["limits"]["capsules"], 5);
    // Back to the defaults.
    let (_, q) = s
        .call(Method::PUT, &path, As::Key(&s.key_a), Some(json!({})))
        .await;
    assert_eq!(q["limits"]["capsules"], 2);
    // The change is in the acting (platform) team's audit log.
    let (_, log) = s
        .call(Method::GET, "/v1/audit", As::Key(&s.key_a), None)
        .await;
    let sets = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "team.quotas.set" && e["resource"]["id"] == alice.team.as_str())
        .count();
    assert_eq!(sets, 2, "{log}");
}

#[tokio::test]
async fn create_and_resume_are_refused_beyond_a_quota_before_the_host_is_asked() {
    let s = start(DEFAULTS).await;
    let alice = s.account("alice@example.com").await;
    let me = As::UserIn(&alice.token, &alice.team);
    s.capsule(&alice.team, "running", 2, 1024, 4000).await;
    s.capsule(&alice.team, "paused", 2, 1024, 4000).await;
    // Destroyed and failed capsules hold nothing.
    s.capsule(&alice.team, "stopped", 32, 65536, 100_000).await;
    s.capsule(&alice.team, "error", 32, 65536, 100_000).await;
    let (_, q) = s
        .call(
            Method::GET,
            &format!("/v1/teams/{}/quotas", alice.team),
            me,
            None,
        )
        .await;
    assert_eq!(
        q["usage"],
        json!({ "capsules": 2, "vcpus": 2, "memory_mb": 1024, "disk_mb": 8000, "snapshots": 0 })
    );

    let create = |vcpus: u32, memory_mb: u32, disk: u32| json!({ "template": "minimal", "vcpus": vcpus, "memory_mb": memory_mb, "disk_size_mb": disk });
    // Two capsules is the limit.
    let r = s
        .call(Method::POST, "/v1/capsules", me, Some(create(1, 128, 100)))
        .await;
    assert_eq!(
        refused(&r),
        "quota capsules exceeded: the team's limit is 2, it uses 2, this request needs 1 more"
    );
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/teams/{}/quotas", alice.team),
            As::Key(&s.key_a),
            Some(json!({ "capsules": 3 })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let r = s
        .call(
            Method::POST,
            "/v1/capsules",
            me,
            Some(create(3, 1024, 2000)),
        )
        .await;
    assert_eq!(
        refused(&r),
        "quota vcpus exceeded: the team's limit is 4, it uses 2, this request needs 3 more"
    );
    let r = s
        .call(
            Method::POST,
            "/v1/capsules",
            me,
            Some(create(2, 1026, 2000)),
        )
        .await;
    assert!(
        refused(&r).starts_with("quota memory_mb exceeded: the team's limit is 2048, it uses 1024")
    );
    let r = s
        .call(
            Method::POST,
            "/v1/capsules",
            me,
            Some(create(2, 1024, 2001)),
        )
        .await;
    assert!(
        refused(&r).starts_with("quota disk_mb exceeded: the team's limit is 10000, it uses 8000")
    );
    // Exactly at every limit: allowed, so the host is asked (and here it is unreachable).
    // A failed create holds nothing afterwards: the same create gets as far again.
    for _ in 0..2 {
        let (st, b) = s
            .call(
                Method::POST,
                "/v1/capsules",
                me,
                Some(create(2, 1024, 2000)),
            )
            .await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_eq!(b["error"]["code"], "host_unavailable");
    }

    // Resume: the paused capsule's vCPUs and memory count again.
    let paused = s
        .state
        .db
        .capsules(&alice.team)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.status == wrenn_types::CapsuleStatus::Paused)
        .unwrap()
        .id;
    let resume = format!("/v1/capsules/{paused}/resume");
    let (st, _) = s.call(Method::POST, &resume, me, None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "within the quota");
    s.capsule(&alice.team, "running", 1, 128, 100).await;
    let r = s.call(Method::POST, &resume, me, None).await;
    assert_eq!(
        refused(&r),
        "quota vcpus exceeded: the team's limit is 4, it uses 3, this request needs 2 more"
    );
    // Another team's use is not this team's.
    let bob = s.account("bob@example.com").await;
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/capsules",
            As::UserIn(&bob.token, &bob.team),
            Some(create(4, 2048, 10_000)),
        )
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
}

/// The same check on a fresh SQLite file and a fresh PostgreSQL database.
async fn concurrent_reservations_never_exceed(db: Db) {
    let (_, team) = db
        .create_user_with_team("racer@example.com", "r", "$argon2id$x", "t")
        .await
        .unwrap();
    quotas::set_defaults(
        &db,
        &Limits {
            capsules: Some(5),
            ..Limits::default()
        },
    )
    .await
    .unwrap();
    let one = Amounts {
        capsules: 1,
        vcpus: 1,
        memory_mb: 256,
        disk_mb: 1000,
        snapshots: 0,
    };
    let tries: Vec<_> = (0..24)
        .map(|_| {
            let (db, team) = (db.clone(), team.id.clone());
            tokio::spawn(async move { quotas::reserve(&db, &team, one).await })
        })
        .collect();
    let mut held = Vec::new();
    let mut refusals = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(r) => held.push(r),
            Err(e) => {
                assert_eq!(e.status_and_code().1, "quota_exceeded", "{e}");
                refusals += 1;
            }
        }
    }
    assert_eq!((held.len(), refusals), (5, 19));
    // A released reservation makes room for exactly one more.
    held.pop().unwrap().release().await;
    held.push(quotas::reserve(&db, &team.id, one).await.unwrap());
    assert!(quotas::reserve(&db, &team.id, one).await.is_err());
    for r in held {
        r.release().await;
    }
    quotas::reserve(&db, &team.id, one)
        .await
        .unwrap()
        .release()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reservations_never_exceed_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wrenn.db").display()
    );
    concurrent_reservations_never_exceed(Db::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reservations_never_exceed_on_postgres() {
    pg::on_new_database("wrenn_quota", |url| async move {
        let db = Db::open(&url).await.unwrap();
        let outcome = tokio::spawn(concurrent_reservations_never_exceed(db)).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await
}

/// A fork counts every child against the quotas before the host is asked: over the limit,
/// nothing is made; a bad count or a foreign capsule is refused as such.
#[tokio::test]
async fn a_fork_is_refused_beyond_a_quota_for_all_its_children() {
    let s = start(Limits {
        capsules: Some(3),
        ..DEFAULTS
    })
    .await;
    let alice = s.account("alice@example.com").await;
    let me = As::UserIn(&alice.token, &alice.team);
    s.capsule(&alice.team, "running", 1, 256, 1000).await;
    let src = s.state.db.capsules(&alice.team).await.unwrap()[0]
        .id
        .clone();
    let fork = format!("/v1/capsules/{src}/fork");
    let r = s
        .call(Method::POST, &fork, me, Some(json!({ "count": 3 })))
        .await;
    assert_eq!(
        refused(&r),
        "quota capsules exceeded: the team's limit is 3, it uses 1, this request needs 3 more"
    );
    for bad in [
        json!({ "count": 0 }),
        json!({ "count": 33 }),
        json!({ "count": "x" }),
        json!({ "n": 1 }),
    ] {
        let (st, b) = s.call(Method::POST, &fork, me, Some(bad.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_eq!(b["error"]["code"], "invalid_request", "{bad}");
    }
    // Another team's capsule, or none at all, is not found.
    let bob = s.account("bob@example.com").await;
    let (st, b) = s
        .call(
            Method::POST,
            &fork,
            As::UserIn(&bob.token, &bob.team),
            Some(json!({ "count": 1 })),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/capsules/cl-nosuch/fork",
            me,
            Some(json!({ "count": 1 })),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Within the quota the host is asked (here it is unreachable): nothing is left behind,
    // and the reservation is gone (the same fork gets as far again).
    for _ in 0..2 {
        let (st, b) = s
            .call(Method::POST, &fork, me, Some(json!({ "count": 2 })))
            .await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    }
    assert_eq!(s.state.db.capsules(&alice.team).await.unwrap().len(), 1);
}
