//! The documented error answers (`#/components/responses/…`), each
//! `{"error":{"code","message"}}`: the handlers' `#[utoipa::path]` blocks name them, and
//! [`crate::api_docs`] registers them.

use utoipa::ToResponse;

use crate::error::ErrorBody;

// Reusable error answers (`#/components/responses/…`), each `{"error":{"code","message"}}`.

/// `invalid_request`: malformed JSON, an unknown field, or a value out of range.
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// `unauthorized`: credentials are missing or invalid.
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// `internal_error`: the server failed (e.g. its database).
#[derive(ToResponse)]
pub struct Internal(pub ErrorBody);

/// `agent_error`: the host agent failed.
#[derive(ToResponse)]
pub struct AgentFailed(pub ErrorBody);

/// `host_unavailable`: no host can take the request (capacity, or the agent is unreachable);
/// `unavailable`: the server's database cannot be reached right now (retry).
#[derive(ToResponse)]
pub struct HostUnavailable(pub ErrorBody);

/// `rate_limited`: too many requests of this kind (failed log-ins, password checks); the
/// `Retry-After` header says how many seconds to wait.
#[derive(ToResponse)]
pub struct RateLimited(pub ErrorBody);

/// `insufficient_storage`: a disk is full (the capsule's, the host's for capsule files, or the
/// server's for its database).
#[derive(ToResponse)]
pub struct InsufficientStorage(pub ErrorBody);

/// `quota_exceeded`: the team's quota would be exceeded (the message names the quota, its
/// limit and the team's use).
#[derive(ToResponse)]
pub struct QuotaExceeded(pub ErrorBody);
