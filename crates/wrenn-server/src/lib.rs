//! wrenn-server: the control plane. The REST API the published `wrenn` SDK uses ([`capsules`],
//! [`files`], [`snapshots`], [`events`]), API-key auth scoped to a team ([`state`]), storage
//! ([`db`]), and a reconciler that keeps the database in step with the host agent. The API
//! describes itself ([`api_docs`]: `/openapi.json`, `/docs`) and is measured ([`metrics`]:
//! `/metrics`).

pub mod accounts;
pub mod api_docs;
pub mod audit;
mod bootstrap;
pub mod capsules;
pub mod db;
pub mod error;
pub mod events;
pub mod files;
pub mod metrics;
pub mod network;
pub mod proxy;
pub mod quotas;
pub mod restart;
pub mod run;
pub mod snapshots;
pub mod state;
pub mod time;
pub mod usage;
pub mod validate;
pub mod ws;

use std::time::Duration;

use axum::{
    extract::DefaultBodyLimit,
    handler::Handler,
    http::Method,
    routing::{MethodFilter, MethodRouter},
    Json, Router,
};
use serde::Serialize;
use utoipa::ToSchema;
use wrenn_proto::agent::v1::{CapsuleRef, ListCapsulesRequest};

pub use bootstrap::{bootstrap, AdminKey, ADMIN_EMAIL};
pub use error::{ApiError, Result};
pub use run::{run, serve, start, Config, Started};
pub use state::AppState;

/// Largest JSON body (file contents go through the streamed multipart routes).
const MAX_JSON_BODY: usize = 1 << 20;

/// One route: a method, a path template and its handler. [`router`] serves exactly the routes
/// of [`routes`], and a test checks that `/openapi.json` documents exactly these too.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

/// `handler` for `method` on `path`.
pub fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("the route table's methods");
    Route {
        method,
        path,
        handler: axum::routing::on(filter, handler),
    }
}

impl Route {
    /// Without the JSON body limit (streamed uploads).
    fn unlimited(mut self) -> Route {
        self.handler = self.handler.layer(DefaultBodyLimit::disable());
        self
    }
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    use Method as M;
    let mut all = vec![
        route(M::GET, "/health", health),
        route(M::GET, "/openapi.json", api_docs::openapi_json),
        route(M::GET, "/docs", api_docs::docs),
        route(M::GET, "/metrics", metrics::scrape),
        route(M::POST, "/v1/capsules", capsules::create),
        route(M::GET, "/v1/capsules", capsules::list),
        route(M::GET, "/v1/capsules/stats", usage::stats),
        route(M::GET, "/v1/capsules/usage", usage::usage),
        route(M::GET, "/v1/capsules/{id}", capsules::get),
        route(M::DELETE, "/v1/capsules/{id}", capsules::destroy),
        route(M::POST, "/v1/capsules/{id}/pause", capsules::pause),
        route(M::POST, "/v1/capsules/{id}/resume", capsules::resume),
        route(M::POST, "/v1/capsules/{id}/ping", capsules::ping),
        route(M::GET, "/v1/capsules/{id}/network", network::get),
        route(M::PATCH, "/v1/capsules/{id}/network", network::set),
        route(M::GET, "/v1/capsules/{id}/metrics", capsules::metrics),
        route(M::POST, "/v1/capsules/{id}/exec", capsules::exec),
        route(M::GET, "/v1/capsules/{id}/exec/stream", ws::exec_stream),
        route(M::GET, "/v1/capsules/{id}/processes", capsules::processes),
        route(
            M::DELETE,
            "/v1/capsules/{id}/processes/{pid}",
            capsules::kill_process,
        ),
        route(
            M::GET,
            "/v1/capsules/{id}/processes/{pid}/stream",
            ws::connect_process,
        ),
        route(M::GET, "/v1/capsules/{id}/pty", ws::pty),
        route(M::POST, "/v1/capsules/{id}/files/read", files::read),
        route(
            M::POST,
            "/v1/capsules/{id}/files/stream/read",
            files::stream_read,
        ),
        route(M::POST, "/v1/capsules/{id}/files/write", files::write).unlimited(),
        route(
            M::POST,
            "/v1/capsules/{id}/files/stream/write",
            files::stream_write,
        )
        .unlimited(),
        route(M::POST, "/v1/capsules/{id}/files/list", files::list),
        route(M::POST, "/v1/capsules/{id}/files/mkdir", files::mkdir),
        route(M::POST, "/v1/capsules/{id}/files/remove", files::remove),
        route(M::POST, "/v1/snapshots", snapshots::create),
        route(M::GET, "/v1/snapshots", snapshots::list),
        route(M::DELETE, "/v1/snapshots/{name}", snapshots::delete),
        route(M::GET, "/v1/events/stream", events::stream),
        route(M::GET, "/v1/audit", audit::audit),
        route(M::GET, "/v1/teams/{id}/quotas", quotas::get),
        route(M::PUT, "/v1/teams/{id}/quotas", quotas::set),
    ];
    all.extend(accounts::account_routes());
    all
}

