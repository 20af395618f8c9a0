//! Who may see and change a host, a host as the API shows it, and the hosts' events.

use std::collections::HashMap;

use wrenn_types::api::hosts::{Host, HostKind};

use crate::{
    db::{now_ms, Caller, HostRow, Role},
    error::{ApiError, Result},
    events::{self, Actor, Event, Resource},
    quotas::handlers::is_platform_admin,
    state::AppState,
    time::rfc3339,
};

/// What a caller may do with a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing: it does not exist for them (404).
    None,
    /// List and get it (a BYOC team's members).
    See,
    /// Change and delete it (platform admins; a BYOC team's owners, admins and API keys).
    Manage,
}

/// Whether `caller` may manage `team_id`'s things: its API keys and its owners and admins.
pub async fn manages_team(state: &AppState, caller: &Caller, team_id: &str) -> Result<bool> {
    if caller.team_id != team_id {
        return Ok(false);
    }
    Ok(match caller.user_id() {
        None => caller.actor_type == wrenn_types::Actor::ApiKey,
        Some(user) => state
            .db
            .role(team_id, user)
            .await?
            .is_some_and(|r| r >= Role::Admin),
    })
}

/// What `caller` may do with `host`.
pub async fn level(state: &AppState, caller: &Caller, host: &HostRow) -> Result<Level> {
    if is_platform_admin(&state.db, caller).await? {
        return Ok(Level::Manage);
    }
    match (&host.kind, &host.team_id) {
        (HostKind::Byoc, Some(team)) if *team == caller.team_id => {
            Ok(if manages_team(state, caller, team).await? {
                Level::Manage
            } else {
                Level::See
            })
        }
        _ => Ok(Level::None),
    }
}

pub fn host_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("host {id} not found"))
}

/// The host `id` if `caller` may do `need` with it: `not_found` when they may not see it,
/// `forbidden` when they may only see it.
pub async fn host_for(state: &AppState, caller: &Caller, id: &str, need: Level) -> Result<HostRow> {
    let host = state.db.host(id).await?.ok_or_else(|| host_not_found(id))?;
    let have = level(state, caller, &host).await?;
    if have == Level::None {
        return Err(host_not_found(id));
    }
    if have < need {
        return Err(ApiError::Forbidden(
            "only platform admins and the owning team's owners and admins change a host".into(),
        ));
    }
    Ok(host)
}

/// A host as the API shows it.
pub async fn to_api(state: &AppState, row: HostRow) -> Result<Host> {
    let tags = state.db.host_tags(&row.id).await?;
    Ok(Host {
        id: row.id,
        kind: row.kind,
        team_id: row.team_id,
        provider: row.provider,
        availability_zone: row.availability_zone,
        status: row.status,
        draining: row.draining,
        address: row.address,
        specs: row.specs,
        load: row.load,
        tags,
        last_heartbeat_at: row.last_heartbeat_at.map(rfc3339),
        created_by: row.created_by,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    })
}

/// A host tag: `[a-z0-9][a-z0-9._:-]{0,62}`.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 63
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && tag.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b':' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "invalid tag {tag:?}: 1 to 63 characters of a-z, 0-9, '.', '_', ':' and '-', \
             starting with a letter or digit"
        )))
    }
}

/// The team whose admins hear of a host (events, audit): the owning team of a `byoc` host,
/// the platform's team of a `regular` one.
pub async fn host_team(state: &AppState, host: &HostRow) -> Result<Option<String>> {
    match (&host.kind, &host.team_id) {
        (HostKind::Byoc, Some(t)) => Ok(Some(t.clone())),
        _ => state.db.platform_team().await,
    }
}

/// The control plane itself, acting in `team_id` (the host monitor, heartbeats).
pub fn system_caller(team_id: &str, name: &str) -> Caller {
    Caller {
        team_id: team_id.into(),
        actor_type: wrenn_types::Actor::System,
        actor_id: name.into(),
        actor_name: name.into(),
    }
}

/// Publishes `event` (`host.…`) about `host` by `by` to `team_id`'s stream.
pub fn publish_host_event(
    state: &AppState,
    by: &Caller,
    team_id: &str,
    event: &str,
    host_id: &str,
    metadata: HashMap<String, String>,
) {
    events::publish(
        state,
        Event {
            team_id: team_id.into(),
            event: event.into(),
            outcome: "success".into(),
            resource: Resource {
                id: host_id.into(),
                kind: "host".into(),
            },
            actor: Actor {
                kind: by.actor_type,
                id: by.actor_id.clone(),
                name: by.actor_name.clone(),
            },
            metadata,
            error: None,
            sandbox: None,
            timestamp: rfc3339(now_ms()),
        },
    );
}

/// Tells the team that hears of `host` (see [`host_team`]) of `event` by the control plane:
/// its event stream and its audit log.
pub async fn system_host_event(
    state: &AppState,
    host: &HostRow,
    event: &str,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let Some(team) = host_team(state, host).await? else {
        return Ok(());
    };
    let by = system_caller(&team, "host-monitor");
    let detail = serde_json::to_string(&metadata).unwrap_or_default();
    state
        .db
        .audit(&by, event, ("host", &host.id), "success", &detail)
        .await?;
    publish_host_event(state, &by, &team, event, &host.id, metadata);
    Ok(())
}
