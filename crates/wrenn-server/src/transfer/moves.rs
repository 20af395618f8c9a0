//! Moving paused capsules between hosts: `POST /v1/capsules/{id}/move`, and a drain's
//! `move_paused` ([`move_paused_off`]). The target is placed like a create (the team's hosts
//! only, online, not draining, with room, held by a reservation) among the hosts other than
//! the capsule's own, unless a platform admin names it.

use axum::{
    body::Bytes,
    extract::{Path, State},
    Json,
};
use sqlx::Row;
use wrenn_proto::agent::v1::CapsuleRef;
use wrenn_types::{
    api::hosts::{DrainResult, MoveCapsuleBody},
    CapsuleStatus,
};

use crate::{
    capsules::{lookup::live, model::Capsule},
    db::{now_ms, Caller, CapsuleRow},
    error::{ApiError, ErrorBody, Result},
    events::publish,
    placement::{self, Ask},
    responses::{NoCapsule, OnHost},
    scheduler::Claims,
    state::AppState,
};

/// Move a paused capsule
///
/// Its memory, device state and disk travel to another host, where it stays paused; resume
/// continues there with its processes and files. The target is the scheduler's choice among
/// the other hosts the team may use, or `host_id` (platform admins only). The body may be
/// empty.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/move",
    operation_id = "move_capsule",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    request_body(content = MoveCapsuleBody, description = "Optional: an empty body is `{}`"),
    responses(
        (status = 200, description = "The capsule, paused on its new host", body = Capsule),
        OnHost, NoCapsule,
        (status = 403, description = "`forbidden`: only a platform admin may name the host", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not paused", body = ErrorBody),
    )
)]
pub async fn move_capsule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Capsule>> {
    let b: MoveCapsuleBody = if body.iter().all(u8::is_ascii_whitespace) {
        MoveCapsuleBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidRequest(format!("the move body: {e}")))?
    };
    let c = live(&state, &caller, &id).await?;
    if b.host_id.is_some()
        && !crate::quotas::handlers::is_platform_admin(&state.db, &caller).await?
    {
        return Err(ApiError::Forbidden(
            "only a platform admin may choose the host (`host_id`)".into(),
        ));
    }
    let row = move_one(&state, &caller, &c, b.host_id.as_deref()).await?;
    Ok(Json(Capsule::from(&row)))
}

/// Moves paused capsule `c` to `target` (or the scheduler's choice among the other hosts):
/// export, import, the row's `host_id`, then destroy on the old host; audit and event
/// `capsule.moved`. On any failure before the row changes, the capsule stays where it was.
pub async fn move_one(
    state: &AppState,
    by: &Caller,
    c: &CapsuleRow,
    target: Option<&str>,
) -> Result<CapsuleRow> {
    if c.status != CapsuleStatus::Paused {
        return Err(ApiError::InvalidState(format!(
            "capsule {} is {}: only a paused capsule can move (pause it first)",
            c.id, c.status
        )));
    }
    let from_host = c
        .host_id
        .clone()
        .ok_or_else(|| ApiError::InvalidState(format!("capsule {} has no host", c.id)))?;
    if target == Some(from_host.as_str()) {
        return Err(ApiError::InvalidRequest(format!(
            "capsule {} is already on host {from_host}",
            c.id
        )));
    }
    let from = state.agent_on(&from_host).await?;
    // The constraints it was created with hold wherever it goes.
    let tags = state.db.capsule_host_tags(&c.id).await?;
    let ask = Ask {
        team_id: &c.team_id,
        tags: &tags,
        template: "",
        snapshot: true,
        only_host: target,
        except_host: Some(&from_host),
        busy: &[],
        need: Claims::new(
            c.vcpus.max(0) as u64,
            c.memory_mb.max(0) as u64,
            c.disk_size_mb.max(0) as u64,
        ),
    };
    let placed = placement::place(&state.db, &ask).await?;
    let to_host = placed.host.id.clone();
    let to = state.pool.client(&placed.host)?;
    let landed = super::relay_capsule(from.clone(), to.clone(), &c.id).await;
    if let Err(e) = landed {
        placed.release().await;
        return Err(e);
    }
    let set = set_capsule_host(state, &c.id, &to_host).await;
    placed.release().await;
    if let Err(e) = set {
        // The row still places it on the old host: the copy that landed is nobody's, and it
        // holds a slot and its disk there until removed.
        let mut to = to;
        if let Err(d) = to.destroy_capsule(CapsuleRef { id: c.id.clone() }).await {
            tracing::warn!(id = %c.id, host = %to_host, error = %d, "removing a move's copy after the row kept its host");
        }
        return Err(e);
    }
    let mut old = from;
    if let Err(e) = old.destroy_capsule(CapsuleRef { id: c.id.clone() }).await {
        // The reconciler of the old host removes a capsule no row places there.
        tracing::warn!(id = %c.id, host = %from_host, error = %e, "removing a moved capsule from its old host");
    }
    tracing::info!(id = %c.id, from = %from_host, to = %to_host, "capsule moved");
    let row = state.db.capsule(&c.team_id, &c.id).await?;
    let detail = format!("from {from_host} to {to_host}");
    state
        .db
        .audit(by, "capsule.moved", ("capsule", &c.id), "success", &detail)
        .await?;
    publish(
        state,
        crate::events::event::capsule_event(by, "capsule.moved", &c.id, Capsule::from(&row)),
    );
    Ok(row)
}

async fn set_capsule_host(state: &AppState, id: &str, host: &str) -> Result<()> {
    sqlx::query("UPDATE capsules SET host_id = $1, updated_at = $2 WHERE id = $3")
        .bind(host)
        .bind(now_ms())
        .bind(id)
        .execute(state.db.pool())
        .await?;
    Ok(())
}

/// Moves every paused capsule of (draining) host `host_id` to other hosts: which moved, and
/// why the others stayed.
pub async fn move_paused_off(state: &AppState, by: &Caller, host_id: &str) -> DrainResult {
    let mut result = DrainResult::default();
    let ids = sqlx::query("SELECT id FROM capsules WHERE host_id = $1 AND status = $2 ORDER BY id")
        .bind(host_id)
        .bind(CapsuleStatus::Paused.as_str())
        .fetch_all(state.db.pool())
        .await;
    let ids: Vec<String> = match ids {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("id").ok())
            .collect(),
        Err(e) => {
            result.failed.insert(
                "*".into(),
                format!("listing the host's paused capsules: {e}"),
            );
            return result;
        }
    };
    for id in ids {
        let moved = match state.db.capsule_any(&id).await {
            Ok(c) => move_one(state, by, &c, None).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match moved {
            Ok(()) => result.moved.push(id),
            Err(e) => {
                result.failed.insert(id, e.to_string());
            }
        }
    }
    result
}
