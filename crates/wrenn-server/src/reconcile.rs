//! The reconciler: keeps the database in step with what the host agent reports, and samples
//! usage.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

use wrenn_proto::agent::v1::{agent_client::AgentClient, CapsuleRef, ListCapsulesRequest};

use crate::{
    background, capsules, db,
    error::{self, Result},
    events,
    state::AppState,
    time, usage,
};
use wrenn_types::{api::hosts::HostStatus, CapsuleStatus};

/// Samples usage every 10 s, and every `every` compares the database with what the agent reports and fixes drift: a
/// capsule the agent paused (timeout) or lost is never shown as running. Each runs on one
/// replica at a time (leases `usage` and `reconcile`). The two tasks' handles.
pub fn spawn_reconciler(state: AppState, every: Duration) -> [JoinHandle<()>; 2] {
    let sample_every = Duration::from_secs(db::USAGE_SAMPLE_SECS as u64);
    let sampling = state.clone();
    let usage = background::every_once(
        &state.db,
        USAGE_LEASE,
        sample_every,
        background::ttl_for(sample_every),
        move || {
            let state = sampling.clone();
            async move {
                if let Err(e) = usage::sample(&state).await {
                    tracing::warn!(error = %e, "sampling usage");
                }
            }
        },
    );
    let db = state.db.clone();
    let strays = Strays::default();
    let reconciler = background::every_once(
        &db,
        RECONCILE_LEASE,
        every,
        background::ttl_for(every),
        move || {
            let state = state.clone();
            let strays = strays.clone();
            async move {
                if let Err(e) = reconcile_with(&state, &strays, STRAY_GRACE).await {
                    tracing::warn!(error = %e, "reconciling with the agent");
                }
            }
        },
    );
    [usage, reconciler]
}

/// The lease of the reconciler.
pub const RECONCILE_LEASE: &str = "reconcile";
/// The lease of usage sampling.
pub const USAGE_LEASE: &str = "usage";

/// How long a capsule a host lists stays without a live row placing it there before it is
/// a stray and destroyed: far longer than between a host answering a create, fork or move and
/// its row being written (a create whose caller dies in between, or a move's old copy, is
/// one).
pub const STRAY_GRACE: Duration = Duration::from_secs(60);

/// The capsules hosts list that no live row places there, by host and id: when a pass first
/// saw each so (kept across passes by the reconciler's task).
#[derive(Clone, Default)]
pub struct Strays(Arc<Mutex<HashMap<(String, String), Instant>>>);

/// One pass of the reconciler: each online host in turn. A host that does not answer is
/// skipped (its missed heartbeats make it `unreachable`); the others are still reconciled.
/// Strays are only noted (a pass of its own never removes one; see [`reconcile_with`]).
pub async fn reconcile(state: &AppState) -> Result<()> {
    reconcile_with(state, &Strays::default(), STRAY_GRACE).await
}

/// [`reconcile`], also destroying each capsule `strays` has seen as a stray for `grace`.
pub async fn reconcile_with(state: &AppState, strays: &Strays, grace: Duration) -> Result<()> {
    let hosts = state.db.host_records().await?;
    let mut failed = None;
    for host in hosts.iter().filter(|h| h.status == HostStatus::Online) {
        if let Err(e) = reconcile_host(state, host, strays, grace).await {
            tracing::warn!(host = %host.id, error = %e, "reconciling with a host");
            failed = Some(e);
        }
    }
    // The one host of a single-node setup that failed is the pass's failure.
    match failed {
        Some(e) if hosts.len() == 1 => Err(e),
        _ => Ok(()),
    }
}

