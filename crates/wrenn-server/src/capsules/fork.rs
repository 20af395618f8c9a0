//! `POST /v1/capsules/{id}/fork`: live fork, children on the source's host.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use wrenn_proto::agent::v1::{CapsuleRef, ForkCapsuleRequest};
pub use wrenn_types::api::capsules::{ForkCapsuleBody, ForkedCapsules};
use wrenn_types::{api::quotas::Amounts, CapsuleStatus};

use super::{lookup::live, model::*};
use crate::{
    db::{now_ms, Caller, CapsuleRow},
    error::{ApiError, ErrorBody, Result},
    events::publish,
    extract::JsonBody,
    responses::OnHost,
    state::AppState,
};

/// Most children one fork makes.
pub const MAX_CHILDREN: u32 = 32;

/// Fork a capsule
///
/// Makes `count` new capsules (1..=32) that continue from this capsule's exact state: its
/// memory, running processes, open files and disk. A running capsule is stopped only while
/// its state is copied, then runs on; a paused one is forked from its saved state and stays
/// paused. Each child has its own id, network and tokens, and is `running` when this answers.
/// Children are placed on the source's host. All or none: the team's quotas and the host's
/// room are checked for every child before any is made.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/fork",
    operation_id = "fork_capsule",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    request_body = ForkCapsuleBody,
    responses(
        (status = 201, description = "The children, each with its proxy access token", body = ForkedCapsules),
        OnHost,
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: only running or paused capsules fork", body = ErrorBody),
        (status = 429, response = crate::responses::QuotaExceeded),
    )
)]
pub async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ForkCapsuleBody>,
) -> Result<(StatusCode, Json<ForkedCapsules>)> {
    // To its end whatever the client does.
    super::detached(fork_now(state, caller, id, b)).await
}

async fn fork_now(
    state: AppState,
    caller: Caller,
    id: String,
    b: ForkCapsuleBody,
) -> Result<(StatusCode, Json<ForkedCapsules>)> {
    let count = b.count.unwrap_or(1);
    if !(1..=MAX_CHILDREN).contains(&count) {
        return Err(ApiError::InvalidRequest(format!(
            "count must be 1..={MAX_CHILDREN}"
        )));
    }
    let src = live(&state, &caller, &id).await?;
    if !matches!(src.status, CapsuleStatus::Running | CapsuleStatus::Paused) {
        return Err(ApiError::InvalidState(format!(
            "capsule {} is {}; only running or paused capsules can be forked",
            src.id, src.status
        )));
    }
    let n = i64::from(count);
    // Every child counts against the team's quotas before any is made.
    let held = crate::quotas::reserve::reserve(
        &state.db,
        &caller.team_id,
        Amounts {
            capsules: n,
            vcpus: src.vcpus * n,
            memory_mb: src.memory_mb * n,
            disk_mb: src.disk_size_mb * n,
            snapshots: 0,
        },
    )
    .await?;
    let (public, _) = state.db.capsule_access(&src.id).await?;
    let (egress, policy) = state.db.capsule_network(&src.id).await?;
    let tags = state
        .db
        .capsule_host_tags(&src.id)
        .await
        .unwrap_or_default();
    // The proxy's access tokens, drawn before anything is made.
    let tokens = (0..count)
        .map(|_| crate::proxy::new_token())
        .collect::<Result<Vec<_>>>()?;
    let mut agent = state.agent_for(&src).await?;
    let made = agent
        .fork_capsule(ForkCapsuleRequest {
            id: src.id.clone(),
            count,
        })
        .await
        .map_err(ApiError::from);
    let (made, held) = held.keep_if_ok(made).await?;
    let made = made.into_inner();
    let now = now_ms();
    let rows: Vec<CapsuleRow> = made
        .children
        .iter()
        .map(|c| CapsuleRow {
            id: c.id.clone(),
            team_id: caller.team_id.clone(),
            template: src.template.clone(),
            status: status_of(c.state),
            vcpus: c.vcpus.into(),
            memory_mb: c.memory_mib.into(),
            disk_size_mb: c.disk_mib.into(),
            timeout_sec: c.timeout_secs.into(),
            metadata: src.metadata.clone(),
            error: None,
            created_at: now,
            started_at: Some(now),
            last_active_at: Some(now),
            updated_at: now,
            host_id: src.host_id.clone(),
        })
        .collect();
    let recorded = async {
        for (row, (_, hash)) in rows.iter().zip(&tokens) {
            state.db.insert_capsule(row).await?;
            state
                .db
                .set_capsule_settings(&row.id, public, hash, egress, &policy, &tags)
                .await?;
            // An action that happened is in the audit log, or it is undone.
            state
                .db
                .audit(
                    &caller,
                    "capsule.fork",
                    ("capsule", &row.id),
                    "success",
                    &format!("forked from {}", src.id),
                )
                .await?;
        }
        Ok::<(), ApiError>(())
    }
    .await;
    if let Err(e) = recorded {
        // Never a capsule the database does not know, nor a half-recorded one: undo all.
        for row in &rows {
            let _ = agent
                .destroy_capsule(CapsuleRef { id: row.id.clone() })
                .await;
            let _ = state
                .db
                .set_capsule_status(&row.id, CapsuleStatus::Stopped, None, false)
                .await;
        }
        return Err(e);
    }
    held.release().await;
    let mut capsules = Vec::with_capacity(rows.len());
    for (row, (token, _)) in rows.iter().zip(tokens) {
        let body = Capsule::from(row);
        publish(
            &state,
            crate::events::event::capsule_event(&caller, "capsule.create", &row.id, body.clone()),
        );
        capsules.push(CreatedCapsule {
            capsule: body,
            public,
            access_token: token,
        });
    }
    tracing::info!(source = %src.id, children = rows.len(), paused_us = made.source_paused_us, "capsule forked");
    Ok((
        StatusCode::CREATED,
        Json(ForkedCapsules {
            source: src.id,
            capsules,
            source_paused_ms: made.source_paused_us as f64 / 1000.0,
        }),
    ))
}
