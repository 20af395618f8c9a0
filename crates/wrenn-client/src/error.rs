//! The crate's one error type. Errors the server reports keep its `error.code`, `message` and
//! HTTP status; local failures get a code of their own so a caller can print every error the
//! same way (`<code>: <message>`).

/// Everything that can go wrong talking to Wrenn.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error: `{"error":{"code","message"}}` and a status >= 400.
    /// A body that is not that shape gives code `internal_error` and the body as the message.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// A fatal `error` frame on a WebSocket (the handshake itself succeeded).
    #[error("stream_error: {0}")]
    Stream(String),
    /// No API key: neither given nor in `WRENN_API_KEY`.
    #[error("no API key: pass one or set WRENN_API_KEY")]
    MissingApiKey,
    /// The API key has characters an HTTP header cannot carry.
    #[error("the API key has characters an HTTP header cannot carry")]
    InvalidApiKey,
    /// The base URL cannot be used.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The server could not be reached or the connection broke.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The WebSocket failed (connect, handshake or transport).
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// Reading or writing local data.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server's answer is not what the API promises.
    #[error("unexpected response: {0}")]
    Decode(String),
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// The server's `error.code`, or a local code: `stream_error`, `missing_api_key`,
    /// `invalid_api_key`, `invalid_url`, `connection_error`, `websocket_error`, `io_error`, `invalid_response`.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Api { code, .. } => code,
            ClientError::Stream(_) => "stream_error",
            ClientError::MissingApiKey => "missing_api_key",
            ClientError::InvalidApiKey => "invalid_api_key",
            ClientError::InvalidUrl { .. } => "invalid_url",
            ClientError::Http(_) => "connection_error",
            ClientError::WebSocket(_) => "websocket_error",
            ClientError::Io(_) => "io_error",
            ClientError::Decode(_) => "invalid_response",
        }
    }

    /// The message without the code.
    pub fn message(&self) -> String {
        match self {
            ClientError::Api { message, .. } => message.clone(),
            ClientError::Stream(m) | ClientError::Decode(m) => m.clone(),
            ClientError::Http(e) => chain(e),
            ClientError::WebSocket(e) => chain(e),
            ClientError::Io(e) => e.to_string(),
            other => other.to_string(),
        }
    }

    /// The HTTP status the server answered with, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Http(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Whether the server said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == "not_found"
    }

    /// An error answer (status >= 400) from its status and body.
    pub fn from_response(status: u16, body: &[u8]) -> ClientError {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            code: Option<String>,
            message: Option<String>,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => ClientError::Api {
                status,
                code: error
                    .code
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "internal_error".into()),
                message: error.message.unwrap_or_default(),
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                ClientError::Api {
                    status,
                    code: "internal_error".into(),
                    message: if text.is_empty() {
                        format!("HTTP {status} with an empty body")
                    } else {
                        text
                    },
                }
            }
        }
    }
}

/// An error with its causes, on one line (reqwest's own message omits them: "error sending
/// request" says nothing about a refused connection).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_error_envelope() {
        let e = ClientError::from_response(
            404,
            br#"{"error":{"code":"not_found","message":"capsule cl-x not found"}}"#,
        );
        assert_eq!(e.code(), "not_found");
        assert_eq!(e.message(), "capsule cl-x not found");
        assert_eq!(e.status(), Some(404));
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "not_found: capsule cl-x not found");
    }

    #[test]
    fn extra_fields_are_ignored() {
        let e = ClientError::from_response(
            409,
            br#"{"error":{"code":"host_has_capsules","message":"busy"},"capsule_ids":["a"]}"#,
        );
        assert_eq!(e.code(), "host_has_capsules");
    }

    #[test]
    fn a_body_that_is_not_the_envelope_is_an_internal_error() {
        let e = ClientError::from_response(502, b"Bad Gateway\n");
        assert_eq!(e.code(), "internal_error");
        assert_eq!(e.message(), "Bad Gateway");
        assert_eq!(e.status(), Some(502));
        let e = ClientError::from_response(500, b"");
        assert_eq!(e.message(), "HTTP 500 with an empty body");
        let e = ClientError::from_response(401, br#"{"error":{}}"#);
        assert_eq!(e.code(), "internal_error");
    }
}
