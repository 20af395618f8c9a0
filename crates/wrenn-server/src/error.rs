//! The one error type of the control plane, and how it reaches clients: an HTTP status and
//! `{"error":{"code","message"}}`, the code chosen by variant (never by message text).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

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
    /// A team's quota would be exceeded (the message names the quota, its limit and use).
    #[error("{0}")]
    QuotaExceeded(String),
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
    /// A disk is full: the capsule's, the host's (capsule files) or the server's (its database).
    #[error("{0}")]
    InsufficientStorage(String),
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

pub use wrenn_types::api::errors::{ErrorBody, ErrorCode, ErrorDetail};

/// The HTTP status that goes with an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidState | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::QuotaExceeded | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::HostUnavailable | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::AgentError => StatusCode::BAD_GATEWAY,
        ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
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
            ApiError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::HostUnavailable(_) => ErrorCode::HostUnavailable,
            ApiError::InsufficientStorage(_) => ErrorCode::InsufficientStorage,
            ApiError::Agent(_) => ErrorCode::AgentError,
            ApiError::Db(e) if db_unreachable(e) => ErrorCode::Unavailable,
            ApiError::Db(e) if db_full(e) => ErrorCode::InsufficientStorage,
            ApiError::Db(_) | ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        let code = self.code();
        (status_of(code), code.as_str())
    }

    /// The answer's body. Its message never carries an internal address ([`redact`]).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.public_message(),
            },
        }
    }

    /// The message as clients may see it: [`redact`]ed.
    pub fn public_message(&self) -> String {
        redact(&self.to_string()).into_owned()
    }
}

/// What stands for an address taken out of a message.
const REDACTED: &str = "[internal address]";

/// `msg` without addresses: URLs (`scheme://…`) and IPv4 addresses (with a port, if any) become
/// `[internal address]`. Error messages from the host agent can name a capsule's slot
/// (`10.200.x.x`), its guest (`169.254.0.21`) or envd's URL; those are the host's business
/// and are logged, never shown.
pub fn redact(msg: &str) -> std::borrow::Cow<'_, str> {
    let b = msg.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let end = url_at(b, i).or_else(|| ipv4_at(b, i));
        match end {
            Some(end) => {
                out.push_str(&msg[copied..i]);
                out.push_str(REDACTED);
                copied = end;
                i = end;
            }
            None => i += msg[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(msg);
    }
    out.push_str(&msg[copied..]);
    std::borrow::Cow::Owned(out)
}

/// The end of a URL starting at `i` (`letters://` up to a space, quote or bracket).
fn url_at(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && b[i - 1].is_ascii_alphanumeric() {
        return None;
    }
    let scheme = b[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    if scheme == 0 || !b[i + scheme..].starts_with(b"://") {
        return None;
    }
    let rest = i + scheme + 3;
    let len = b[rest..]
        .iter()
        .take_while(|c| !c.is_ascii_whitespace() && !matches!(c, b'"' | b'\'' | b')' | b'>' | b']'))
        .count();
    Some(rest + len)
}

/// The end of an IPv4 address (and `:port`) starting at `i`, not inside a longer token.
fn ipv4_at(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.') {
        return None;
    }
    let mut j = i;
    for part in 0..4 {
        let digits = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 3 {
            return None;
        }
        let n: u32 = std::str::from_utf8(&b[j..j + digits]).ok()?.parse().ok()?;
        if n > 255 {
            return None;
        }
        j += digits;
        if part < 3 {
            if b.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
    }
    if b.get(j).is_some_and(|c| {
        c.is_ascii_alphanumeric() || *c == b'.' && b.get(j + 1).is_some_and(u8::is_ascii_digit)
    }) {
        return None; // part of a longer token (a version, a name)
    }
    if b.get(j) == Some(&b':') {
        let port = b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        j += 1 + port;
    }
    Some(j)
}

/// The database cannot be reached now (down, restarting, or every connection busy past the
/// pool's wait): worth a retry, unlike a failed query.
fn db_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL's class 57 (operator intervention: shutting down, starting up) and
        // class 08 (connection exceptions).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// The database's disk is full (SQLite's `SQLITE_FULL`, PostgreSQL's `53100 disk_full`).
fn db_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c == "13" || c == "53100"),
        _ => false,
    }
}