/// Compares host `host`'s capsule rows with what its agent lists now.
async fn reconcile_host(
    state: &AppState,
    host: &db::HostRecord,
    strays: &Strays,
    grace: Duration,
) -> Result<()> {
    let mut agent = state.pool.client(host)?;
    // A host that accepts connections but never answers is skipped, not waited for: the
    // other hosts are still reconciled, and its silence makes it `unreachable`.
    let listed = tokio::time::timeout(
        crate::builtin::BEAT_TIMEOUT,
        agent.list_capsules(ListCapsulesRequest {}),
    )
    .await
    .map_err(|_| {
        error::ApiError::HostUnavailable(format!("host {} did not list its capsules", host.id))
    })??;
    let on_host: std::collections::HashMap<String, wrenn_proto::agent::v1::Capsule> = listed
        .into_inner()
        .capsules
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    let rows = state.db.live_capsules_on(&host.id).await?;
    let placed: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let unplaced: Vec<&str> = on_host
        .keys()
        .map(String::as_str)
        .filter(|id| !placed.contains(id))
        .collect();
    remove_strays(&mut agent, &host.id, &unplaced, strays, grace).await;
    for row in rows {
        let (status, error) = match on_host.get(&row.id) {
            // The list may be older than the row (a resume or pause that finished since, on
            // the host and then in the row): what the host says now decides.
            Some(c) if capsules::model::status_of(c.state) != row.status => {
                let now = agent.get_capsule(CapsuleRef { id: row.id.clone() }).await;
                match now {
                    Ok(c) => {
                        let c = c.into_inner();
                        (
                            capsules::model::status_of(c.state),
                            (!c.error.is_empty()).then(|| c.error.clone()),
                        )
                    }
                    // Destroyed meanwhile, or lost: the next pass sees which.
                    Err(e) if e.code() == tonic::Code::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(c) => (
                capsules::model::status_of(c.state),
                (!c.error.is_empty()).then(|| c.error.clone()),
            ),
            // Made moments ago and not listed yet, or lost by its host.
            None if matches!(row.status, CapsuleStatus::Pending | CapsuleStatus::Starting) => {
                continue
            }
            // Its host came back without it (a host that lost its disk, or a capsule that
            // ended while nobody could tell): it is over.
            None if row.status == CapsuleStatus::Missing => (CapsuleStatus::Stopped, None),
            // Asked again before it is called lost: a capsule moving here (its row names this
            // host once the import is done) may have arrived since the list was read.
            None => match agent.get_capsule(CapsuleRef { id: row.id.clone() }).await {
                Ok(_) => continue,
                Err(e) if e.code() == tonic::Code::NotFound => (
                    CapsuleStatus::Error,
                    Some("the host no longer has this capsule".to_string()),
                ),
                Err(e) => return Err(e.into()),
            },
        };
        if status != row.status {
            tracing::info!(id = %row.id, from = %row.status, to = %status, "capsule state drifted");
            state
                .db
                .set_capsule_status(&row.id, status, error.as_deref(), false)
                .await?;
            let mut updated = row.clone();
            updated.status = status;
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
                        kind: wrenn_types::Actor::System,
                        id: "reconciler".into(),
                        name: "reconciler".into(),
                    },
                    metadata: Default::default(),
                    // As clients may see it (the database keeps the whole reason).
                    error: error.map(|e| error::redact(&e).into_owned()),
                    sandbox: Some(capsules::model::Capsule::from(&updated)),
                    timestamp: time::rfc3339(db::now_ms()),
                },
            );
        }
    }
    Ok(())
}

/// Notes the capsules `host` lists with no live row placing them there (`unplaced`), forgets
/// those placed since, and destroys those noted for `grace` already.
async fn remove_strays(
    agent: &mut AgentClient<tonic::transport::Channel>,
    host: &str,
    unplaced: &[&str],
    strays: &Strays,
    grace: Duration,
) {
    let now = Instant::now();
    let due: Vec<String> = {
        let mut seen = strays.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|(h, id), _| h != host || unplaced.contains(&id.as_str()));
        unplaced
            .iter()
            .filter(|id| {
                let since = *seen
                    .entry((host.to_string(), id.to_string()))
                    .or_insert(now);
                now.duration_since(since) >= grace
            })
            .map(|id| id.to_string())
            .collect()
    };
    for id in due {
        tracing::warn!(%id, %host, "destroying a capsule no row places on its host");
        match agent.destroy_capsule(CapsuleRef { id: id.clone() }).await {
            Ok(_) => {
                strays
                    .0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(host.to_string(), id));
            }
            Err(e) => tracing::warn!(%id, %host, error = %e, "destroying a stray capsule"),
        }
    }
}
