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
    accounts::SignupPolicy,
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
    start_with(SignupPolicy::Open).await
}

async fn start_with(policy: SignupPolicy) -> Server {
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
        accounts: wrenn_server::accounts::Accounts::new(policy),
    };
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
    // Taken; the answer holds only what was sent (so it is the same for a taken email).
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["status"], "accepted");
    assert_eq!(b["email"], "ada@example.com");
    assert!(b.get("token").is_none() && b.get("user").is_none());
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            As::Nobody,
            Some(json!({ "email": "ada@example.com", "password": "correct horse" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["user"]["email"], "ada@example.com");
    assert_eq!(b["user"]["name"], "Ada L");
    assert!(b["user"]["id"].as_str().unwrap().starts_with("usr-"));
    assert!(b["user"].get("password_hash").is_none());
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["expires_at"].as_str().unwrap().ends_with('Z'));
    let token = b["token"].as_str().unwrap().to_string();
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
    assert_eq!(teams.as_array().unwrap().len(), 1);
    assert_eq!(teams[0]["name"], "Ada L's team");
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
            json!({ "email": "bob@example.com", "password": "password" }),
            (400, "invalid_request"),
        ),
        (
            json!({ "email": "bob@example.com", "password": "Bob@Example.com" }),
            (400, "invalid_request"),
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
    let sid =
        s.db.create_session(&ada.id, (now + jwt::LIFETIME_SECS) * 1000)
            .await
            .unwrap();
    let (expired, _) = jwt::issue(key.as_bytes(), &ada.id, &sid, now - jwt::LIFETIME_SECS - 1);
    let (foreign, _) = jwt::issue(b"some other server's key", &ada.id, &sid, now);
    let (orphan, _) = jwt::issue(key.as_bytes(), "usr-0000000000000000000000000", &sid, now);
    // Signed by the server but with no session, or another user's session: refused.
    let (sessionless, _) = jwt::issue(key.as_bytes(), &ada.id, "", now);
    let (unknown_session, _) = jwt::issue(key.as_bytes(), &ada.id, "ses-0", now);
    let bob = s.signup("bob@example.com").await;
    let (borrowed, _) = jwt::issue(key.as_bytes(), &bob.id, &sid, now);
    let (fresh, _) = jwt::issue(key.as_bytes(), &ada.id, &sid, now);
    for t in [
        &expired,
        &foreign,
        &orphan,
        &sessionless,
        &unknown_session,
        &borrowed,
    ] {
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

/// A key dies with its owner's membership: removing a member (or a member leaving) deletes
/// the keys they own in that team, including keys their keys made, audited; the team's own
/// keys and the other members' keys keep working.
#[tokio::test]
async fn removed_members_keys_stop_working() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    let carol = s.signup("carol@example.com").await;
    let team = ada.team.as_str();
    for (email, role) in [("bob@example.com", "admin"), ("carol@example.com", "admin")] {
        let (st, b) = s
            .call(
                Method::POST,
                &format!("/v1/teams/{team}/members"),
                As::User(&ada.token),
                Some(json!({ "email": email, "role": role })),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }
    // The team's own key (no owner), Ada's, Bob's, a key Bob's key made, and Carol's.
    let (_, team_key) =
        s.db.create_api_key(team, "team's own")
            .await
            .map(|(r, k)| (r.id, k))
            .unwrap();
    let (_, ada_key) = s.new_key(As::User(&ada.token), "ada").await;
    let (bob_key_id, bob_key) = s.new_key(As::UserIn(&bob.token, team), "bob").await;
    let (chained_id, chained) = s.new_key(As::Key(&bob_key), "made by bob's key").await;
    let (_, carol_key) = s.new_key(As::UserIn(&carol.token, team), "carol").await;
    let (_, from_team_key) = s
        .new_key(As::Key(&team_key), "made by the team's key")
        .await;
    // Ownership is shown.
    let (_, list) = s
        .call(Method::GET, "/v1/api-keys", As::User(&ada.token), None)
        .await;
    let owner_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .map(|k| k["owner_id"].clone())
            .unwrap()
    };
    assert_eq!(owner_of(&bob_key_id), json!(bob.id));
    assert_eq!(owner_of(&chained_id), json!(bob.id));
    assert_eq!(list.as_array().unwrap().len(), 6);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["owner_id"].is_null())
        .all(|k| k["name"] == "team's own" || k["name"] == "made by the team's key"));

    let works = |key: String| {
        let s = &s;
        async move {
            let (st, _) = s
                .call(Method::GET, "/v1/capsules", As::Key(&key), None)
                .await;
            st
        }
    };
    for k in [
        &team_key,
        &ada_key,
        &bob_key,
        &chained,
        &carol_key,
        &from_team_key,
    ] {
        assert_eq!(works(k.clone()).await, StatusCode::OK);
    }

    // Ada removes Bob: his key and the key it made stop working at once.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{team}/members/{}", bob.id),
            As::User(&ada.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for k in [&bob_key, &chained] {
        let (st, b) = s
            .call(Method::POST, "/v1/capsules", As::Key(k), Some(json!({})))
            .await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
    for k in [&team_key, &ada_key, &carol_key, &from_team_key] {
        assert_eq!(works(k.clone()).await, StatusCode::OK);
    }
    // Carol leaves: her key dies too.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{team}/members/{}", carol.id),
            As::User(&carol.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(works(carol_key.clone()).await, StatusCode::UNAUTHORIZED);
    let (_, list) = s
        .call(Method::GET, "/v1/api-keys", As::User(&ada.token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    // Audited, in the same order as done.
    let (_, log) = s
        .call(Method::GET, "/v1/audit", As::User(&ada.token), None)
        .await;
    let actions: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .take(5)
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["resource"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(actions[0].0, "api_key.delete");
    assert_eq!(
        actions[1],
        ("team.member.remove".to_string(), carol.id.clone())
    );
    let bob_deletions: Vec<&str> = actions[2..4].iter().map(|a| a.1.as_str()).collect();
    assert!(
        bob_deletions.contains(&bob_key_id.as_str())
            && bob_deletions.contains(&chained_id.as_str())
    );
    assert!(actions[2..4].iter().all(|a| a.0 == "api_key.delete"));
    assert_eq!(
        actions[4],
        ("team.member.remove".to_string(), bob.id.clone())
    );
    // Bob, added back, does not get his old keys back.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/teams/{team}/members"),
            As::User(&ada.token),
            Some(json!({ "email": "bob@example.com" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(works(bob_key).await, StatusCode::UNAUTHORIZED);
}

/// Sign-up answers the same for a taken email as for a new one (status and body), and a
/// taken email's account is left as it was.
#[tokio::test]
async fn signup_does_not_tell_which_emails_exist() {
    let s = start().await;
    let signup = |email: &str, password: &str| {
        s.call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": email, "password": password })),
        )
    };
    let (st_new, new) = signup("ada@example.com", "correct horse").await;
    let (st_taken, taken) = signup("ADA@example.com ", "another horse").await;
    assert_eq!(st_new, StatusCode::ACCEPTED);
    assert_eq!((st_taken, &taken), (st_new, &new));
    // The first password still works; the second never did.
    s.login("ada@example.com", "correct horse").await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/login",
            As::Nobody,
            Some(json!({ "email": "ada@example.com", "password": "another horse" })),
        )
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    // And only one account, one team.
    let (_, teams) = s
        .call(
            Method::GET,
            "/v1/teams",
            As::User(&s.login("ada@example.com", "correct horse").await),
            None,
        )
        .await;
    assert_eq!(teams.as_array().unwrap().len(), 1);
}

/// `closed`: nobody signs up, and invitations are refused; `invite`: only with a live
/// invitation, which works once and joins its team with its role.
#[tokio::test]
async fn signup_policies_and_invitations() {
    let closed = start_with(SignupPolicy::Closed).await;
    let (st, b) = closed
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "x@example.com", "password": "correct horse" })),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));

    let s = start_with(SignupPolicy::Invite).await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "x@example.com", "password": "correct horse" })),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    // An owner exists (made the way the admin of `wrenn up` is).
    let hash = wrenn_server::accounts::password::hash("correct horse".into())
        .await
        .unwrap();
    let (_, team) =
        s.db.create_user_with_team("ada@example.com", "Ada", &hash, "Ada's team")
            .await
            .unwrap();
    let ada = s.login("ada@example.com", "correct horse").await;
    let invite = |who: As<'static>, body: Value| {
        let path = format!("/v1/teams/{}/invitations", team.id);
        let s = &s;
        async move { s.call(Method::POST, &path, who, Some(body)).await }
    };
    let ada_static: &'static str = Box::leak(ada.clone().into_boxed_str());
    let (st, inv) = invite(As::User(ada_static), json!({ "role": "admin" })).await;
    assert_eq!(st, StatusCode::CREATED, "{inv}");
    let token = inv["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("wri_"));
    assert_eq!(inv["role"], "admin");
    assert!(inv["used_by"].is_null());
    for bad in [
        json!({ "role": "owner" }),
        json!({ "expires_in_hours": 0 }),
        json!({ "expires_in_hours": 721 }),
    ] {
        let (st, b) = invite(As::User(ada_static), bad).await;
        assert_eq!(error_code(st, &b), (400, "invalid_request"));
    }
    // Grace signs up with it: she is an admin of Ada's team, with no team of her own.
    let grace = s.signup_with("grace@example.com", Some(&token)).await;
    assert_eq!(grace.team, team.id);
    let (_, teams) = s
        .call(Method::GET, "/v1/teams", As::User(&grace.token), None)
        .await;
    assert_eq!(teams.as_array().unwrap().len(), 1);
    assert_eq!(teams[0]["role"], "admin");
    // Single use; unknown tokens are refused the same way.
    for t in [token.as_str(), "wri_00000000000000000000000000000000"] {
        let (st, b) = s
            .call(
                Method::POST,
                "/v1/auth/signup",
                As::Nobody,
                Some(json!({ "email": "eve@example.com", "password": "correct horse", "invitation": t })),
            )
            .await;
        assert_eq!(error_code(st, &b), (404, "not_found"));
    }
    // Expired invitations are refused.
    let caller = wrenn_server::db::Caller::user(
        &team.id,
        &s.db
            .user_by_email("ada@example.com")
            .await
            .unwrap()
            .unwrap()
            .0,
    );
    let (_, stale) =
        s.db.create_invitation(&caller, wrenn_server::db::Role::Member, now_ms() - 1)
            .await
            .unwrap();
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "eve@example.com", "password": "correct horse", "invitation": stale })),
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found"));
    // A taken email with a live invitation: the same answer, and the invitation stays unused.
    let (_, live) = invite(As::User(ada_static), json!({})).await;
    let live_token = live["token"].as_str().unwrap();
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "grace@example.com", "password": "other horse", "invitation": live_token })),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    // The list shows who used what; a plain member may not see or make invitations.
    let path = format!("/v1/teams/{}/invitations", team.id);
    let (st, list) = s.call(Method::GET, &path, As::User(&ada), None).await;
    assert_eq!(st, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|i| i.get("token").is_none()));
    let used: Vec<&Value> = list.iter().filter(|i| !i["used_by"].is_null()).collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["used_by"], grace.id.as_str());
    // Withdrawn: the token stops working.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("{path}/{}", live["id"].as_str().unwrap()),
            As::User(&ada),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/auth/signup",
            As::Nobody,
            Some(json!({ "email": "eve@example.com", "password": "correct horse", "invitation": live_token })),
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found"));
    // Grace, an admin, invites Eve as a member; Eve (a member) may not invite.
    let (st, inv) = s
        .call(Method::POST, &path, As::User(&grace.token), Some(json!({})))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let eve = s
        .signup_with("eve@example.com", inv["token"].as_str())
        .await;
    for (m, body) in [(Method::POST, Some(json!({}))), (Method::GET, None)] {
        let (st, b) = s.call(m, &path, As::User(&eve.token), body).await;
        assert_eq!(error_code(st, &b), (403, "forbidden"));
    }
    // Outsiders do not see the team at all; API keys may not invite.
    let (_, key) = s.db.create_api_key(&team.id, "k").await.unwrap();
    let (st, b) = s
        .call(Method::POST, &path, As::Key(&key), Some(json!({})))
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    let (st, b) = closed
        .call(Method::GET, "/v1/teams", As::Nobody, None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
}

