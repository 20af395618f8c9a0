//! envd through the port proxy, as the E2B SDK reaches it: header routing
//! (`E2b-Sandbox-Id` + `E2b-Sandbox-Port`, for `E2B_SANDBOX_URL`), its access token
//! (`X-Access-Token`), and the proxy's answers the SDK reads: `502` with "was not found" for a
//! sandbox that is missing, foreign, stopped or paused; `502` with "port is not open" when the
//! sandbox runs but nothing answers.

use axum::{
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use crate::error::ApiError;

/// envd's paths that are the platform's, never a client's (upstream refuses them on 49983).
const INTERNAL_PATHS: &[&str] = &["/init"];

/// What E2B's headers name: `Ok(None)` without them; one without the other is refused.
pub fn header_target(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let h = |n: &str| {
        headers
            .get(n)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_string())
                    .map_err(|_| ApiError::InvalidRequest(format!("{n} is not visible ASCII")))
            })
            .transpose()
    };
    match (h("e2b-sandbox-id")?, h("e2b-sandbox-port")?) {
        (Some(id), Some(port)) => Ok(Some((id.to_ascii_lowercase(), port))),
        (None, None) => Ok(None),
        _ => Err(ApiError::InvalidRequest(
            "E2b-Sandbox-Id and E2b-Sandbox-Port go together".into(),
        )),
    }
}

/// Whether a request for envd's `path` is one of the platform's own.
pub fn is_internal(path: &str) -> bool {
    INTERNAL_PATHS
        .iter()
        .any(|p| path.trim_end_matches('/') == *p)
}

#[derive(Serialize)]
struct NotFound<'a> {
    #[serde(rename = "sandboxId")]
    sandbox_id: &'a str,
    message: &'static str,
    code: u16,
}

#[derive(Serialize)]
struct PortClosed {
    message: &'static str,
    port: u16,
    code: u16,
}

/// The proxy's answer to an E2B client for error `e` on `port` of sandbox `id`.
pub fn answer(e: ApiError, id: &str, port: u16) -> Response {
    match e {
        // Missing, foreign (indistinguishable), stopped, paused or not running yet.
        ApiError::NotFound(_) | ApiError::InvalidState(_) => (
            StatusCode::BAD_GATEWAY,
            Json(NotFound {
                sandbox_id: id,
                message: "The sandbox was not found",
                code: 502,
            }),
        )
            .into_response(),
        ApiError::Agent(_) => (
            StatusCode::BAD_GATEWAY,
            Json(PortClosed {
                message: "The sandbox is running but port is not open",
                port,
                code: 502,
            }),
        )
            .into_response(),
        other => {
            let (status, _) = other.status_and_code();
            super::errors::answer(status, other.public_message())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn e2b_headers_route_together_or_not_at_all() {
        let mut h = HeaderMap::new();
        assert_eq!(header_target(&h).unwrap(), None);
        h.insert("e2b-sandbox-id", HeaderValue::from_static(" CL-ABC "));
        assert!(matches!(
            header_target(&h),
            Err(ApiError::InvalidRequest(_))
        ));
        h.insert("e2b-sandbox-port", HeaderValue::from_static("49983"));
        assert_eq!(
            header_target(&h).unwrap(),
            Some(("cl-abc".into(), "49983".into()))
        );
        h.remove("e2b-sandbox-id");
        assert!(header_target(&h).is_err());
    }

    #[test]
    fn internal_paths_are_the_platforms() {
        assert!(is_internal("/init") && is_internal("/init/"));
        assert!(!is_internal("/files") && !is_internal("/health") && !is_internal("/initx"));
    }
}
