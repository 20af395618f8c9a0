//! The body of every error answer, and `/health`.

use serde::{Deserialize, Serialize};

/// The `error.code` of an error answer; clients pick their exception by it. With its status:
/// `invalid_request` 400, `unauthorized` 401, `forbidden` 403, `not_found` 404,
/// `invalid_state` and `conflict` 409, `too_large` 413, `quota_exceeded` and `rate_limited`
/// 429 (the latter with `Retry-After`), `internal_error` 500, `agent_error` 502,
/// `host_unavailable` and `unavailable` 503,
/// `insufficient_storage` 507.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed or invalid request.
    InvalidRequest,
    /// 401: missing or invalid credentials.
    Unauthorized,
    /// 403: the caller's role (or kind of credential) does not allow it.
    Forbidden,
    /// 404: no such resource within the caller's reach, or no such route.
    NotFound,
    /// 409: the resource is in the wrong state (e.g. the capsule is not running).
    InvalidState,
    /// 409: the resource already exists.
    Conflict,
    /// 413: the request body is too large.
    TooLarge,
    /// 429: the team's quota (capsules, vCPUs, memory, disk or snapshots) would be exceeded.
    QuotaExceeded,
    /// 429: too many requests of this kind; the `Retry-After` header says when to try again.
    RateLimited,
    /// 503: no host can take the request (capacity, or no agent).
    HostUnavailable,
    /// 502: the host agent failed, or the capsule did not answer it.
    AgentError,
    /// 500: the server failed.
    InternalError,
    /// 503: the server's database cannot be reached right now; retry.
    Unavailable,
    /// 507: no disk space left for the request (the host's or the server's disk is full).
    InsufficientStorage,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::InvalidState,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::QuotaExceeded,
        ErrorCode::RateLimited,
        ErrorCode::HostUnavailable,
        ErrorCode::InsufficientStorage,
        ErrorCode::AgentError,
        ErrorCode::InternalError,
        ErrorCode::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::HostUnavailable => "host_unavailable",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::AgentError => "agent_error",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// Every error answer: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"error": {"code": "not_found", "message": "capsule cl-0123456789abcdefghijklmno not found"}})))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people; never parse it (the code says what happened).
    pub message: String,
}

/// The server is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    #[cfg_attr(feature = "openapi", schema(example = "ok"))]
    pub status: String,
    /// The server's version.
    #[cfg_attr(feature = "openapi", schema(example = "0.1.0"))]
    pub version: String,
}
