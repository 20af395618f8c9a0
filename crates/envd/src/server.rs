//! The router: Connect services, HTTP endpoints, and the access-token guard in front.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Path, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
    Router,
};
use http::HeaderMap;

use crate::{
    auth,
    connect::{self, unary_error},
    error::{EnvdError, Result},
    filesystem::service as fs,
    http::{self as endpoints, files, http_error, init, query_params},
    metrics::Sampler,
    process::{reaper::Reaper, service as proc},
    state::{Config, Envd, SharedEnvd},
};

async fn process_rpc(
    State(envd): State<SharedEnvd>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let e = envd;
    match method.as_str() {
        "List" => connect::unary(headers, body, |c, r| proc::list(e, c, r)).await,
        "Start" => connect::server_stream(headers, body, |c, r| proc::start(e, c, r)).await,
        "Connect" => connect::server_stream(headers, body, |c, r| proc::connect(e, c, r)).await,
        "Update" => connect::unary(headers, body, |c, r| proc::update(e, c, r)).await,
        "SendInput" => connect::unary(headers, body, |c, r| proc::send_input(e, c, r)).await,
        "StreamInput" => {
            connect::client_stream(headers, body, |c, m| proc::stream_input(e, c, m)).await
        }
        "SendSignal" => connect::unary(headers, body, |c, r| proc::send_signal(e, c, r)).await,
        "CloseStdin" => connect::unary(headers, body, |c, r| proc::close_stdin(e, c, r)).await,
        other => connect::unknown_method(&format!("/process.Process/{other}")),
    }
}

async fn filesystem_rpc(
    State(envd): State<SharedEnvd>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let e = envd;
    match method.as_str() {
        "Stat" => connect::unary(headers, body, |c, r| fs::stat(e, c, r)).await,
        "MakeDir" => connect::unary(headers, body, |c, r| fs::make_dir(e, c, r)).await,
        "Move" => connect::unary(headers, body, |c, r| fs::r#move(e, c, r)).await,
        "ListDir" => connect::unary(headers, body, |c, r| fs::list_dir(e, c, r)).await,
        "Remove" => connect::unary(headers, body, |c, r| fs::remove(e, c, r)).await,
        "WatchDir" => connect::server_stream(headers, body, |c, r| fs::watch_dir(e, c, r)).await,
        "CreateWatcher" => connect::unary(headers, body, |c, r| fs::create_watcher(e, c, r)).await,
        "GetWatcherEvents" => {
            connect::unary(headers, body, |c, r| fs::get_watcher_events(e, c, r)).await
        }
        "RemoveWatcher" => connect::unary(headers, body, |c, r| fs::remove_watcher(e, c, r)).await,
        other => connect::unknown_method(&format!("/filesystem.Filesystem/{other}")),
    }
}

fn is_rpc_path(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(service, _)| service.contains('.'))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Once `/init` has set a token, everything but `/health` needs it.
async fn require_token(State(envd): State<SharedEnvd>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let Some(token) = envd.token() else {
        return next.run(req).await;
    };
    if path == "/health" || auth::header_token_ok(req.headers(), &token) {
        return next.run(req).await;
    }
    if path == "/files" {
        let operation = if req.method() == http::Method::GET {
            "read"
        } else {
            "write"
        };
        if let Ok(params) = query_params(req.uri()) {
            if auth::signature_ok(&params, operation, &token, unix_now()) {
                return next.run(req).await;
            }
        }
    }
    let err = EnvdError::Unauthenticated(
        "missing or invalid access token (X-Access-Token or a valid URL signature)".into(),
    );
    if is_rpc_path(path) {
        unary_error(&err)
    } else {
        http_error(&err)
    }
}

async fn fallback(req: Request) -> Response {
    if is_rpc_path(req.uri().path()) {
        connect::unknown_method(req.uri().path())
    } else {
        endpoints::not_found(req.uri().clone()).await
    }
}

/// Browsers may call envd from any origin (the SDKs run in web pages too); access is guarded
/// by the access token, not by origin. Preflights are answered before the token check.
fn cors() -> tower_http::cors::CorsLayer {
    use tower_http::cors::{Any, CorsLayer};
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(Duration::from_secs(7200))
}

/// All of envd's routes over `envd`.
pub fn router(envd: SharedEnvd) -> Router {
    Router::new()
        .route("/health", get(endpoints::health))
        .route("/metrics", get(endpoints::metrics))
        .route("/envs", get(endpoints::envs))
        .route("/init", post(init::init))
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/{method}", post(process_rpc))
        .route("/filesystem.Filesystem/{method}", post(filesystem_rpc))
        .fallback(fallback)
        .method_not_allowed_fallback(|| async { endpoints::method_not_allowed() })
        .layer(middleware::from_fn_with_state(envd.clone(), require_token))
        .layer(cors())
        .with_state(envd)
}

/// Builds envd's state: reaper, metrics sampler, defaults. Needs a Tokio runtime.
pub fn build(config: Config) -> Result<SharedEnvd> {
    let reaper = Reaper::start().map_err(|e| EnvdError::io("installing the SIGCHLD handler", e))?;
    let sampler = Sampler::start(Duration::from_secs(1));
    Ok(Arc::new(Envd::new(config, reaper, sampler)))
}

/// Serves on `listener` until `shutdown` resolves; streams still open then are cut after a
/// short grace period.
pub async fn serve(
    listener: tokio::net::TcpListener,
    envd: SharedEnvd,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = router(envd).into_make_service_with_connect_info::<SocketAddr>();
    let mut stopped = stop_rx.clone();
    // Small stream frames must not wait for Nagle's algorithm (a 40 ms stall per exec).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::select! {
        r = server => r,
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        } => Ok(()),
    }
}
