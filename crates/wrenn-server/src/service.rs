//! The server itself: `GET /health` and `GET /metrics`.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    Json,
};

use crate::{
    metrics::{render_build_info, render_capsules, CONTENT_TYPE},
    state::AppState,
};
pub use wrenn_types::api::errors::Health;

/// Health
///
/// Answers while the server runs (no credentials, no database).
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    security(()),
    responses((status = 200, description = "Up", body = Health))
)]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Prometheus metrics
///
/// The text exposition format 0.0.4, without credentials: aggregate numbers only (no team,
/// user or capsule is named). `wrenn_http_requests_total{method,route,status}`,
/// `wrenn_http_request_duration_seconds{method,route}` (histogram), `wrenn_capsules{status}`
/// (from the database at scrape time; left out if the database fails) and
/// `wrenn_build_info{version}`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "prometheus_metrics",
    tag = "service",
    security(()),
    responses(
        (status = 200, description = "The metrics", content(("text/plain; version=0.0.4"))),
    )
)]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    state.metrics.render_http(&mut out);
    match state.db.capsule_status_counts().await {
        Ok(counts) => render_capsules(&mut out, &counts),
        Err(e) => tracing::warn!(error = %e, "counting capsules for /metrics"),
    }
    render_build_info(&mut out);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response()
}
