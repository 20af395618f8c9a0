//! E2B's error answer: `{"code": <HTTP status>, "message": "…"}`. The SDK parses this body for
//! every documented error status before it looks at the status, so every error of an E2B
//! route has it, axum's own rejections and the credentials check included.

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

/// The body of an E2B error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct E2bError {
    pub code: u16,
    pub message: String,
}

/// The largest error body read back to reshape it.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Whether the request is a create (`POST /sandboxes`, `POST /v2/sandboxes`).
fn is_create(method: &Method, path: &str) -> bool {
    method == Method::POST && matches!(path.trim_end_matches('/'), "/sandboxes" | "/v2/sandboxes")
}

/// A middleware that gives every error answer E2B's shape. A failed create also says
/// `Should-Retry: false`: the SDK retries a `POST` that answered 502, 503 or 504, and a create
/// that failed late (the host answered after the client gave up, or the undo failed) may
/// have made a capsule a retry would duplicate.
pub async fn shape(req: Request, next: Next) -> Response {
    let create = is_create(req.method(), req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let message = message_of(&bytes).unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    });
    let mut out = answer(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if create && status.is_server_error() {
        out.headers_mut()
            .insert("should-retry", HeaderValue::from_static("false"));
    }
    out
}

/// E2B's error answer with `status` and `message`.
pub fn answer(status: StatusCode, message: String) -> Response {
    let body = E2bError {
        code: status.as_u16(),
        message,
    };
    (status, Json(body)).into_response()
}

/// The message of an error body: Wrenn's `{"error":{"message"}}`, E2B's `{"message"}`, or the
/// text itself.
fn message_of(bytes: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let m = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str());
        if let Some(m) = m {
            return Some(m.to_string());
        }
    }
    let text = String::from_utf8_lossy(bytes).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// An empty response body (for handlers that answer with a status alone).
pub fn empty(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap_or_else(|_| status.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_any_error_body() {
        let wrenn = br#"{"error":{"code":"not_found","message":"capsule cl-1 not found"}}"#;
        assert_eq!(message_of(wrenn).as_deref(), Some("capsule cl-1 not found"));
        assert_eq!(
            message_of(br#"{"code":400,"message":"bad"}"#).as_deref(),
            Some("bad")
        );
        assert_eq!(
            message_of(b" missing boundary ").as_deref(),
            Some("missing boundary")
        );
        assert_eq!(message_of(b""), None);
        assert_eq!(
            message_of(br#"{"other":1}"#).as_deref(),
            Some(r#"{"other":1}"#)
        );
    }

    #[test]
    fn only_creates_are_creates() {
        assert!(is_create(&Method::POST, "/sandboxes"));
        assert!(is_create(&Method::POST, "/v2/sandboxes/"));
        assert!(!is_create(&Method::GET, "/v2/sandboxes"));
        assert!(!is_create(&Method::POST, "/v2/sandboxes/cl-1/connect"));
    }
}
