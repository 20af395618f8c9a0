//! The hosts' API over real HTTP, without any agent or VM: the router on a loopback listener,
//! a real PKI in a temporary folder, and SQLite or PostgreSQL (`WRENN_TEST_DATABASE_URL`: each
//! scenario runs on both). The agent's calls (register, refresh, heartbeat) are made here with
//! reqwest, as an agent makes them.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sqlx::any::AnyPoolOptions;
use tokio::net::TcpListener;
use wrenn_server::{accounts::SignupPolicy, db::Db, hosts, AppState};

mod identity;
mod manage;
mod monitor;

struct Server {
    base: String,
    http: reqwest::Client,
    db: Db,
    /// A second pool on the same database, for what the API does not change (expiry times).
    raw: sqlx::AnyPool,
    state: AppState,
    /// The platform admin's API key (`None` without the server's bootstrap).
    admin_key: Option<String>,
    dir: tempfile::TempDir,
}

/// Credentials for a request.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Key(&'a str),
    User(&'a str),
    Host(&'a str),
}

/// A user who signed up, logged in.
struct Account {
    token: String,
    team: String,
}

/// Runs `scenario` on a fresh server over SQLite and over PostgreSQL (tests
/// `name::sqlite` and `name::postgres`); `bootstrap`: with the server's admin.
macro_rules! on_both {
    ($name:ident, $scenario:ident, $bootstrap:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                let s = crate::Server::start($bootstrap).await;
                super::$scenario(&s).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                let (s, drop) = crate::Server::start_pg($bootstrap).await;
                let s = std::sync::Arc::new(s);
                let run = s.clone();
                let outcome = tokio::spawn(async move { super::$scenario(&run).await }).await;
                drop.await;
                if let Err(e) = outcome {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    };
}
pub(crate) use on_both;

impl Server {
    /// On a SQLite file.
    async fn start(bootstrap: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("wrenn.db").display()
        );
        Server::on(url, dir, bootstrap).await
    }

    /// On a new PostgreSQL database; the future drops it.
    async fn start_pg(bootstrap: bool) -> (Server, impl std::future::Future<Output = ()>) {
        let admin_url = std::env::var("WRENN_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect(
                "WRENN_TEST_DATABASE_URL is not set: export \
                 WRENN_TEST_DATABASE_URL=$(scripts/install-postgres.sh)",
            );
        sqlx::any::install_default_drivers();
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .unwrap();
        let name = format!("wrenn_hosts_{}", wrenn_types::secret::hex(8).unwrap());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let (base, query) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
        let url = format!(
            "{}/{name}{}",
            &base[..base.rfind('/').unwrap()],
            query.map(|q| format!("?{q}")).unwrap_or_default()
        );
        let s = Server::on(url, tempfile::tempdir().unwrap(), bootstrap).await;
        let raw = s.raw.clone();
        let drop = async move {
            raw.close().await;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await;
        };
        (s, drop)
    }

    async fn on(url: String, dir: tempfile::TempDir, bootstrap: bool) -> Server {
        let db = Db::open(&url).await.unwrap();
        let admin_key = if bootstrap {
            match wrenn_server::bootstrap(
                &db,
                &dir.path().join("admin-api-key"),
                &dir.path().join("admin-password"),
            )
            .await
            .unwrap()
            {
                wrenn_server::AdminKey::Made(k) => Some(k),
                other => panic!("a fresh database makes the admin key: {other:?}"),
            }
        } else {
            None
        };
        let raw = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let settings = hosts::HostSettings {
            timeout: Duration::from_secs(30),
            token_ttl: Duration::from_secs(3600),
            cert_ttl: Duration::from_secs(7 * 24 * 3600),
        };
        let state = AppState::new(
            db.clone(),
            wrenn_server::pool::HostPool::new(None),
            wrenn_server::accounts::Accounts::new(SignupPolicy::Open),
            hosts::HostIdentity::with_pki(settings, &dir.path().join("pki")).unwrap(),
            "wrenn.test",
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let serving = state.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                wrenn_server::router(serving)
                    .into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        Server {
            base,
            http: reqwest::Client::new(),
            db,
            raw,
            state,
            admin_key,
            dir,
        }
    }

    fn admin(&self) -> As<'_> {
        As::Key(self.admin_key.as_deref().expect("a bootstrapped server"))
    }

    fn req(&self, method: Method, path: &str, who: As<'_>) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match who {
            As::Nobody => rb,
            As::Key(k) => rb.header("x-api-key", k),
            As::User(t) => rb.bearer_auth(t),
            As::Host(t) => rb.header("x-host-token", t),
        }
    }

    /// Sends; the status and the JSON body (`null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        who: As<'_>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.req(method, path, who);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, body)
    }

    /// Signs up and logs in.
    async fn signup(&self, email: &str) -> Account {
        let (st, b) = self
            .call(
                Method::POST,
                "/v1/auth/signup",
                As::Nobody,
                Some(json!({ "email": email, "password": "correct horse" })),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        let (st, b) = self
            .call(
                Method::POST,
                "/v1/auth/login",
                As::Nobody,
                Some(json!({ "email": email, "password": "correct horse" })),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        let token = b["token"].as_str().unwrap().to_string();
        let (st, teams) = self
            .call(Method::GET, "/v1/teams", As::User(&token), None)
            .await;
        assert_eq!(st, StatusCode::OK, "{teams}");
        Account {
            token,
            team: teams[0]["id"].as_str().unwrap().into(),
        }
    }

    /// Makes a host as `who` (`body` as given); the answer.
    async fn create_host(&self, who: As<'_>, body: Value) -> Value {
        let (st, b) = self.call(Method::POST, "/v1/hosts", who, Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        b
    }

    /// Registers with `token` at `address`; the status and the answer.
    async fn register(&self, token: &str, address: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/hosts/register",
            As::Nobody,
            Some(json!({ "token": token, "address": address, "specs": specs() })),
        )
        .await
    }

    /// A regular host made by the admin and registered at `address`: (host id, credentials).
    async fn registered_host(&self, address: &str) -> (String, Value) {
        let made = self.create_host(self.admin(), json!({})).await;
        let token = made["registration_token"].as_str().unwrap();
        let (st, creds) = self.register(token, address).await;
        assert_eq!(st, StatusCode::CREATED, "{creds}");
        (made["host"]["id"].as_str().unwrap().to_string(), creds)
    }

    /// A heartbeat for `id` with `token` (`running` capsules); the status and the answer.
    async fn heartbeat(&self, id: &str, token: As<'_>, running: u32) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v1/hosts/{id}/heartbeat"),
            token,
            Some(json!({ "specs": specs(), "load": { "running": running } })),
        )
        .await
    }

    /// The admin's event stream: each event's JSON, as it comes.
    async fn events(&self) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
        self.events_of(self.admin()).await
    }

    /// `who`'s event stream: each event's JSON, as it comes.
    async fn events_of(&self, who: As<'_>) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
        let resp = self
            .req(Method::GET, "/v1/events/stream", who)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut body = resp.bytes_stream();
        tokio::spawn(async move {
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    for line in frame.lines() {
                        if let Some(data) = line.strip_prefix("data:") {
                            if let Ok(v) = serde_json::from_str(data.trim()) {
                                let _ = tx.send(v);
                            }
                        }
                    }
                }
            }
        });
        rx
    }

    /// The admin's audit log's actions on `host_id`, oldest first.
    async fn host_audit(&self, host_id: &str) -> Vec<String> {
        let (st, b) = self
            .call(Method::GET, "/v1/audit", self.admin(), None)
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        let mut actions: Vec<String> = b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["id"] == host_id)
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        actions.reverse();
        actions
    }

    /// Inserts a capsule row of `team_id` on `host_id` with `status`.
    async fn capsule_on(&self, id: &str, team_id: &str, host_id: &str, status: &str) {
        sqlx::query(
            "INSERT INTO capsules (id, team_id, template, status, vcpus, memory_mb, \
             disk_size_mb, timeout_sec, metadata, created_at, updated_at, host_id) \
             VALUES ($1, $2, 'minimal', $3, 1, 256, 0, 0, '{}', 1, 1, $4)",
        )
        .bind(id)
        .bind(team_id)
        .bind(status)
        .bind(host_id)
        .execute(&self.raw)
        .await
        .unwrap();
    }

    async fn capsule_status(&self, id: &str) -> String {
        use sqlx::Row;
        sqlx::query("SELECT status FROM capsules WHERE id = $1")
            .bind(id)
            .fetch_one(&self.raw)
            .await
            .unwrap()
            .try_get("status")
            .unwrap()
    }

    /// The platform team (the admin key's).
    async fn platform_team(&self) -> String {
        self.db.platform_team().await.unwrap().unwrap()
    }
}

fn specs() -> Value {
    json!({
        "arch": "x86_64", "cpu_cores": 4, "memory_mb": 8192, "disk_mb": 100000,
        "slots": "3300-3319", "vmm": "qemu", "accel": "tcg"
    })
}

/// The status and the error code of an error answer (checking its shape).
fn error_code(st: StatusCode, b: &Value) -> (u16, String) {
    assert!(b["error"]["message"].is_string(), "{b}");
    (
        st.as_u16(),
        b["error"]["code"].as_str().unwrap().to_string(),
    )
}

/// The next event named `name` (others are skipped); fails after a minute without one.
async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>, name: &str) -> Value {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let e = rx.recv().await.expect("the event stream ended");
            if e["event"] == name {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {name} event"))
}
