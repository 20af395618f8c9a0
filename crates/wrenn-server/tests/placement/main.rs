//! Placement and routing over several hosts, fast and without QEMU: the real router and SQLite
//! storage, with several fake host agents ([`fake_agent`], each its own loopback address and
//! host row) behind the server's host pool. Where creates land (capacity, tags, BYOC, many at
//! once), that every call reaches the capsule's own host, the per-host reconciler, and what a
//! capsule of a silent host answers.

#[path = "../fake_agent/mod.rs"]
mod fake_agent;

mod placing;
mod routing;

#[allow(dead_code)]
#[path = "../pg/mod.rs"]
mod pg;

#[allow(dead_code)]
#[path = "../state/mod.rs"]
mod state;

#[path = "../two_teams/mod.rs"]
mod two_teams;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::AnyPool;
use wrenn_server::{
    accounts::{Accounts, SignupPolicy},
    db::Db,
    pool::HostPool,
    quotas::{self, Limits},
    AppState,
};
use wrenn_types::{
    api::hosts::{HostLoad, HostSpecs},
    Id, IdKind,
};

use fake_agent::FakeAgent;

/// A host of the test: its id and its fake agent.
pub struct Host {
    pub id: String,
    pub fake: FakeAgent,
}

pub struct Cluster {
    base: String,
    http: reqwest::Client,
    pub state: AppState,
    /// A second pool on the same database, for rows the API does not make here (hosts).
    raw: AnyPool,
    /// The platform admin's key (team A) and team B's.
    pub key_a: String,
    pub key_b: String,
    pub team_b: String,
    _dir: tempfile::TempDir,
}

/// Room for 4 capsules of 1 vCPU, 512 MB and 2 GB disk: 2848 MB − (512 + 10 %) = 2052 MB of
/// memory, 8 vCPUs (2 cores × 4), 20000 MB − (2048 + 10 %) of disk.
pub fn small_specs() -> HostSpecs {
    HostSpecs {
        arch: "x86_64".into(),
        cpu_cores: 2,
        memory_mb: 2848,
        disk_mb: 20_000,
        slots: "1-100".into(),
        vmm: "qemu".into(),
        accel: "tcg".into(),
    }
}

/// Room for many.
pub fn big_specs() -> HostSpecs {
    HostSpecs {
        cpu_cores: 64,
        memory_mb: 1 << 20,
        disk_mb: 1 << 24,
        ..small_specs()
    }
}

impl Cluster {
    /// The server on SQLite, no host yet.
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("wrenn.db").display()
        );
        Cluster::start_on(&url, dir).await
    }

    /// The server on the database at `url`, no host yet.
    pub async fn start_on(url: &str, dir: tempfile::TempDir) -> Cluster {
        let url = url.to_string();
        let db = Db::open(&url).await.unwrap();
        let (key_a, _) = two_teams::bootstrap(&db, dir.path()).await;
        let (team_b, key_b) = two_teams::team_b(&db).await;
        quotas::set_defaults(&db, &Limits::default()).await.unwrap();
        let state = AppState::new(
            db,
            HostPool::new(None),
            Accounts::new(SignupPolicy::Closed),
            Default::default(),
            "wrenn.test",
        )
        .unwrap();
        let base = two_teams::serve(&state).await;
        sqlx::any::install_default_drivers();
        let raw = AnyPool::connect(&url).await.unwrap();
        Cluster {
            base,
            http: reqwest::Client::new(),
            state,
            raw,
            key_a,
            key_b,
            team_b,
            _dir: dir,
        }
    }

    /// A new online host (a fake agent): `regular`, or `byoc` of `team`; with `tags` and the
    /// specs its first heartbeat reports.
    pub async fn host(&self, team: Option<&str>, tags: &[&str], specs: HostSpecs) -> Host {
        let (fake, address) = FakeAgent::serve().await;
        let id = Id::new(IdKind::Host).to_string();
        sqlx::query(
            "INSERT INTO hosts (id, kind, team_id, status, address, created_by, created_at, \
             updated_at) VALUES ($1, $2, $3, 'online', $4, 'test', 1, 1)",
        )
        .bind(&id)
        .bind(if team.is_some() { "byoc" } else { "regular" })
        .bind(team)
        .bind(&address)
        .execute(&self.raw)
        .await
        .unwrap();
        for t in tags {
            sqlx::query("INSERT INTO host_tags (host_id, tag) VALUES ($1, $2)")
                .bind(&id)
                .bind(*t)
                .execute(&self.raw)
                .await
                .unwrap();
        }
        let beat = self
            .state
            .db
            .record_heartbeat(&id, &specs, &HostLoad::default())
            .await
            .unwrap();
        assert_eq!(beat, Some(false), "an online host takes its heartbeat");
        Host { id, fake }
    }

    /// Runs `sql` with `args` bound in order on the database.
    pub async fn exec(&self, sql: &str, args: &[&str]) {
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(*a);
        }
        q.execute(&self.raw).await.unwrap();
    }

    /// `method path` as `key` with `body`: the status and the JSON answer (`Null` when empty).
    pub async fn call(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        two_teams::keyed(&self.http, &self.base, key, method, path, body).await
    }

    /// Creates a 1-vCPU, 512 MB capsule with `extra` fields as `key`: its id, or the error.
    pub async fn create(&self, key: &str, extra: Value) -> Result<String, (StatusCode, Value)> {
        let mut body = json!({ "template": "minimal", "vcpus": 1, "memory_mb": 512 });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        match self.call(key, "POST", "/v1/capsules", Some(body)).await {
            (StatusCode::CREATED, v) => Ok(v["id"].as_str().expect("its id").to_string()),
            other => Err(other),
        }
    }

    /// The host the database says capsule `id` is on.
    pub async fn host_of(&self, id: &str) -> String {
        self.state
            .db
            .capsule_any(id)
            .await
            .unwrap()
            .host_id
            .expect("a placed capsule has a host")
    }
}

/// A fresh PostgreSQL database on `WRENN_TEST_DATABASE_URL`'s server: its URL, and the
/// server's URL (to drop it with [`drop_pg`]).
pub async fn fresh_pg() -> (String, String) {
    let admin_url = std::env::var("WRENN_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect(
            "WRENN_TEST_DATABASE_URL is not set: export \
             WRENN_TEST_DATABASE_URL=$(scripts/install-postgres.sh)",
        );
    sqlx::any::install_default_drivers();
    let admin = AnyPool::connect(&admin_url).await.unwrap();
    let name = format!(
        "wrenn_placement_{}",
        &Id::new(IdKind::Build).to_string()[4..20].to_lowercase()
    );
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
    (url, admin_url)
}

/// Drops the database at `url` (made by [`fresh_pg`]).
pub async fn drop_pg(url: &str, admin_url: &str) {
    let name = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let admin = AnyPool::connect(admin_url).await.unwrap();
    pg::drop_database(&admin, name)
        .await
        .unwrap_or_else(|e| panic!("dropping database {name}: {e}"));
}

/// The error code of an error answer.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The error message of an error answer.
pub fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}
