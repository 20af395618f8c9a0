//! The account routes over real HTTP, without any VM: the router on a loopback listener with
//! a SQLite database in a temporary folder and an agent client that never connects (only
//! routes that need no agent are called).

#[path = "../state/mod.rs"]
mod state;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use wrenn_server::{accounts::SignupPolicy, db::Db};

mod audit;
mod console_session;
mod keys;
mod sessions;
mod signup;
mod teams;

struct Server {
    base: String,
    http: reqwest::Client,
    db: Db,
    _dir: tempfile::TempDir,
}

/// Credentials for a request.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Key(&'a str),
    /// An API key in `Authorization: Bearer`.
    BearerKey(&'a str),
    User(&'a str),
    /// A user token acting in a given team (`X-Team-Id`).
    UserIn(&'a str, &'a str),
}

/// A request and the error it must get: (method, path, credentials, body, (status, code)).
type Case<'a> = (Method, String, As<'a>, Option<Value>, (u16, &'static str));

/// A user who signed up.
struct Account {
    token: String,
    id: String,
    team: String,
}

async fn start() -> Server {
    start_with(SignupPolicy::Open).await
}

async fn start_with(policy: SignupPolicy) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wrenn.db").display()
    );
    let db = Db::open(&url).await.unwrap();
    let state = state::with_agent(db.clone(), policy, state::no_agent()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            wrenn_server::router(state)
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Server {
        base,
        http: reqwest::Client::new(),
        db,
        _dir: dir,
    }
}

impl Server {
    fn req(&self, method: Method, path: &str, who: As<'_>) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match who {
            As::Nobody => rb,
            As::Key(k) => rb.header("x-api-key", k),
            As::BearerKey(k) | As::User(k) => rb.bearer_auth(k),
            As::UserIn(t, team) => rb.bearer_auth(t).header("x-team-id", team),
        }
    }

    /// Sends and returns the status and JSON body (`null` when empty).
    async fn send(&self, rb: RequestBuilder) -> (StatusCode, Value) {
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
        self.send(rb).await
    }

    /// Signs up (with `invitation`, if any) and logs in.
    async fn signup_with(&self, email: &str, invitation: Option<&str>) -> Account {
        let mut body = json!({ "email": email, "password": "correct horse" });
        if let Some(i) = invitation {
            body["invitation"] = json!(i);
        }
        let (st, b) = self
            .call(Method::POST, "/v1/auth/signup", As::Nobody, Some(body))
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        let token = self.login(email, "correct horse").await;
        let (st, teams) = self
            .call(Method::GET, "/v1/teams", As::User(&token), None)
            .await;
        assert_eq!(st, StatusCode::OK, "{teams}");
        let user = self.db.user_by_email(email).await.unwrap().unwrap().0;
        Account {
            token,
            id: user.id,
            team: teams[0]["id"].as_str().unwrap().into(),
        }
    }

    async fn signup(&self, email: &str) -> Account {
        self.signup_with(email, None).await
    }

    /// Logs in; returns the token.
    async fn login(&self, email: &str, password: &str) -> String {
        let (st, b) = self
            .call(
                Method::POST,
                "/v1/auth/login",
                As::Nobody,
                Some(json!({ "email": email, "password": password })),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    /// Makes an API key as `who`; returns (id, plaintext).
    async fn new_key(&self, who: As<'_>, name: &str) -> (String, String) {
        let (st, b) = self
            .call(
                Method::POST,
                "/v1/api-keys",
                who,
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        (
            b["id"].as_str().unwrap().into(),
            b["key"].as_str().unwrap().into(),
        )
    }
}

/// The status and the error code of an error answer (checking its shape).
fn error_code(st: StatusCode, b: &Value) -> (u16, &str) {
    assert!(b["error"]["message"].is_string(), "{b}");
    (st.as_u16(), b["error"]["code"].as_str().unwrap())
}
