//! The E2B-compatible sandbox API: the REST routes the published `e2b` SDK calls in its normal
//! mode (`/sandboxes`, `/v2/sandboxes`, `/templates`), on the same listener as Wrenn's own API
//! (their paths do not meet `/v1/…`). A sandbox is an ordinary capsule of the API key's team,
//! made and changed by the capsule handlers themselves ([`crate::capsules`]); this module only
//! translates: E2B's fields ([`model`]), its error body `{"code", "message"}` ([`errors`]), its
//! list filters and pages ([`list`]) and its lifetime, a deadline rather than an idle timeout
//! ([`deadline`]). envd is reached through the port proxy ([`crate::proxy`]).
//!
//! These routes are not in Wrenn's OpenAPI document: their contract is E2B's (see
//! `docs/e2b.md`), tested with the published SDK.

pub mod deadline;
pub mod envd;
pub mod errors;
pub mod list;
pub mod model;
pub mod sandboxes;

use axum::{
    routing::{get, post},
    Router,
};

use crate::state::AppState;

/// The envd version reported to the SDK: the upstream envd whose behaviour Wrenn's envd
/// implements (the SDK's feature gates, `e2b/envd/versions.py`, are all on up to it).
pub const ENVD_VERSION: &str = "0.6.4";

/// envd's port in every capsule (the port the SDK names in `E2b-Sandbox-Port`).
pub const ENVD_PORT: u16 = 49983;

/// E2B's default template name, served by Wrenn's default template.
pub const DEFAULT_TEMPLATE: &str = "base";

/// The E2B routes, each answer's errors in E2B's shape.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandboxes", post(sandboxes::create).get(list::list_v1))
        .route("/v2/sandboxes", post(sandboxes::create).get(list::list))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get).delete(sandboxes::kill),
        )
        .route("/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/sandboxes/{id}/connect", post(sandboxes::connect))
        .route("/v2/sandboxes/{id}/connect", post(sandboxes::connect))
        .route("/sandboxes/{id}/metrics", get(sandboxes::metrics))
        .route("/templates", get(list::templates))
        .route("/v2/templates", get(list::templates))
        .layer(axum::middleware::from_fn(errors::shape))
}

/// Capsule `c`'s envd access token (`envdAccessToken`, which the SDK sends back as
/// `X-Access-Token`): envd's own, as its host knows it; never stored by the control plane.
pub async fn envd_token(state: &AppState, c: &crate::db::CapsuleRow) -> crate::Result<String> {
    let pb = state
        .agent_for(c)
        .await?
        .get_capsule(wrenn_proto::agent::v1::CapsuleRef { id: c.id.clone() })
        .await?
        .into_inner();
    Ok(pb.envd_access_token)
}

/// Whether `given` is the token `want` (both non-empty; compared without an early exit).
pub fn same_token(want: &str, given: &str) -> bool {
    !want.is_empty()
        && want.len() == given.len()
        && want
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

/// The sandbox domain the SDK builds host names from: the proxy's domain, with the port the
/// client reached this server on (`Host`), if any.
pub fn sandbox_domain(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    let port = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    match port {
        Some(p) if p != "443" && p != "80" => format!("{}:{p}", state.domain),
        _ => state.domain.clone(),
    }
}
