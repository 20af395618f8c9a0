//! The control plane the handler tests start: the real router on SQLite, the first start's
//! admin (team A, with its API key and password), by default a second team (B, bob's, with its
//! API key), and one built-in host that is the in-process
//! [`FakeAgent`](crate::fake_agent::FakeAgent) (or, by [`Options`], an agent client that never
//! connects). Also the pieces other fixtures share: [`bootstrap`], [`serve`], [`send`].
#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use wrenn_server::{
    accounts::SignupPolicy,
    db::Db,
    quotas::{self, Limits},
    AdminKey, AppState,
};

use crate::fake_agent::FakeAgent;

pub struct TwoTeams {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub agent: FakeAgent,
    /// Team A's key (the admin's) and team B's (empty without team B).
    pub key_a: String,
    pub key_b: String,
    /// The admin user's password (`admin@localhost`).
    pub admin_password: String,
    /// The database's URL, for a second connection.
    pub url: String,
    pub _dir: tempfile::TempDir,
}

/// How [`start_with`] sets the server up.
pub struct Options {
    /// Every team's default quotas (`None`: none set).
    pub defaults: Option<Limits>,
    pub signup: SignupPolicy,
    /// Team B (bob@example.com's) and its key.
    pub team_b: bool,
    /// The built-in host answers (the fake agent); otherwise it never connects.
    pub fake_host: bool,
}

impl Options {
    /// Two teams, each allowed `capsules` capsules, closed sign-up, the fake host.
    pub fn capsules(capsules: i64) -> Options {
        Options {
            defaults: Some(Limits {
                capsules: Some(capsules),
                ..Limits::default()
            }),
            signup: SignupPolicy::Closed,
            team_b: true,
            fake_host: true,
        }
    }

    /// The admin's team only, open sign-up, a host that never answers.
    pub fn admin_only(defaults: Option<Limits>) -> Options {
        Options {
            defaults,
            signup: SignupPolicy::Open,
            team_b: false,
            fake_host: false,
        }
    }
}

/// The server, each team allowed `capsules` capsules.
pub async fn start(capsules: i64) -> TwoTeams {
    start_with(Options::capsules(capsules)).await
}

pub async fn start_with(o: Options) -> TwoTeams {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wrenn.db").display()
    );
    let db = Db::open(&url).await.unwrap();
    let (key_a, admin_password) = bootstrap(&db, dir.path()).await;
    let key_b = match o.team_b {
        true => team_b(&db).await.1,
        false => String::new(),
    };
    if let Some(d) = &o.defaults {
        quotas::set_defaults(&db, d).await.unwrap();
    }
    let (agent, client) = FakeAgent::start().await;
    let client = if o.fake_host {
        client
    } else {
        crate::state::no_agent()
    };
    let state = crate::state::with_agent(db, o.signup, client).await;
    let base = serve(&state).await;
    TwoTeams {
        base,
        http: reqwest::Client::new(),
        state,
        agent,
        key_a,
        key_b,
        admin_password,
        url,
        _dir: dir,
    }
}

/// The first start on `db`: the admin's API key and password (files in `dir`).
pub async fn bootstrap(db: &Db, dir: &std::path::Path) -> (String, String) {
    let password = dir.join("admin.password");
    let AdminKey::Made(key) = wrenn_server::bootstrap(db, &dir.join("admin.key"), &password)
        .await
        .unwrap()
    else {
        panic!("a first start makes the admin key")
    };
    let password = std::fs::read_to_string(password)
        .unwrap()
        .trim()
        .to_string();
    (key, password)
}

/// Team B (bob@example.com's): its id and API key.
pub async fn team_b(db: &Db) -> (String, String) {
    let (_, team) = db
        .create_user_with_team("bob@example.com", "Bob", "not-a-hash", "b")
        .await
        .unwrap();
    let (_, key) = db.create_api_key(&team.id, "b").await.unwrap();
    (team.id, key)
}

/// Serves the real router on a loopback port: its base URL.
pub async fn serve(state: &AppState) -> String {
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
    base
}

/// Sends `req`: the status and the JSON answer (`Null` when empty).
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

/// `method path` at `base` with API key `key` (and JSON `body`): the status and the JSON
/// answer.
pub async fn keyed(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http
        .request(method, format!("{base}{path}"))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    send(req).await
}

impl TwoTeams {
    /// [`keyed`] on this server.
    pub async fn keyed(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        keyed(&self.http, &self.base, key, method, path, body).await
    }

    /// Logs `email` in: the token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, b) = send(
            self.http
                .post(format!("{}/v1/auth/login", self.base))
                .json(&json!({ "email": email, "password": password })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    /// Signs `email` up (open sign-up) with the password "correct horse": its token.
    pub async fn signup(&self, email: &str) -> String {
        let (status, b) = send(
            self.http
                .post(format!("{}/v1/auth/signup", self.base))
                .json(&json!({ "email": email, "password": "correct horse" })),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{b}");
        self.login(email, "correct horse").await
    }
}
