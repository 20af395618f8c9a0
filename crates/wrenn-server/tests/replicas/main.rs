//! Several control planes on one PostgreSQL (`WRENN_TEST_DATABASE_URL`; each test makes its
//! own database and drops it): two `AppState`s in one process stand for two replicas, each
//! with its own fake host agent (`fake_agent`). Events made on one reach the other's SSE
//! stream once; a lease has one holder and passes on after expiry; the reconciler runs on
//! one replica at a time and another takes over when it dies.

#[allow(dead_code)]
#[path = "../fake_agent/mod.rs"]
mod fake_agent;

#[path = "../state/mod.rs"]
mod state;

use std::{future::Future, time::Duration};

use fake_agent::FakeAgent;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use wrenn_server::{
    db::{Db, Lease},
    quotas::{self, Limits},
    AdminKey, AppState,
};

mod leases;
#[path = "../pg/mod.rs"]
mod pg;

/// Runs `check` with the URL of a new PostgreSQL database, then drops it (also on failure).
async fn on_postgres<F, Fut>(check: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    pg::on_new_database("wrenn_replicas", check).await
}

/// One replica: its state (relaying events when `relay`), its fake agent, its API's address.
struct Replica {
    state: AppState,
    agent: FakeAgent,
    base: String,
}

async fn replica(url: &str, relay: bool) -> Replica {
    let db = Db::open(url).await.unwrap();
    let (agent, client) = FakeAgent::start().await;
    let state = state::with_agent(db, wrenn_server::accounts::SignupPolicy::Closed, client).await;
    if relay {
        assert!(wrenn_server::events::relay::start(&state)
            .await
            .unwrap()
            .is_some());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = wrenn_server::router(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Replica { state, agent, base }
}

/// The admin's key, made on the shared database.
async fn admin_key(db: &Db) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let AdminKey::Made(key) = wrenn_server::bootstrap(
        db,
        &dir.path().join("admin.key"),
        &dir.path().join("admin.password"),
    )
    .await
    .unwrap() else {
        panic!("a first start makes the admin key")
    };
    quotas::set_defaults(db, &Limits::default()).await.unwrap();
    (key, dir)
}

/// The events of an SSE stream, one JSON value per `data:` line.
struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    async fn open(base: &str, key: &str) -> Sse {
        let resp = reqwest::Client::new()
            .get(format!("{base}/v1/events/stream"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut sse = Sse {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        };
        assert_eq!(sse.next().await["event"], "connected");
        sse
    }

    /// The next event (waits at most 30 s: an event that never comes fails the test).
    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let frame: String = self.buf.drain(..end + 2).collect();
                    if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                        return serde_json::from_str(data.trim()).unwrap();
                    }
                    continue; // a keep-alive comment
                }
                let chunk = self.body.next().await.expect("the stream ended").unwrap();
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event within 30 s")
    }
}