/// Failed log-ins are limited per account and per client address: beyond the limit the
/// answer is 429 `rate_limited` with `Retry-After`, even with the right password.
#[tokio::test]
async fn login_rate_limits() {
    use wrenn_server::accounts::limits::{ACCOUNT_FAILURES, ADDRESS_FAILURES};
    let s = start().await;
    s.signup("ada@example.com").await;
    let login = |email: &str, password: &str| {
        s.req(Method::POST, "/v1/auth/login", As::Nobody)
            .json(&json!({ "email": email, "password": password }))
            .send()
    };
    for _ in 0..ACCOUNT_FAILURES {
        let r = login("ada@example.com", "wrong horse").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    for password in ["wrong horse", "correct horse"] {
        let r = login("Ada@Example.com", password).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=300).contains(&wait), "{wait}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "rate_limited", "{b}");
    }
    // The address: failures on many accounts add up.
    for i in ACCOUNT_FAILURES..ADDRESS_FAILURES {
        let r = login(&format!("nobody{i}@example.com"), "wrong horse")
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login("someone.new@example.com", "whatever horse")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}

/// User tokens are revocable: log out ends one token, log out everywhere ends all of the
/// user's tokens; API keys cannot log out.
#[tokio::test]
async fn logout_and_logout_everywhere() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    let second = s.login("ada@example.com", "correct horse").await;
    let third = s.login("ada@example.com", "correct horse").await;
    let ok = |t: String| {
        let s = &s;
        async move { s.call(Method::GET, "/v1/teams", As::User(&t), None).await.0 }
    };
    for t in [&ada.token, &second, &third, &bob.token] {
        assert_eq!(ok(t.clone()).await, StatusCode::OK);
    }
    let (st, _) = s
        .call(Method::POST, "/v1/auth/logout", As::User(&ada.token), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(Method::GET, "/v1/capsules", As::User(&ada.token), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    assert_eq!(ok(second.clone()).await, StatusCode::OK);
    // Logging out twice: the token is already dead.
    let (st, b) = s
        .call(Method::POST, "/v1/auth/logout", As::User(&ada.token), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    let (st, _) = s
        .call(Method::POST, "/v1/auth/logout-all", As::User(&second), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for t in [&second, &third] {
        assert_eq!(ok(t.clone()).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        ok(bob.token.clone()).await,
        StatusCode::OK,
        "others' tokens live on"
    );
    // Logging in again works.
    assert_eq!(
        ok(s.login("ada@example.com", "correct horse").await).await,
        StatusCode::OK
    );
    let (_, key) = s.new_key(As::User(&bob.token), "k").await;
    for path in ["/v1/auth/logout", "/v1/auth/logout-all"] {
        let (st, b) = s.call(Method::POST, path, As::Key(&key), None).await;
        assert_eq!(error_code(st, &b), (403, "forbidden"));
        let (st, b) = s.call(Method::POST, path, As::Nobody, None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
}

/// The server's admin key cannot be deleted through the API; the server replaces a key file
/// that is missing or whose key no longer works, deleting the previous admin key.
#[tokio::test]
async fn the_admin_key_is_protected_and_replaced() {
    use std::os::unix::fs::PermissionsExt;
    use wrenn_server::{bootstrap, AdminKey};
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (key_file, pw_file) = (
        dir.path().join("admin-api-key"),
        dir.path().join("admin-password"),
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().trim().to_string();
    let AdminKey::Made(first) = bootstrap(&s.db, &key_file, &pw_file).await.unwrap() else {
        panic!("the first start makes the admin key");
    };
    assert_eq!(read(&key_file), first);
    for f in [&key_file, &pw_file] {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        bootstrap(&s.db, &key_file, &pw_file).await.unwrap(),
        AdminKey::Kept
    );
    // Deleting it through the API is refused, with the way out in the message.
    let (_, list) = s
        .call(Method::GET, "/v1/api-keys", As::Key(&first), None)
        .await;
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert!(list[0]["created_by"].is_null() && list[0]["owner_id"].is_null());
    let admin = s.login(wrenn_server::ADMIN_EMAIL, &read(&pw_file)).await;
    for who in [As::Key(&first), As::User(&admin)] {
        let (st, b) = s
            .call(Method::DELETE, &format!("/v1/api-keys/{id}"), who, None)
            .await;
        assert_eq!(error_code(st, &b), (409, "conflict"));
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("admin-api-key"),
            "{b}"
        );
    }
    // Other keys of the team are deleted as usual.
    let (other, _) = s.new_key(As::Key(&first), "other").await;
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{other}"),
            As::Key(&first),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // A file whose key does not work (here: damaged) is replaced; the old key is deleted.
    std::fs::write(&key_file, "wrn_not-a-key\n").unwrap();
    let AdminKey::Replaced(second) = bootstrap(&s.db, &key_file, &pw_file).await.unwrap() else {
        panic!("a key file that does not work is replaced");
    };
    assert_eq!(read(&key_file), second);
    let (st, _) = s
        .call(Method::GET, "/v1/capsules", As::Key(&second), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(Method::GET, "/v1/capsules", As::Key(&first), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // A missing file too.
    std::fs::remove_file(&key_file).unwrap();
    let AdminKey::Replaced(third) = bootstrap(&s.db, &key_file, &pw_file).await.unwrap() else {
        panic!("a missing key file is replaced");
    };
    let (st, _) = s
        .call(Method::GET, "/v1/capsules", As::Key(&third), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(Method::GET, "/v1/capsules", As::Key(&second), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bootstrap(&s.db, &key_file, &pw_file).await.unwrap(),
        AdminKey::Kept
    );
    // The replacements are in the team's audit log as the server's own doing.
    let (_, log) = s
        .call(Method::GET, "/v1/audit", As::Key(&third), None)
        .await;
    let by_system = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"]["type"] == "system")
        .count();
    assert_eq!(by_system, 4, "{log}");
}
