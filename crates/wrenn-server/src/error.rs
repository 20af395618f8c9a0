//! The one error type of the control plane, and how it reaches clients: an HTTP status and
//! `{"error":{"code","message"}}`, the code chosen by variant (never by message text).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The resource is in the wrong state for the request.
    #[error("{0}")]
    InvalidState(String),
    /// The resource already exists.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// Too many requests of this kind (log-ins, password checks): try again after
    /// `retry_after_secs` (sent as `Retry-After`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// No host can take the request (capacity, or no agent).
    #[error("{0}")]
    HostUnavailable(String),
    /// The host agent failed.
    #[error("host agent: {0}")]
    Agent(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl From<wrenn_types::secret::RandomError> for ApiError {
    fn from(e: wrenn_types::secret::RandomError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

/// The `error.code` of an error answer; clients pick their exception by it. With its status:
/// `invalid_request` 400, `unauthorized` 401, `forbidden` 403, `not_found` 404,
/// `invalid_state` and `conflict` 409, `too_large` 413, `rate_limited` 429 (with
/// `Retry-After`), `internal_error` 500, `agent_error`
/// 502, `host_unavailable` 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
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
    /// 429: too many requests of this kind; the `Retry-After` header says when to try again.
    RateLimited,
    /// 503: no host can take the request (capacity, or no agent).
    HostUnavailable,
    /// 502: the host agent failed.
    AgentError,
    /// 500: the server failed.
    InternalError,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::InvalidState,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::HostUnavailable,
        ErrorCode::AgentError,
        ErrorCode::InternalError,
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
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::HostUnavailable => "host_unavailable",
            ErrorCode::AgentError => "agent_error",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidState | ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::HostUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::AgentError => StatusCode::BAD_GATEWAY,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Every error answer: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "capsule cl-0123456789abcdefghijklmno not found"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people; never parse it (the code says what happened).
    pub message: String,
}

impl ApiError {
    /// The error's code, by variant.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::InvalidState(_) => ErrorCode::InvalidState,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::TooLarge(_) => ErrorCode::TooLarge,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::HostUnavailable(_) => ErrorCode::HostUnavailable,
            ApiError::Agent(_) => ErrorCode::AgentError,
            ApiError::Db(_) | ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        let code = self.code();
        (code.status(), code.as_str())
    }

    /// The answer's body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        }
    }
}

/// Errors of the host agent, by gRPC code.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> ApiError {
        let m = s.message().to_string();
        match s.code() {
            tonic::Code::NotFound => ApiError::NotFound(m),
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ApiError::InvalidRequest(m),
            tonic::Code::FailedPrecondition => ApiError::InvalidState(m),
            tonic::Code::AlreadyExists => ApiError::Conflict(m),
            tonic::Code::PermissionDenied => ApiError::Forbidden(m),
            tonic::Code::ResourceExhausted | tonic::Code::Unavailable => {
                ApiError::HostUnavailable(m)
            }
            _ => ApiError::Agent(m),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> ApiError {
        use axum::extract::rejection::JsonRejection as J;
        match r {
            J::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge("the request body is too large".into())
            }
            other => ApiError::InvalidRequest(other.body_text()),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::InvalidRequest(r.body_text())
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> ApiError {
        ApiError::InvalidRequest(format!("bad multipart body: {}", e.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(%code, error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn error_body_is_the_documented_shape() {
        let e = ApiError::InvalidState("capsule cl-x is paused, not running".into());
        assert_eq!(e.status_and_code(), (StatusCode::CONFLICT, "invalid_state"));
        let text = serde_json::to_string(&e.body()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "error": { "code": "invalid_state", "message": "capsule cl-x is paused, not running" } })
        );
    }
}
