//! `/v1/capsules/{id}/network`: a capsule's egress (on/off, allow and deny lists), read and
//! changed while it runs or is paused.
//!
//! Entries are CIDRs (`10.0.0.0/8`, `203.0.113.7`) or domain names (`example.com` matches
//! itself and its subdomains). Precedence: egress off allows nothing; deny beats allow; a
//! non-empty allow list denies everything it does not name; private, link-local, CGNAT and
//! loopback ranges stay denied unless the host's operator allowed them, whatever the lists
//! say. Domain names are enforced through the capsule's resolver: the addresses it answers
//! for an allowed name are reachable for the answer's TTL; a denied name is refused.

use axum::{
    extract::{Path, State},
    Json,
};
use wrenn_proto::agent::v1::{EgressPolicy as PbEgressPolicy, SetCapsuleNetworkRequest};
use wrenn_types::egress::EgressPolicy;

use crate::extract::JsonBody;
use crate::{
    capsules::lookup::live,
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    responses::{Authed, CheckedOnHost, NoCapsule},
    state::AppState,
};
pub use wrenn_types::api::network::{CapsuleNetwork, NetworkPatch};
use wrenn_types::CapsuleStatus;

/// Validates and normalizes lists from a request (`400 invalid_request` naming the entry).
pub fn policy(allow: &[String], deny: &[String]) -> Result<EgressPolicy> {
    EgressPolicy::new(allow, deny).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

/// The policy as the agent takes it.
pub fn to_pb(p: &EgressPolicy) -> PbEgressPolicy {
    PbEgressPolicy {
        allow: p.allow.clone(),
        deny: p.deny.clone(),
    }
}

/// Get a capsule's network
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}/network",
    operation_id = "get_capsule_network",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    responses(
        (status = 200, description = "Its egress", body = CapsuleNetwork),
        Authed, NoCapsule,
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CapsuleNetwork>> {
    let c = live(&state, &caller, &id).await?;
    let (egress, p) = state.db.capsule_network(&c.id).await?;
    Ok(Json(CapsuleNetwork {
        egress,
        allow: p.allow,
        deny: p.deny,
    }))
}

/// Change a capsule's network
///
/// Takes effect at once for new connections of a running or paused capsule (and after a
/// resume or a host restart). Entries are CIDRs or domain names; deny beats allow; a
/// non-empty allow list denies the rest; private ranges stay denied unless the host's
/// operator allowed them.
#[utoipa::path(
    patch,
    path = "/v1/capsules/{id}/network",
    operation_id = "set_capsule_network",
    tag = "capsules",
    params(crate::responses::CapsulePath),
    request_body = NetworkPatch,
    responses(
        (status = 200, description = "Its egress now", body = CapsuleNetwork),
        CheckedOnHost, NoCapsule,
        (status = 409, description = "`invalid_state`: not running or paused", body = ErrorBody),
    )
)]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<NetworkPatch>,
) -> Result<Json<CapsuleNetwork>> {
    let c = live(&state, &caller, &id).await?;
    let (old_egress, old) = state.db.capsule_network(&c.id).await?;
    let new = policy(
        b.allow.as_deref().unwrap_or(&old.allow),
        b.deny.as_deref().unwrap_or(&old.deny),
    )?;
    let egress = b.egress.unwrap_or(old_egress);
    if !matches!(c.status, CapsuleStatus::Running | CapsuleStatus::Paused) {
        return Err(ApiError::InvalidState(format!(
            "capsule {} is {}; only a running or paused capsule's network can change",
            c.id, c.status
        )));
    }
    let mut agent = state.agent_for(&c).await?;
    agent
        .set_capsule_network(SetCapsuleNetworkRequest {
            capsule_id: c.id.clone(),
            egress,
            egress_policy: Some(to_pb(&new)),
        })
        .await?;
    let detail = format!(
        "egress={egress} allow={} deny={}",
        new.allow.join(","),
        new.deny.join(",")
    );
    let recorded = async {
        state.db.set_capsule_network(&c.id, egress, &new).await?;
        state
            .db
            .audit(
                &caller,
                "capsule.network",
                ("capsule", &c.id),
                "success",
                &detail,
            )
            .await
    }
    .await;
    if let Err(e) = recorded {
        // What the database and the audit log do not say did not happen: put the old back.
        let _ = state.db.set_capsule_network(&c.id, old_egress, &old).await;
        let _ = agent
            .set_capsule_network(SetCapsuleNetworkRequest {
                capsule_id: c.id.clone(),
                egress: old_egress,
                egress_policy: Some(to_pb(&old)),
            })
            .await;
        return Err(e);
    }
    Ok(Json(CapsuleNetwork {
        egress,
        allow: new.allow,
        deny: new.deny,
    }))
}
