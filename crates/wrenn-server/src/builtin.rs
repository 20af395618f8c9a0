//! The built-in host: the agent `wrenn up` runs in-process (or the one `wrenn server --agent`
//! names). It is a host row like any other (`builtin`, made once, id kept), and an in-process
//! task gives it the heartbeats a registered agent sends over REST, so the same rules (load for
//! placement, `unreachable` after silence) hold for it.

use std::time::Duration;

use tonic::transport::Channel;
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, Capsule, CapsuleState, HostInfoRequest, HostInfoResponse,
    ListCapsulesRequest, ListTemplatesRequest, Template, TemplateKind,
};
use wrenn_types::api::hosts::{HostLoad, HostSpecs, TemplatePresence};

use crate::{
    error::{ApiError, Result},
    state::AppState,
};

/// How often the built-in host's heartbeat is written (more often under a short host
/// timeout: [`heartbeat_every`]).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// The built-in host's heartbeat interval under host timeout `timeout`: [`HEARTBEAT_EVERY`],
/// or a third of the timeout when that is shorter (at least 100 ms), so the built-in host
/// never goes `unreachable` between two of its own heartbeats.
pub fn heartbeat_every(timeout: Duration) -> Duration {
    HEARTBEAT_EVERY
        .min(timeout / 3)
        .max(Duration::from_millis(100))
}

/// Makes (or finds) the built-in host's row for the agent at `address`, keeps `client` for it,
/// writes its first heartbeat and starts the task that writes the next ones every `every`.
/// Its id.
pub async fn attach(
    state: &AppState,
    address: &str,
    client: AgentClient<Channel>,
    every: Duration,
) -> Result<String> {
    let id = state.db.ensure_builtin_host(address).await?;
    state.pool.insert(&id, address, client.clone());
    if let Err(e) = beat(state, &id, client.clone()).await {
        tracing::warn!(host = %id, error = %e, "the built-in host's first heartbeat");
    }
    let (state, host) = (state.clone(), id.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = beat(&state, &host, client.clone()).await {
                // Silence makes it `unreachable`, as for any host.
                tracing::warn!(host = %host, error = %e, "the built-in host's heartbeat");
            }
        }
    });
    Ok(id)
}

/// The longest a heartbeat waits for the agent's answers: an agent that accepts connections
/// but never answers must not hold up the start, nor the next beats.
pub const BEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// One heartbeat of the built-in host: its specs and load, as the agent reports them now
/// (`host_unavailable` when it does not answer within [`BEAT_TIMEOUT`]).
pub async fn beat(state: &AppState, host_id: &str, agent: AgentClient<Channel>) -> Result<()> {
    tokio::time::timeout(BEAT_TIMEOUT, beat_now(state, host_id, agent))
        .await
        .map_err(|_| {
            ApiError::HostUnavailable(format!(
                "the built-in host's agent did not answer within {} s",
                BEAT_TIMEOUT.as_secs()
            ))
        })?
}

async fn beat_now(state: &AppState, host_id: &str, mut agent: AgentClient<Channel>) -> Result<()> {
    let info = agent.host_info(HostInfoRequest {}).await?.into_inner();
    let capsules = agent
        .list_capsules(ListCapsulesRequest {})
        .await?
        .into_inner()
        .capsules;
    let templates = agent
        .list_templates(ListTemplatesRequest {})
        .await?
        .into_inner()
        .templates;
    let came_back = state
        .db
        .record_heartbeat(
            host_id,
            &specs_of(&info),
            &load_of(&info, &capsules, &templates),
        )
        .await?;
    if came_back == Some(true) {
        tracing::info!(host = %host_id, "the built-in host answers again: online");
    }
    Ok(())
}

/// A host's specs from its agent's `HostInfo`.
pub fn specs_of(info: &HostInfoResponse) -> HostSpecs {
    HostSpecs {
        arch: info.arch.clone(),
        cpu_cores: info.cpus,
        memory_mb: info.memory_bytes >> 20,
        disk_mb: info.disk_bytes >> 20,
        slots: info.slots.clone(),
        vmm: "qemu".into(),
        accel: info
            .accel
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// A host's load from its agent's `HostInfo` (memory and disk in use) and its capsule and
/// template lists.
pub fn load_of(info: &HostInfoResponse, capsules: &[Capsule], templates: &[Template]) -> HostLoad {
    let mut load = HostLoad {
        memory_mb_used: info.memory_used_bytes >> 20,
        disk_mb_used: info.disk_used_bytes >> 20,
        buildable: info.buildable.clone(),
        ..HostLoad::default()
    };
    for c in capsules {
        match CapsuleState::try_from(c.state) {
            Ok(CapsuleState::Running | CapsuleState::Starting | CapsuleState::Pending) => {
                load.running += 1;
                load.vcpus_reserved += c.vcpus;
                load.memory_mb_reserved += u64::from(c.memory_mib);
                load.disk_mb_reserved += u64::from(c.disk_mib);
            }
            Ok(CapsuleState::Paused) => {
                load.paused += 1;
                load.disk_mb_reserved += u64::from(c.disk_mib);
            }
            _ => {}
        }
    }
    load.templates = templates
        .iter()
        .map(|t| TemplatePresence {
            name: t.name.clone(),
            shapes: if t.kind == TemplateKind::Base as i32 {
                vec![format!("{}x{}", t.vcpus, t.memory_mib)]
            } else {
                Vec::new()
            },
        })
        .collect();
    load
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;

    #[test]
    fn the_built_in_heartbeat_beats_within_the_host_timeout() {
        assert_eq!(heartbeat_every(Duration::from_secs(30)), HEARTBEAT_EVERY);
        assert_eq!(heartbeat_every(Duration::from_secs(60)), HEARTBEAT_EVERY);
        assert_eq!(
            heartbeat_every(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            heartbeat_every(Duration::from_millis(30)),
            Duration::from_millis(100)
        );
    }
}
