//! What the API says about itself, over real HTTP and without any VM: `/openapi.json` documents
//! exactly the routes served, and `/docs` renders it from this origin alone. The router runs on a loopback listener with a SQLite database in
//! a temporary folder and an agent client that never connects.

use std::collections::BTreeSet;

use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::transport::Endpoint;
use wrenn_proto::agent::v1::agent_client::AgentClient;
use wrenn_server::{db::Db, AppState};

struct Server {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
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
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, wrenn_server::router(state)).await });
    Server {
        base,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Server {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn openapi(&self) -> Value {
        let resp = self.get("/openapi.json").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/json",
            "served as JSON"
        );
        resp.json().await.unwrap()
    }
}

/// (METHOD, path template) of every operation in an OpenAPI document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| methods.contains(&m.as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn openapi_documents_every_route_and_only_those() {
    let s = start().await;
    let doc = s.openapi().await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // The route table the router is built from, against the document.
    let table: Vec<(String, String)> = wrenn_server::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let served: BTreeSet<_> = table.iter().cloned().collect();
    assert_eq!(served.len(), table.len(), "a route is listed twice");
    let documented = operations(&doc);
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );

    // And against the router itself: every documented operation reaches a handler (never the
    // fallback's "no such route", never 405), asked without credentials.
    for (method, path) in &documented {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let resp = s
            .http
            .request(m, format!("{}{concrete}", s.base))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body.contains("no such route")),
            "{method} {path} is documented but not routed"
        );
        // A protected route asks for credentials in the documented error shape.
        let public = doc["paths"][path][method.to_lowercase()]["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r == &serde_json::json!({})));
        if !public {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            let err: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(err["error"]["code"], "unauthorized", "{body}");
            assert!(err["error"]["message"].is_string());
        }
    }
}

#[tokio::test]
async fn the_docs_page_is_self_contained() {
    let s = start().await;
    let resp = s.get("/docs").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let page = resp.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("fetch(\"openapi.json\""));
    for banned in ["<link", " src=", "@import", "http://", "https://"] {
        assert!(!page.contains(banned), "the page has {banned:?}");
    }
    // What the page fetches is there, relative to it.
    let doc = s.openapi().await;
    assert!(doc["tags"].as_array().is_some_and(|t| !t.is_empty()));
}
