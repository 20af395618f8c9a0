//! A FAKE token-auth front for the real registry: docker-registry's own token auth needs
//! JWTs signed by a certificate chain, more than these tests need to show. This front answers
//! `/v2/…` without a valid Bearer token with a 401 and a `WWW-Authenticate: Bearer` challenge
//! naming its `/token` realm, issues tokens there (only with the right Basic credentials,
//! service and scope), and passes authorized GETs through to the real registry.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

pub struct FakeTokenFront {
    pub port: u16,
    pub tokens_issued: Arc<AtomicUsize>,
    pub token_refusals: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Front {
    backend: String,
    realm: String,
    basic: String,
    repo: String,
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    http: reqwest::Client,
}

const TOKEN: &str = "fake-token-7f3a";

impl FakeTokenFront {
    /// Listens on 127.0.0.1:`port` in front of `backend` (a registry base URL), for
    /// `repo` only, issuing tokens to `user`/`password`.
    pub async fn start(
        port: u16,
        backend: &str,
        repo: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        use base64::Engine;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let front = Front {
            backend: backend.into(),
            realm: format!("http://127.0.0.1:{port}/token"),
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            repo: repo.into(),
            issued: issued.clone(),
            refused: refused.clone(),
            http: reqwest::Client::new(),
        };
        let app = Router::new()
            .route("/token", get(token))
            .fallback(pass)
            .with_state(front);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeTokenFront {
            port,
            tokens_issued: issued,
            token_refusals: refused,
            task,
        })
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeTokenFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn token(
    State(f): State<Front>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let auth_ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(f.basic.as_str());
    let scope_ok =
        q.get("scope").map(String::as_str) == Some(&format!("repository:{}:pull", f.repo));
    let service_ok = q.get("service").map(String::as_str) == Some("fake-registry");
    if !(auth_ok && scope_ok && service_ok) {
        f.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "no").into_response();
    }
    f.issued.fetch_add(1, Ordering::SeqCst);
    axum::Json(serde_json::json!({"access_token": TOKEN, "expires_in": 300})).into_response()
}

async fn pass(State(f): State<Front>, req: Request) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer != Some(&format!("Bearer {TOKEN}")) {
        let challenge = format!(
            r#"Bearer realm="{}",service="fake-registry",scope="repository:{}:pull""#,
            f.realm, f.repo
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            "",
        )
            .into_response();
    }
    let url = format!("{}{}", f.backend, req.uri());
    let mut out = f.http.get(url);
    if let Some(a) = req.headers().get(header::ACCEPT) {
        out = out.header(header::ACCEPT, a);
    }
    let Ok(resp) = out.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let body = resp.bytes().await.unwrap_or_default();
    (status, [(header::CONTENT_TYPE, ct)], Body::from(body)).into_response()
}
