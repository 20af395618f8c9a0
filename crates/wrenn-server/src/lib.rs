//! wrenn-server: the control plane. The REST API the published `wrenn` SDK uses ([`capsules`],
//! [`files`], [`snapshots`], [`events`]), API-key auth scoped to a team ([`state`]), storage
//! ([`db`]), and a reconciler that keeps the database in step with the host agent.

pub mod accounts;
pub mod capsules;
pub mod db;
pub mod error;
pub mod events;
pub mod files;
pub mod proxy;
pub mod snapshots;
pub mod state;
pub mod time;
pub mod usage;
pub mod ws;

use std::{path::Path, time::Duration};

use axum::{
    extract::{DefaultBodyLimit, State},
    routing::{delete, get, post},
    Json, Router,
};
use serde_json::{json, Value};
use wrenn_proto::agent::v1::ListCapsulesRequest;

pub use error::{ApiError, Result};
pub use state::AppState;

use crate::db::Caller;

/// Largest JSON body (file contents go through the streamed multipart routes).
const MAX_JSON_BODY: usize = 1 << 20;

/// Every route.
pub fn router(state: AppState) -> Router {
    let unlimited = DefaultBodyLimit::disable();
    Router::new()
        .route("/health", get(health))
        .route("/v1/capsules", post(capsules::create).get(capsules::list))
        .route("/v1/capsules/stats", get(usage::stats))
        .route("/v1/capsules/usage", get(usage::usage))
        .route(
            "/v1/capsules/{id}",
            get(capsules::get).delete(capsules::destroy),
        )
        .route("/v1/capsules/{id}/pause", post(capsules::pause))
        .route("/v1/capsules/{id}/resume", post(capsules::resume))
        .route("/v1/capsules/{id}/ping", post(capsules::ping))
        .route("/v1/capsules/{id}/exec", post(capsules::exec))
        .route("/v1/capsules/{id}/processes", get(capsules::processes))
        .route(
            "/v1/capsules/{id}/processes/{pid}",
            delete(capsules::kill_process),
        )
        .route("/v1/capsules/{id}/metrics", get(capsules::metrics))
        .route("/v1/capsules/{id}/exec/stream", get(ws::exec_stream))
        .route(
            "/v1/capsules/{id}/processes/{pid}/stream",
            get(ws::connect_process),
        )
        .route("/v1/capsules/{id}/pty", get(ws::pty))
        .route("/v1/capsules/{id}/files/read", post(files::read))
        .route("/v1/capsules/{id}/files/stream/read", post(files::read))
        .route(
            "/v1/capsules/{id}/files/write",
            post(files::write).layer(unlimited),
        )
        .route(
            "/v1/capsules/{id}/files/stream/write",
            post(files::write).layer(unlimited),
        )
        .route("/v1/capsules/{id}/files/list", post(files::list))
        .route("/v1/capsules/{id}/files/mkdir", post(files::mkdir))
        .route("/v1/capsules/{id}/files/remove", post(files::remove))
        .route(
            "/v1/snapshots",
            post(snapshots::create).get(snapshots::list),
        )
        .route("/v1/snapshots/{name}", delete(snapshots::delete))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/audit", get(audit))
        .merge(accounts::account_routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy::route,
        ))
        .with_state(state)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// `GET /v1/audit`: the caller's team's audit log, newest first.
async fn audit(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>> {
    let rows = state.db.audit_log(&caller.team_id, 500).await?;
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "actor": { "type": r.actor_type, "id": r.actor_id },
                "action": r.action,
                "resource": { "type": r.resource_type, "id": r.resource_id },
                "outcome": r.outcome,
                "detail": r.detail,
                "created_at": time::rfc3339(r.created_at),
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

/// The admin account `wrenn up` makes on first start.
pub const ADMIN_EMAIL: &str = "admin@localhost";

/// On first start: an admin user (`admin@localhost`, a random password written to
/// `password_file`), their team, and an API key of that team written to `key_file` (both 0600).
/// Later starts reuse them. Returns the key when it was just made.
pub async fn bootstrap(
    db: &db::Db,
    key_file: &Path,
    password_file: &Path,
) -> Result<Option<String>> {
    if db.team_count().await? > 0 && key_file.is_file() {
        return Ok(None);
    }
    let mut b = [0u8; 18];
    let _ = getrandom::fill(&mut b);
    let password = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
    let hash = accounts::password::hash(password.clone()).await?;
    let (_, team) = db
        .create_user_with_team(ADMIN_EMAIL, "Admin", &hash, "default")
        .await?;
    let (_, key) = db.create_api_key(&team.id, "admin").await?;
    let write = |path: &Path, text: String| {
        write_private(path, &text)
            .map_err(|e| ApiError::Internal(format!("writing {}: {e}", path.display())))
    };
    write(password_file, format!("{password}\n"))?;
    write(key_file, format!("{key}\n"))?;
    Ok(Some(key))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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
                    error,
                    sandbox: Some(capsules::capsule_json(&updated)),
                    timestamp: time::rfc3339(db::now_ms()),
                },
            );
        }
    }
    Ok(())
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
