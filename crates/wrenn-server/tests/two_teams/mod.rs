//! The control plane the handler tests start: the real router on SQLite, two teams (A, the
//! admin's, and B, bob's) each with an API key, and one built-in host that is the in-process
//! [`FakeAgent`](crate::fake_agent::FakeAgent).

use tokio::net::TcpListener;
use wrenn_server::{
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
    /// Team A's key (the admin's) and team B's.
    pub key_a: String,
    pub key_b: String,
    /// The database's URL, for a second connection.
    pub url: String,
    pub _dir: tempfile::TempDir,
}

/// The server, each team allowed `capsules` capsules.
pub async fn start(capsules: i64) -> TwoTeams {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wrenn.db").display()
    );
    let db = Db::open(&url).await.unwrap();
    let AdminKey::Made(key_a) = wrenn_server::bootstrap(
        &db,
        &dir.path().join("admin.key"),
        &dir.path().join("admin.password"),
    )
    .await
    .unwrap() else {
        panic!("a first start makes the admin key")
    };
    let (_, team_b) = db
        .create_user_with_team("bob@example.com", "Bob", "not-a-hash", "b")
        .await
        .unwrap();
    let (_, key_b) = db.create_api_key(&team_b.id, "b").await.unwrap();
    quotas::set_defaults(
        &db,
        &Limits {
            capsules: Some(capsules),
            ..Limits::default()
        },
    )
    .await
    .unwrap();
    let (agent, client) = FakeAgent::start().await;
    let state =
        crate::state::with_agent(db, wrenn_server::accounts::SignupPolicy::Closed, client).await;
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
    TwoTeams {
        base,
        http: reqwest::Client::new(),
        state,
        agent,
        key_a,
        key_b,
        url,
        _dir: dir,
    }
}
