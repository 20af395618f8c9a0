//! The plain HTTP endpoints: `/health`, `/metrics`, `/envs`, `/init`, `/files`.

pub mod files;
pub mod init;

use std::collections::HashMap;

use axum::{
    extract::State,
    response::{IntoResponse, Response},
    Json,
};
use http::{header, HeaderValue, StatusCode, Uri};

use crate::{
    error::{EnvdError, Result},
    state::SharedEnvd,
};

/// An HTTP error as E2B's envd writes it: `{"code": <status>, "message": "..."}`.
pub fn http_error(err: &EnvdError) -> Response {
    let status = err.http_status();
    if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
        tracing::warn!(error = %err, "request failed");
    }
    let body = serde_json::json!({ "code": status.as_u16(), "message": err.to_string() });
    (status, Json(body)).into_response()
}

/// The query string as a map, decoded strictly: invalid percent-encoding or UTF-8 is a 400.
pub fn query_params(uri: &Uri) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let Some(q) = uri.query() else {
        return Ok(out);
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| -> Result<String> {
            let spaced = s.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    EnvdError::InvalidArgument(format!("query parameter {k:?} is not valid UTF-8"))
                })
        };
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

pub async fn health() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub async fn metrics(State(envd): State<SharedEnvd>) -> Response {
    Json(envd.metrics.latest()).into_response()
}

pub async fn envs(State(envd): State<SharedEnvd>) -> Response {
    Json(envd.defaults().env_vars).into_response()
}

/// Unknown paths and methods.
pub async fn not_found(uri: Uri) -> Response {
    http_error(&EnvdError::NotFound(format!("no endpoint {}", uri.path())))
}

pub fn method_not_allowed() -> Response {
    let body = serde_json::json!({ "code": 405, "message": "method not allowed" });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding_is_strict() {
        let uri: Uri = "/files?path=%2Ftmp%2Fa%20b&username=user&x"
            .parse()
            .unwrap();
        let q = query_params(&uri).unwrap();
        assert_eq!(q["path"], "/tmp/a b");
        assert_eq!(q["username"], "user");
        assert_eq!(q["x"], "");
        let bad: Uri = "/files?path=%ff%fe".parse().unwrap();
        assert!(matches!(
            query_params(&bad),
            Err(EnvdError::InvalidArgument(_))
        ));
    }
}
