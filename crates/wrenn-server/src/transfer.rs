//! Templates and paused capsules that travel between hosts. The control plane relays: it
//! opens one host's export (`ExportTemplate`, `ExportCapsule`) and streams it, chunk by chunk
//! as it arrives, into another host's import; hosts never connect to each other (a team's own
//! machine never reaches another host). Nothing is buffered beyond the gRPC windows. A broken
//! export ends the import's stream before its trailer, so the importer keeps nothing.
//!
//! What to relay where is decided by callers: [`ensure_template`] before a create on a host
//! without the snapshot template, `capsules::moves` for `POST /v1/capsules/{id}/move` and
//! drain, template deletes for every host holding one.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tonic::transport::Channel;
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, Capsule, CapsuleRef, ExportTemplateRequest, ListTemplatesRequest,
    Template, TransferChunk,
};

use crate::error::{ApiError, Result};

type Broke = Arc<Mutex<Option<tonic::Status>>>;

/// `export` as a request stream for the import: items pass while they are `Ok`; the first
/// error ends the stream (without a trailer) and is kept to report.
fn pipe(
    export: tonic::Streaming<TransferChunk>,
) -> (
    futures_util::stream::BoxStream<'static, TransferChunk>,
    Broke,
) {
    let broke: Broke = Arc::default();
    let seen = broke.clone();
    let items = export
        .take_while(move |item| {
            let ok = match item {
                Ok(_) => true,
                Err(s) => {
                    *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
                    false
                }
            };
            std::future::ready(ok)
        })
        .filter_map(|item| std::future::ready(item.ok()))
        .boxed();
    (items, broke)
}

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
