//! Templates and paused capsules that travel between hosts. The control plane relays: it
//! opens one host's export (`ExportTemplate`, `ExportCapsule`) and streams it, chunk by chunk
//! as it arrives, into another host's import; hosts never connect to each other (a team's own
//! machine never reaches another host). Nothing is buffered beyond the gRPC windows. A broken
//! export ends the import's stream before its trailer, so the importer keeps nothing.
//!
//! [`ensure_on`] copies a snapshot template to the host a create was placed on when that host
//! lacks it; `moves` moves paused capsules (`POST /v1/capsules/{id}/move`, a drain's
//! `move_paused`); [`delete_everywhere`] deletes a snapshot template on every host holding it.

use std::sync::{Arc, Mutex};

use tonic::transport::Channel;
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, Capsule, CapsuleRef, ExportTemplateRequest, ListTemplatesRequest,
    Template, TransferChunk,
};

use crate::{
    db::HostRecord,
    error::{ApiError, Result},
    state::AppState,
};

pub mod moves;
pub use moves::{move_capsule, move_one, move_paused_off};

type Broke = Arc<Mutex<Option<tonic::Status>>>;

/// `export` as a request stream for the import: a task forwards its chunks while they come
/// (at most [`IN_FLIGHT`] waiting); the first error ends the stream (without a trailer) and
/// is kept to report.
fn pipe(
    mut export: tonic::Streaming<TransferChunk>,
) -> (tokio_stream::wrappers::ReceiverStream<TransferChunk>, Broke) {
    let broke: Broke = Arc::default();
    let seen = broke.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
    tokio::spawn(async move {
        loop {
            match export.message().await {
                Ok(Some(chunk)) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the import ended first
                    }
                }
                Ok(None) => break,
                Err(s) => {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                    break;
                }
            }
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), broke)
}

/// Chunks read from the source and not yet sent to the target.
const IN_FLIGHT: usize = 4;

/// The relay's outcome: the import's answer, or, when the export broke, the source's error
/// (the target only saw a stream cut short).
fn settle<T>(landed: std::result::Result<T, tonic::Status>, broke: Broke) -> Result<T> {
    let export_error = broke.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (landed, export_error) {
        (Ok(t), _) => Ok(t),
        (Err(_), Some(e)) => Err(from_source(e)),
        (Err(e), None) => Err(e.into()),
    }
}

/// An error of the sending host, as the caller sees it.
fn from_source(s: tonic::Status) -> ApiError {
    let e = ApiError::from(s);
    match e {
        ApiError::Agent(m) => ApiError::Agent(format!("the source host: {m}")),
        other => other,
    }
}

/// Copies snapshot template `name` (its host-side id) from `from` to `to`. A template already
/// on `to` is kept as it is.
pub async fn relay_template(
    mut from: AgentClient<Channel>,
    to: AgentClient<Channel>,
    name: &str,
) -> Result<Template> {
    let export = from
        .export_template(ExportTemplateRequest { name: name.into() })
        .await
        .map_err(from_source)?
        .into_inner();
    let (items, broke) = pipe(export);
    let mut to = to;
    let landed = to.import_template(items).await.map(|r| r.into_inner());
    settle(landed, broke)
}

/// Copies paused capsule `id` from `from` to `to`, where it lands paused (the caller destroys
/// it on `from` once the database says it lives on `to`).
pub async fn relay_capsule(
    mut from: AgentClient<Channel>,
    to: AgentClient<Channel>,
    id: &str,
) -> Result<Capsule> {
    let export = from
        .export_capsule(CapsuleRef { id: id.into() })
        .await
        .map_err(from_source)?
        .into_inner();
    let (items, broke) = pipe(export);
    let mut to = to;
    let landed = to.import_capsule(items).await.map(|r| r.into_inner());
    settle(landed, broke)
}

/// Whether `host` holds template `name`.
pub async fn has_template(mut host: AgentClient<Channel>, name: &str) -> Result<bool> {
    Ok(host
        .list_templates(ListTemplatesRequest {})
        .await?
        .into_inner()
        .templates
        .iter()
        .any(|t| t.name == name))
}

/// Makes sure `target` holds snapshot template `name`: nothing to do if it has it, else it is
/// relayed from the first of `sources` (the template's own host first) that can send it.
/// Returns whether it was copied.
pub async fn ensure_template(
    target: AgentClient<Channel>,
    sources: Vec<(String, AgentClient<Channel>)>,
    name: &str,
) -> Result<bool> {
    if has_template(target.clone(), name).await? {
        return Ok(false);
    }
    let mut last = None;
    for (host_id, source) in sources {
        match relay_template(source, target.clone(), name).await {
            Ok(_) => {
                tracing::info!(template = name, from = %host_id, "template copied to a host");
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(template = name, from = %host_id, error = %e, "copying a template");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ApiError::HostUnavailable(format!(
            "no online host holds template {name} to copy it from"
        ))
    }))
}

/// Deletes snapshot template `name` on every host in `hosts` that holds it (one that does not
/// is skipped; a host that cannot be reached keeps its copy until a later delete). The hosts
/// that failed, with why.
pub async fn delete_everywhere(
    hosts: Vec<(String, AgentClient<Channel>)>,
    name: &str,
) -> Vec<(String, ApiError)> {
    let calls = hosts.into_iter().map(|(host_id, mut client)| async move {
        let done = client
            .delete_template(wrenn_proto::agent::v1::DeleteTemplateRequest { name: name.into() })
            .await;
        match done {
            Ok(_) => None,
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => Some((host_id, ApiError::from(s))),
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Makes sure `target` (a create's host) holds snapshot template `name` (its host-side id),
/// copying it from `made_on` (the host it was made on) or else any other online host whose
/// heartbeat lists it. Returns whether it was copied.
pub async fn ensure_on(
    state: &AppState,
    target: &HostRecord,
    name: &str,
    made_on: Option<&str>,
) -> Result<bool> {
    let client = state.pool.client(target)?;
    if has_template(client.clone(), name).await? {
        return Ok(false);
    }
    let mut hosts: Vec<HostRecord> = state
        .db
        .host_records()
        .await?
        .into_iter()
        .filter(|h| {
            h.id != target.id
                && h.status == wrenn_types::api::hosts::HostStatus::Online
                && (Some(h.id.as_str()) == made_on
                    || h.load.templates.iter().any(|t| t.name == name))
        })
        .collect();
    // The host it was made on first.
    hosts.sort_by_key(|h| Some(h.id.as_str()) != made_on);
    let sources = hosts
        .iter()
        .filter_map(|h| state.pool.client(h).ok().map(|c| (h.id.clone(), c)))
        .collect();
    ensure_template(client, sources, name).await
}

/// The clients of every online host (for [`delete_everywhere`]).
pub async fn online_hosts(state: &AppState) -> Result<Vec<(String, AgentClient<Channel>)>> {
    Ok(state
        .db
        .host_records()
        .await?
        .iter()
        .filter(|h| h.status == wrenn_types::api::hosts::HostStatus::Online)
        .filter_map(|h| state.pool.client(h).ok().map(|c| (h.id.clone(), c)))
        .collect())
}