async fn post(base: &str, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().post(format!("{base}{path}"));
    if !key.is_empty() {
        req = req.header("X-API-Key", key);
    }
    let resp = req.json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_event_made_on_one_replica_reaches_every_stream_once() {
    on_postgres(|url| async move {
        let a = replica(&url, true).await;
        let b = replica(&url, true).await;
        let (key, _dir) = admin_key(&a.state.db).await;
        let mut on_a = Sse::open(&a.base, &key).await;
        let mut on_b = Sse::open(&b.base, &key).await;

        // Made through A (its agent), seen on both streams.
        let (status, made) = post(&a.base, &key, "/v1/capsules", json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        // Large enough to travel through the notifications table (NOTIFY takes < 8000 bytes).
        let big: serde_json::Map<String, Value> = (0..12)
            .map(|i| (format!("k{i}"), json!("x".repeat(1000))))
            .collect();
        let (status, big_made) =
            post(&b.base, &key, "/v1/capsules", json!({"metadata": big})).await;
        assert_eq!(status, StatusCode::CREATED, "{big_made}");
        // Then one more through B, so a duplicate of the first two would show before it.
        let (status, last) = post(&b.base, &key, "/v1/capsules", json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{last}");

        for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
            let mut seen = Vec::new();
            loop {
                let e = stream.next().await;
                assert_eq!(e["event"], "capsule.create", "on {name}: {e}");
                let id = e["resource"]["id"].as_str().unwrap().to_string();
                if id == big_made["id"] {
                    assert_eq!(e["sandbox"]["metadata"], json!(big), "on {name}");
                }
                seen.push(id);
                if seen.last().map(String::as_str) == last["id"].as_str() {
                    break;
                }
            }
            assert_eq!(
                seen,
                [&made["id"], &big_made["id"], &last["id"]].map(|v| v.as_str().unwrap()),
                "on {name}: each event once, in order"
            );
        }
        // The capsules live on the agents of the replicas that made them.
        assert_eq!(a.agent.capsules().len(), 1);
        assert_eq!(b.agent.capsules().len(), 2);
    })
    .await
}

#[tokio::test]
async fn a_replica_without_the_relay_keeps_its_events_to_itself() {
    on_postgres(|url| async move {
        let a = replica(&url, false).await;
        let b = replica(&url, true).await;
        let (key, _dir) = admin_key(&a.state.db).await;
        let mut on_a = Sse::open(&a.base, &key).await;
        let mut on_b = Sse::open(&b.base, &key).await;
        let (_, from_a) = post(&a.base, &key, "/v1/capsules", json!({})).await;
        let (_, from_b) = post(&b.base, &key, "/v1/capsules", json!({})).await;
        // A (no relay) delivers its own event locally and never hears B's; B hears only its own.
        assert_eq!(on_a.next().await["resource"]["id"], from_a["id"]);
        assert_eq!(on_b.next().await["resource"]["id"], from_b["id"]);
        let (_, again) = post(&a.base, &key, "/v1/capsules", json!({})).await;
        assert_eq!(on_a.next().await["resource"]["id"], again["id"]);
    })
    .await
}

/// Waits (at most 60 s) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 60 s");
}

#[tokio::test]
async fn the_reconciler_runs_on_one_replica_and_another_takes_over() {
    on_postgres(|url| async move {
        let a = replica(&url, false).await;
        let b = replica(&url, false).await;
        let every = Duration::from_millis(100);
        let on_a = wrenn_server::spawn_reconciler(a.state.clone(), every);
        let on_b = wrenn_server::spawn_reconciler(b.state.clone(), every);
        // The built-in host's first heartbeat lists capsules too: count the passes after it.
        let start = [&a, &b].map(|r| r.agent.calls("list_capsules").len());
        let passes = |r: &Replica| {
            let before = if std::ptr::eq(r, &a) {
                start[0]
            } else {
                start[1]
            };
            r.agent.calls("list_capsules").len() - before
        };
        until("five passes", || passes(&a) + passes(&b) >= 5).await;
        let (holder, other, holder_tasks, other_tasks) = if passes(&a) > 0 {
            (&a, &b, on_a, on_b)
        } else {
            (&b, &a, on_b, on_a)
        };
        assert_eq!(passes(other), 0, "only the lease's holder reconciles");
        assert_eq!(
            Lease::holder_of(&a.state.db, wrenn_server::reconcile::RECONCILE_LEASE)
                .await
                .unwrap()
                .as_deref(),
            Some(holder.state.db.instance())
        );
        // The holder dies: after the lease expires the other one reconciles, alone.
        for t in holder_tasks {
            t.abort();
        }
        until("the other replica takes over", || passes(other) >= 3).await;
        let dead = passes(holder);
        until("more passes", || passes(other) >= 6).await;
        assert_eq!(passes(holder), dead);
        assert_eq!(
            Lease::holder_of(&a.state.db, wrenn_server::reconcile::RECONCILE_LEASE)
                .await
                .unwrap()
                .as_deref(),
            Some(other.state.db.instance())
        );
        for t in other_tasks {
            t.abort();
        }
    })
    .await
}

#[tokio::test]
async fn log_in_limits_count_across_replicas() {
    on_postgres(|url| async move {
        let a = replica(&url, false).await;
        let b = replica(&url, false).await;
        let (_key, _dir) = admin_key(&a.state.db).await;
        let wrong = json!({"email": wrenn_server::ADMIN_EMAIL, "password": "not the password"});
        // Failures alternate between the replicas; together they reach the account's limit.
        for i in 0..wrenn_server::accounts::limits::ACCOUNT_FAILURES {
            let base = if i % 2 == 0 { &a.base } else { &b.base };
            let (status, body) = post(base, "", "/v1/auth/login", wrong.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}: {body}");
        }
        for base in [&a.base, &b.base] {
            let (status, body) = post(base, "", "/v1/auth/login", wrong.clone()).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    })
    .await
}