/// Errors of the host agent, by gRPC code, and by its reason where the code cannot tell
/// (`wrenn_rpc::reason`): a capsule's full disk is `insufficient_storage`, a capsule
/// whose envd fails is `agent_error`; only an unreachable agent or a host without capacity is
/// `host_unavailable`.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> ApiError {
        use wrenn_rpc::reason;
        let m = s.message().to_string();
        let why = s.metadata().get(reason::KEY).and_then(|v| v.to_str().ok());
        match why {
            Some(reason::INSUFFICIENT_STORAGE) => return ApiError::InsufficientStorage(m),
            Some(reason::TOO_LARGE) => return ApiError::TooLarge(m),
            Some(reason::CAPSULE) => return ApiError::Agent(m),
            _ => {}
        }
        // The call never got an answer (the connection broke: the agent died mid-call):
        // the host is unavailable, not failing.
        if s.code() == tonic::Code::Unknown && std::error::Error::source(&s).is_some() {
            return ApiError::HostUnavailable(format!("the host agent is unreachable: {m}"));
        }
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
        let body = self.body();
        if status.is_server_error() || body.error.message != self.to_string() {
            // The whole message, addresses included, is for the log only.
            tracing::warn!(%code, error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(body)).into_response();
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

/// A middleware that gives every error answer the documented shape: an answer with an error
/// status whose body is not JSON (axum's own rejections: a multipart body without a boundary,
/// a path segment that is not UTF-8, a refused WebSocket handshake, …) becomes
/// `{"error":{"code","message"}}`, its text the message. `405` keeps its empty body and `Allow`.
///
/// An error answer to an HTTP/1 request that came with a body also says `Connection: close`:
/// the handler may have refused it before reading the body (bad credentials, no such capsule),
/// and a connection with an unread body cannot be reused, so the client must not try.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let close = req.version() <= axum::http::Version::HTTP_11 && has_body(req.headers());
    let mut resp = shaped(next.run(req).await).await;
    let status = resp.status();
    if close && (status.is_client_error() || status.is_server_error()) {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Whether a request announces a body (`Content-Length` above 0, or chunked).
fn has_body(headers: &axum::http::HeaderMap) -> bool {
    let length = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(axum::http::header::TRANSFER_ENCODING)
}

/// An error answer in the documented shape (see [`json_errors`]).
async fn shaped(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || status == StatusCode::METHOD_NOT_ALLOWED
    {
        return resp;
    }
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let err = match status {
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized(message),
        StatusCode::FORBIDDEN => ApiError::Forbidden(message),
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        StatusCode::CONFLICT => ApiError::Conflict(message),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(message),
        StatusCode::BAD_GATEWAY => ApiError::Agent(message),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::HostUnavailable(message),
        StatusCode::INSUFFICIENT_STORAGE => ApiError::InsufficientStorage(message),
        s if s.is_client_error() => ApiError::InvalidRequest(message),
        _ => ApiError::Internal(message),
    };
    let mut out = err.into_response();
    // Headers that still mean something (`Retry-After`, `WWW-Authenticate`, …).
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
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
    fn internal_addresses_never_reach_a_message() {
        let cases = [
            (
                "POST /files: error sending request for url (http://169.254.0.21:49983/files?path=%2Ftmp): connection refused",
                "POST /files: error sending request for url ([internal address]): connection refused",
            ),
            (
                "port 8080 of capsule cl-x: connecting to 10.200.0.7:8080: refused",
                "port 8080 of capsule cl-x: connecting to [internal address]: refused",
            ),
            ("guest 169.254.0.21 died", "guest [internal address] died"),
            ("at 10.200.3.4.", "at [internal address]."),
            ("ws://10.0.0.1/x and https://a.b/c", "[internal address] and [internal address]"),
        ];
        for (raw, want) in cases {
            assert_eq!(redact(raw), want, "{raw}");
        }
        // Not addresses: versions, names, numbers, paths.
        for kept in [
            "capsule cl-0123456789abcdefghijklmno not found",
            "python 3.11.2 is not 1.2.3",
            "file '/home/user/v1.2.3.4.5' does not exist",
            "a1.2.3.4 and 256.1.1.1 and 1.2.3",
            "mailto:x — no scheme slashes; é ü",
            "",
        ] {
            assert!(
                matches!(redact(kept), std::borrow::Cow::Borrowed(_)),
                "{kept} -> {}",
                redact(kept)
            );
        }
        // In an answer's body, too.
        let e = ApiError::Agent("envd: GET /files: http://169.254.0.21:49983/files".into());
        assert!(!e.body().error.message.contains("169.254"));
        assert!(e.to_string().contains("169.254"), "the log keeps it");
    }

    #[test]
    fn agent_errors_map_by_code_and_reason() {
        use wrenn_rpc::reason;
        let with = |code: tonic::Code, why: Option<&'static str>| {
            let mut s = tonic::Status::new(code, "m");
            if let Some(w) = why {
                s.metadata_mut()
                    .insert(reason::KEY, tonic::metadata::MetadataValue::from_static(w));
            }
            ApiError::from(s).code()
        };
        use tonic::Code as C;
        assert_eq!(
            with(C::ResourceExhausted, Some(reason::INSUFFICIENT_STORAGE)),
            ErrorCode::InsufficientStorage
        );
        assert_eq!(
            with(C::ResourceExhausted, Some(reason::TOO_LARGE)),
            ErrorCode::TooLarge
        );
        assert_eq!(
            with(C::Unavailable, Some(reason::CAPSULE)),
            ErrorCode::AgentError
        );
        // Without a reason: the host (capacity) or the agent (unreachable).
        assert_eq!(with(C::ResourceExhausted, None), ErrorCode::HostUnavailable);
        assert_eq!(with(C::Unavailable, None), ErrorCode::HostUnavailable);
        assert_eq!(with(C::InvalidArgument, None), ErrorCode::InvalidRequest);
        assert_eq!(with(C::Internal, None), ErrorCode::AgentError);
        assert_eq!(
            status_of(ErrorCode::InsufficientStorage),
            StatusCode::INSUFFICIENT_STORAGE
        );
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