/// The API: every route of [`routes`], behind the port proxy, measured by [`metrics`].
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        // Two methods on one path merge into one method router.
        router = router.route(r.path, r.handler);
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        // Every error answer in the documented shape, axum's own rejections included.
        .layer(axum::middleware::from_fn(error::json_errors))
        // Inside the proxy: proxied requests are the capsules' traffic, not the API's.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy::route,
        ))
        .with_state(state)
}

/// The server is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
}

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

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Samples usage every 10 s, and every `every` compares the database with what the agent reports and fixes drift: a
/// capsule the agent paused (timeout) or lost is never shown as running.
pub fn spawn_reconciler(state: AppState, every: Duration) {
    let sampling = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(db::USAGE_SAMPLE_SECS as u64));
        loop {
            tick.tick().await;
            if let Err(e) = usage::sample(&sampling).await {
                tracing::warn!(error = %e, "sampling usage");
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = reconcile(&state).await {
                tracing::warn!(error = %e, "reconciling with the agent");
            }
        }
    });
}

/// One pass of the reconciler.
pub async fn reconcile(state: &AppState) -> Result<()> {
    let on_host: std::collections::HashMap<String, wrenn_proto::agent::v1::Capsule> = state
        .agent()
        .list_capsules(ListCapsulesRequest {})
        .await?
        .into_inner()
        .capsules
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    for row in state.db.live_capsules().await? {
        let (status, error) = match on_host.get(&row.id) {
            // The list may be older than the row (a resume or pause that finished since, on
            // the host and then in the row): what the host says now decides.
            Some(c) if capsules::status_name(c.state) != row.status => {
                let now = state
                    .agent()
                    .get_capsule(CapsuleRef { id: row.id.clone() })
                    .await;
                match now {
                    Ok(c) => {
                        let c = c.into_inner();
                        (
                            capsules::status_name(c.state),
                            (!c.error.is_empty()).then(|| c.error.clone()),
                        )
                    }
                    // Destroyed meanwhile, or lost: the next pass sees which.
                    Err(e) if e.code() == tonic::Code::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(c) => (
                capsules::status_name(c.state),
                (!c.error.is_empty()).then(|| c.error.clone()),
            ),
            // Made moments ago and not listed yet, or lost by its host.
            None if row.status == "pending" || row.status == "starting" => continue,
            None => (
                "error",
                Some("the host no longer has this capsule".to_string()),
            ),
        };
        if status != row.status {
            tracing::info!(id = %row.id, from = %row.status, to = status, "capsule state drifted");
            state
                .db
                .set_capsule_status(&row.id, status, error.as_deref(), false)
                .await?;
            let mut updated = row.clone();
            updated.status = status.into();
            events::publish(
                state,
                events::Event {
                    team_id: row.team_id.clone(),
                    event: "capsule.state.changed".into(),
                    outcome: "success".into(),
                    resource: events::Resource {
                        id: row.id.clone(),
                        kind: "capsule".into(),
                    },
                    actor: events::Actor {
                        kind: "system".into(),
                        id: "reconciler".into(),
                        name: "reconciler".into(),
                    },
                    metadata: Default::default(),
                    // As clients may see it (the database keeps the whole reason).
                    error: error.map(|e| error::redact(&e).into_owned()),
                    sandbox: Some(capsules::Capsule::from(&updated)),
                    timestamp: time::rfc3339(db::now_ms()),
                },
            );
        }
    }
    Ok(())
}

/// For the shape tests: `new` must serialize (as the API writes it, to text) to exactly the
/// JSON the handlers built with `json!` before they had types (`old`).
#[cfg(test)]
pub(crate) fn assert_same_json(new: &impl Serialize, old: serde_json::Value) {
    let written = serde_json::to_string(new).unwrap();
    let new: serde_json::Value = serde_json::from_str(&written).unwrap();
    let old: serde_json::Value = serde_json::from_str(&old.to_string()).unwrap();
    assert_eq!(new, old, "\nnew: {new:#}\nold: {old:#}");
}
