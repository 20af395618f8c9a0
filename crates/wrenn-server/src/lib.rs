//! wrenn-server: the control plane. The REST API the published `wrenn` SDK uses ([`capsules`],
//! [`files`], [`snapshots`], [`events`]), served by the route table ([`mod@routes`]); who is calling
//! ([`accounts::auth`]: API keys and user tokens, scoped to a team); storage ([`db`], by
//! table); and a reconciler that keeps the database in step with the host agent
//! ([`mod@reconcile`]). The API describes itself ([`api_docs`]: `/openapi.json`, `/docs`; the
//! documented error answers are [`responses`]) and is measured ([`metrics`], served by
//! [`service`] at `/metrics`). [`scheduler`] picks the host a new capsule goes to (pure: no
//! database, no I/O).
//!
//! Layering: [`state`] (what handlers share) imports only leaf modules (the database, the
//! event type, the metrics registry, the account settings); handlers import `state`, never the
//! other way round; [`api_docs`] and [`mod@routes`] import the handlers and nothing imports them.

pub mod accounts;
pub mod admin;
pub mod api_docs;
pub mod audit;
pub mod background;
mod bootstrap;
pub mod builds;
pub mod builtin;
pub mod capsules;
pub mod console;
pub mod db;
pub mod e2b;
pub mod error;
pub mod events;
pub mod extract;
pub mod files;
pub mod hosts;
pub mod https;
pub mod metrics;
pub mod network;
pub mod placement;
pub mod pool;
pub mod proxy;
pub mod quotas;
pub mod reconcile;
pub mod responses;
pub mod restart;
pub mod routes;
pub mod run;
pub mod scheduler;
pub mod service;
pub mod snapshots;
pub mod state;
pub mod time;
pub mod transfer;
pub mod usage;
pub mod validate;
pub mod ws;

pub use bootstrap::{bootstrap, AdminKey, ADMIN_EMAIL};
pub use error::{ApiError, Result};
pub use reconcile::{reconcile, reconcile_with, spawn_reconciler, Strays};
pub use routes::{route, router, routes, Route};
pub use run::{run, serve, start, BuiltinAgent, Config, Started};
pub use state::AppState;

/// For the shape tests: `new` must serialize (as the API writes it, to text) to exactly the
/// JSON the handlers built with `json!` before they had types (`old`).
#[cfg(test)]
pub(crate) fn assert_same_json(new: &impl serde::Serialize, old: serde_json::Value) {
    let written = serde_json::to_string(new).unwrap();
    let new: serde_json::Value = serde_json::from_str(&written).unwrap();
    let old: serde_json::Value = serde_json::from_str(&old.to_string()).unwrap();
    assert_eq!(new, old, "\nnew: {new:#}\nold: {old:#}");
}
