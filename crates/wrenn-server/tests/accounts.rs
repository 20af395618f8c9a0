//! The account routes over real HTTP, without any VM: the router on a loopback listener with
//! a SQLite database in a temporary folder and an agent client that never connects (only
//! routes that need no agent are called).

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tonic::transport::Endpoint;
use wrenn_proto::agent::v1::agent_client::AgentClient;
use wrenn_server::{
    accounts::jwt,
    db::{now_ms, Db, JWT_SECRET},
    AppState,
};

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
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wrenn.db").display()
    );
    let db = Db::open(&url).await.unwrap();
    let agent = AgentClient::new(Endpoint::from_static("http://127.0.0.1:1").connect_lazy());
    let (events, _) = tokio::sync::broadcast::channel(16);
    let state = AppState {
        db: db.clone(),
        agent,
        events,
        domain: "wrenn.test".into(),
        http: reqwest::Client::new(),
        metrics: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, wrenn_server::router(state)).await });
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

    async fn signup(&self, email: &str) -> Account {
        let (st, b) = self
            .call(
                Method::POST,
                "/v1/auth/signup",
                As::Nobody,
                Some(json!({ "email": email, "password": "correct horse" })),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        Account {
            token: b["token"].as_str().unwrap().into(),
            id: b["user"]["id"].as_str().unwrap().into(),
            team: b["team"]["id"].as_str().unwrap().into(),
        }
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

#[tokio::test]
async fn signup_login_and_user_tokens() {
    let s = start().await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "  Ada@Example.COM ", "password": "correct horse", "name": "Ada L" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["user"]["email"], "ada@example.com");
    assert_eq!(b["user"]["name"], "Ada L");
    assert!(b["user"]["id"].as_str().unwrap().starts_with("usr-"));
    assert!(b["user"].get("password_hash").is_none());
    assert_eq!(b["team"]["role"], "owner");
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["expires_at"].as_str().unwrap().ends_with('Z'));
    let token = b["token"].as_str().unwrap().to_string();
    let team = b["team"]["id"].as_str().unwrap().to_string();
    // The password is stored as an argon2id hash only.
    let (_, hash) =
        s.db.user_by_email("ada@example.com")
            .await
            .unwrap()
            .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("correct horse"));

    // The token works on the account routes and on the rest of the API.
    let (st, teams) = s
        .call(Method::GET, "/v1/teams", As::User(&token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(teams[0]["id"], team.as_str());
    assert_eq!(teams[0]["role"], "owner");
    let (st, caps) = s
        .call(Method::GET, "/v1/capsules", As::User(&token), None)
        .await;
    assert_eq!((st, caps), (StatusCode::OK, json!([])));

    // Log in (any case of the email).
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            As::Nobody,
            Some(json!({ "email": "ADA@example.com", "password": "correct horse" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user"]["email"], "ada@example.com");
    let again = b["token"].as_str().unwrap();
    let (st, _) = s
        .call(Method::GET, "/v1/teams", As::User(again), None)
        .await;
    assert_eq!(st, StatusCode::OK);

    // Wrong password and unknown email: one answer.
    let mut messages = Vec::new();
    for (email, password) in [
        ("ada@example.com", "wrong horse"),
        ("nobody@example.com", "correct horse"),
        ("not an email", "correct horse"),
    ] {
        let (st, b) = s
            .call(
                Method::POST,
                "/v1/auth/login",
                As::Nobody,
                Some(json!({ "email": email, "password": password })),
            )
            .await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
        messages.push(b["error"]["message"].clone());
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");

    // Sign-up rules.
    for (body, want) in [
        (
            json!({ "email": "ADA@example.com", "password": "another one" }),
            (409, "conflict"),
        ),
        (
            json!({ "email": "bob@example.com", "password": "short" }),
            (400, "invalid_request"),
        ),
        (
            json!({ "email": "bob@", "password": "long enough" }),
            (400, "invalid_request"),
        ),
        (
            json!({ "email": "bob@example.com", "password": "long enough", "name": " " }),
            (400, "invalid_request"),
        ),
    ] {
        let (st, b) = s
            .call(Method::POST, "/v1/auth/signup", As::Nobody, Some(body))
            .await;
        assert_eq!(error_code(st, &b), want, "{b}");
    }

    // Bad credentials.
    for who in [
        As::Nobody,
        As::User("garbage"),
        As::User("a.b.c"),
        As::Key("wrn_00000000000000000000000000000000"),
        As::BearerKey("wrn_00000000000000000000000000000000"),
    ] {
        let (st, b) = s.call(Method::GET, "/v1/api-keys", who, None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
    // A user token is not an API key.
    let (st, b) = s
        .call(Method::GET, "/v1/api-keys", As::Key(&token), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (st, b) = s
        .call(Method::GET, "/v1/teams", As::User(&tampered), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
}

#[tokio::test]
async fn expired_foreign_and_orphan_tokens_are_refused() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let key = s.db.secret(JWT_SECRET).await.unwrap();
    let now = now_ms() / 1000;
    let (expired, _) = jwt::issue(key.as_bytes(), &ada.id, now - jwt::LIFETIME_SECS - 1);
    let (foreign, _) = jwt::issue(b"some other server's key", &ada.id, now);
    let (orphan, _) = jwt::issue(key.as_bytes(), "usr-0000000000000000000000000", now);
    let (fresh, _) = jwt::issue(key.as_bytes(), &ada.id, now);
    for t in [&expired, &foreign, &orphan] {
        let (st, b) = s.call(Method::GET, "/v1/teams", As::User(t), None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
        let (st, b) = s.call(Method::GET, "/v1/audit", As::User(t), None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
    let (st, _) = s
        .call(Method::GET, "/v1/teams", As::User(&fresh), None)
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_are_invalid_request() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let cases: Vec<(&str, RequestBuilder)> = vec![
        (
            "not JSON",
            s.req(Method::POST, "/v1/auth/signup", As::Nobody)
                .header("content-type", "application/json")
                .body("{\"email\":"),
        ),
        (
            "wrong type",
            s.req(Method::POST, "/v1/auth/login", As::Nobody)
                .json(&json!({ "email": 5, "password": "x" })),
        ),
        (
            "unknown field",
            s.req(Method::POST, "/v1/auth/signup", As::Nobody)
                .json(&json!({ "email": "x@example.com", "password": "12345678", "admin": true })),
        ),
        (
            "missing field",
            s.req(Method::POST, "/v1/auth/login", As::Nobody)
                .json(&json!({ "email": "x@example.com" })),
        ),
        (
            "no content type",
            s.req(Method::POST, "/v1/teams", As::User(&ada.token))
                .body("{\"name\":\"x\"}"),
        ),
        (
            "unknown field (teams)",
            s.req(Method::POST, "/v1/teams", As::User(&ada.token))
                .json(&json!({ "name": "x", "owner": "someone" })),
        ),
        (
            "wrong type (keys)",
            s.req(Method::POST, "/v1/api-keys", As::User(&ada.token))
                .json(&json!({ "name": ["x"] })),
        ),
        (
            "bad role",
            s.req(
                Method::PATCH,
                &format!("/v1/teams/{}/members/{}", ada.team, ada.id),
                As::User(&ada.token),
            )
            .json(&json!({ "role": "superuser" })),
        ),
    ];
    for (what, rb) in cases {
        let (st, b) = s.send(rb).await;
        assert_eq!(error_code(st, &b), (400, "invalid_request"), "{what}: {b}");
    }
}

#[tokio::test]
async fn teams_members_and_roles() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    let carol = s.signup("carol@example.com").await;
    let members = |team: &str| format!("/v1/teams/{team}/members");
    let member = |team: &str, user: &str| format!("/v1/teams/{team}/members/{user}");

    let (st, t) = s
        .call(
            Method::POST,
            "/v1/teams",
            As::User(&ada.token),
            Some(json!({ "name": "research" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    assert_eq!(t["role"], "owner");
    let team = t["id"].as_str().unwrap().to_string();
    let (_, mine) = s
        .call(Method::GET, "/v1/teams", As::User(&ada.token), None)
        .await;
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada's team", "research"]);

    // Ada adds Bob as a member.
    let add = |email: &str, role: &str| Some(json!({ "email": email, "role": role }));
    let (st, m) = s
        .call(
            Method::POST,
            &members(&team),
            As::User(&ada.token),
            add("BOB@example.com", "member"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    assert_eq!(m["user_id"], bob.id.as_str());
    assert_eq!(m["role"], "member");
    for (body, want) in [
        (add("bob@example.com", "admin"), (409, "conflict")),
        (add("nobody@example.com", "member"), (404, "not_found")),
        (add("carol@example.com", "owner"), (400, "invalid_request")),
    ] {
        let (st, b) = s
            .call(Method::POST, &members(&team), As::User(&ada.token), body)
            .await;
        assert_eq!(error_code(st, &b), want, "{b}");
    }
    // Bob sees the team and its members, but a member changes nothing.
    let (st, list) = s
        .call(Method::GET, &members(&team), As::User(&bob.token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2);
    for (method, path, body) in [
        (
            Method::POST,
            members(&team),
            add("carol@example.com", "member"),
        ),
        (
            Method::PATCH,
            member(&team, &bob.id),
            Some(json!({ "role": "admin" })),
        ),
        (Method::DELETE, member(&team, &ada.id), None),
    ] {
        let (st, b) = s.call(method, &path, As::User(&bob.token), body).await;
        assert_eq!(error_code(st, &b), (403, "forbidden"), "{path}");
    }

    // Ada makes Bob an admin; an admin adds and promotes plain members...
    let role = |r: &str| Some(json!({ "role": r }));
    let (st, m) = s
        .call(
            Method::PATCH,
            &member(&team, &bob.id),
            As::User(&ada.token),
            role("admin"),
        )
        .await;
    assert_eq!((st, m["role"].as_str()), (StatusCode::OK, Some("admin")));
    let (st, _) = s
        .call(
            Method::POST,
            &members(&team),
            As::User(&bob.token),
            add("carol@example.com", "member"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = s
        .call(
            Method::PATCH,
            &member(&team, &carol.id),
            As::User(&bob.token),
            role("admin"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // ...but never touches admins or owners, nor makes owners.
    for (path, body) in [
        (member(&team, &carol.id), role("member")),
        (member(&team, &ada.id), role("member")),
        (member(&team, &bob.id), role("owner")),
    ] {
        let (st, b) = s
            .call(Method::PATCH, &path, As::User(&bob.token), body)
            .await;
        assert_eq!(error_code(st, &b), (403, "forbidden"), "{path}");
    }
    let (st, b) = s
        .call(
            Method::DELETE,
            &member(&team, &carol.id),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    // An owner does; Carol, a member again, may leave on her own.
    let (st, _) = s
        .call(
            Method::PATCH,
            &member(&team, &carol.id),
            As::User(&ada.token),
            role("member"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::DELETE,
            &member(&team, &carol.id),
            As::User(&carol.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(Method::GET, &members(&team), As::User(&carol.token), None)
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found"));
    // Not a member (any more): 404 for changes too.
    let (st, b) = s
        .call(
            Method::DELETE,
            &member(&team, &carol.id),
            As::User(&ada.token),
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found"));

    // The last owner can neither step down nor be removed.
    let (st, b) = s
        .call(
            Method::PATCH,
            &member(&team, &ada.id),
            As::User(&ada.token),
            role("admin"),
        )
        .await;
    assert_eq!(error_code(st, &b), (409, "conflict"));
    for who in [&ada, &bob] {
        let (st, b) = s
            .call(
                Method::DELETE,
                &member(&team, &ada.id),
                As::User(&who.token),
                None,
            )
            .await;
        let want = if who.id == ada.id {
            (409, "conflict")
        } else {
            (403, "forbidden")
        };
        assert_eq!(error_code(st, &b), want);
    }
    // Handing over: Bob becomes owner, Ada steps down, Bob removes her.
    let (st, _) = s
        .call(
            Method::PATCH,
            &member(&team, &bob.id),
            As::User(&ada.token),
            role("owner"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::PATCH,
            &member(&team, &ada.id),
            As::User(&ada.token),
            role("admin"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::DELETE,
            &member(&team, &ada.id),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, mine) = s
        .call(Method::GET, "/v1/teams", As::User(&ada.token), None)
        .await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let (_, list) = s
        .call(Method::GET, &members(&team), As::User(&bob.token), None)
        .await;
    let roles: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("bob@example.com", "owner")]);

    // API keys cannot manage teams.
    let (_, key) = s.new_key(As::User(&bob.token), "k").await;
    let (st, b) = s.call(Method::GET, "/v1/teams", As::Key(&key), None).await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    let (st, b) = s
        .call(Method::GET, &members(&bob.team), As::Key(&key), None)
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
}

#[tokio::test]
async fn api_key_lifecycle() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    // Bob is a plain member of Ada's team.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/teams/{}/members", ada.team),
            As::User(&ada.token),
            Some(json!({ "email": "bob@example.com" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    let (st, made) = s
        .call(
            Method::POST,
            "/v1/api-keys",
            As::User(&ada.token),
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("wrn_") && key.len() == 36);
    assert_eq!(made["prefix"], &key[..8]);
    assert_eq!(made["created_by"], ada.id.as_str());
    assert!(made["last_used_at"].is_null());

    // Both ways of presenting a key; its use is recorded.
    for who in [As::Key(&key), As::BearerKey(&key)] {
        let (st, _) = s.call(Method::GET, "/v1/api-keys", who, None).await;
        assert_eq!(st, StatusCode::OK);
    }
    let (_, list) = s
        .call(Method::GET, "/v1/api-keys", As::User(&ada.token), None)
        .await;
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    let listed = &list[0];
    assert_eq!(listed["id"], id.as_str());
    assert!(listed["last_used_at"].is_string());
    assert!(listed.get("key").is_none() && listed.get("key_hash").is_none());
    assert!(!listed.to_string().contains(&key[8..]));

    // A key of the team may make and delete keys; a plain member may only list them.
    let (other_id, other_key) = s.new_key(As::Key(&key), "from a key").await;
    let bob_here = As::UserIn(&bob.token, &ada.team);
    let (st, list) = s.call(Method::GET, "/v1/api-keys", bob_here, None).await;
    assert_eq!((st, list.as_array().unwrap().len()), (StatusCode::OK, 2));
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/api-keys",
            bob_here,
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    let (st, b) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            bob_here,
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    // Bob's own team is his default; his keys there are his business.
    let (st, list) = s
        .call(Method::GET, "/v1/api-keys", As::User(&bob.token), None)
        .await;
    assert_eq!((st, list), (StatusCode::OK, json!([])));

    // Deleted keys stop working at once.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{other_id}"),
            As::Key(&key),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(Method::GET, "/v1/api-keys", As::Key(&other_key), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            As::User(&ada.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for who in [As::Key(&key), As::BearerKey(&key)] {
        let (st, b) = s.call(Method::GET, "/v1/capsules", who, None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
    for path in [
        format!("/v1/api-keys/{id}"),
        "/v1/api-keys/not-a-key-id".to_string(),
    ] {
        let (st, b) = s
            .call(Method::DELETE, &path, As::User(&ada.token), None)
            .await;
        assert_eq!(error_code(st, &b), (404, "not_found"));
    }
}

#[tokio::test]
async fn tenant_matrix() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await; // team A
    let bob = s.signup("bob@example.com").await; // team B
    let (_, a_key) = s.new_key(As::User(&ada.token), "a").await;
    let (b_key_id, b_key) = s.new_key(As::User(&bob.token), "b").await;
    let b = bob.team.as_str();
    let missing_team = "team-0000000000000000000000000";

    // Team A's credentials against team B (and against a team that does not exist: the
    // same answer, so existence never leaks).
    let a_user = As::User(&ada.token);
    let a_key_ = As::Key(&a_key);
    let cases: Vec<Case<'_>> = vec![
        // Reading B's keys, log and capsules by choosing B's team.
        (
            Method::GET,
            "/v1/api-keys".into(),
            As::UserIn(&ada.token, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/api-keys".into(),
            As::UserIn(&ada.token, missing_team),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/api-keys".into(),
            As::UserIn(&a_key, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            As::UserIn(&ada.token, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            As::UserIn(&a_key, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/capsules".into(),
            As::UserIn(&ada.token, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::POST,
            "/v1/api-keys".into(),
            As::UserIn(&ada.token, b),
            Some(json!({"name": "x"})),
            (404, "not_found"),
        ),
        // Deleting B's key.
        (
            Method::DELETE,
            format!("/v1/api-keys/{b_key_id}"),
            a_user,
            None,
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/api-keys/{b_key_id}"),
            a_key_,
            None,
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/api-keys/{b_key_id}"),
            As::UserIn(&ada.token, b),
            None,
            (404, "not_found"),
        ),
        // B's members.
        (
            Method::GET,
            format!("/v1/teams/{b}/members"),
            a_user,
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            format!("/v1/teams/{missing_team}/members"),
            a_user,
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            format!("/v1/teams/{b}/members"),
            a_key_,
            None,
            (403, "forbidden"),
        ),
        (
            Method::POST,
            format!("/v1/teams/{b}/members"),
            a_user,
            Some(json!({"email": "ada@example.com", "role": "admin"})),
            (404, "not_found"),
        ),
        (
            Method::POST,
            format!("/v1/teams/{b}/members"),
            a_key_,
            Some(json!({"email": "ada@example.com"})),
            (403, "forbidden"),
        ),
        (
            Method::PATCH,
            format!("/v1/teams/{b}/members/{}", bob.id),
            a_user,
            Some(json!({"role": "member"})),
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/teams/{b}/members/{}", bob.id),
            a_user,
            None,
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/teams/{b}/members/{}", bob.id),
            a_key_,
            None,
            (403, "forbidden"),
        ),
    ];
    for (method, path, who, body, want) in cases {
        let (st, got) = s.call(method.clone(), &path, who, body).await;
        assert_eq!(error_code(st, &got), want, "{method} {path}: {got}");
        if want.0 == 404 && path.contains("/v1/teams/") {
            let msg = got["error"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with("team ") && msg.ends_with(" not found"),
                "{msg}"
            );
        }
    }

    // Nothing of B's changed: its key works, Bob is still its only member and owner, and its
    // log holds only Bob's own actions.
    let (st, keys) = s
        .call(Method::GET, "/v1/api-keys", As::Key(&b_key), None)
        .await;
    assert_eq!((st, keys.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (_, members) = s
        .call(
            Method::GET,
            &format!("/v1/teams/{b}/members"),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(members.as_array().unwrap().len(), 1);
    assert_eq!(members[0]["role"], "owner");
    let (_, log) = s
        .call(Method::GET, "/v1/audit", As::Key(&b_key), None)
        .await;
    let entries = log["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e["actor"]["id"] == bob.id.as_str()),
        "{log}"
    );
    // And A's log shows nothing of B's.
    let (_, log) = s.call(Method::GET, "/v1/audit", a_user, None).await;
    assert!(!log.to_string().contains(&bob.id) && !log.to_string().contains(&b_key_id));

    // B deletes its key: it stops working.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{b_key_id}"),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, got) = s
        .call(Method::GET, "/v1/audit", As::Key(&b_key), None)
        .await;
    assert_eq!(error_code(st, &got), (401, "unauthorized"));
}

#[tokio::test]
async fn audit_records_account_changes() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    let team = ada.team.as_str();
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/teams/{team}/members"),
            As::User(&ada.token),
            Some(json!({ "email": "bob@example.com", "role": "member" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = s
        .call(
            Method::PATCH,
            &format!("/v1/teams/{team}/members/{}", bob.id),
            As::User(&ada.token),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (key_id, key) = s.new_key(As::UserIn(&bob.token, team), "ci").await;
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{key_id}"),
            As::Key(&key),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{team}/members/{}", bob.id),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // A refused change writes nothing.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{team}/members/{}", ada.id),
            As::User(&ada.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    let (st, log) = s
        .call(Method::GET, "/v1/audit", As::User(&ada.token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let got: Vec<(&str, &str, &str)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"]["type"].as_str().unwrap(),
                e["actor"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("team.member.remove", "user", bob.id.as_str()),
            ("api_key.delete", "api_key", key_id.as_str()),
            ("api_key.create", "user", bob.id.as_str()),
            ("team.member.role", "user", ada.id.as_str()),
            ("team.member.add", "user", ada.id.as_str()),
            ("user.signup", "user", ada.id.as_str()),
        ]
    );
    let first = &log["entries"][0];
    assert_eq!(first["resource"]["type"], "user");
    assert_eq!(first["resource"]["id"], bob.id.as_str());
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
}
