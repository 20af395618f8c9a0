//! The port proxy: HTTP and WebSocket requests to a port inside a capsule, chosen by the Host
//! name `{port}-{capsule id}.{domain}` or by the headers `X-Wrenn-Capsule` and `X-Wrenn-Port`.
//! The caller needs the capsule's team's API key or the capsule's own access token
//! (`X-Wrenn-Access-Token`), unless the capsule was created public.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wrenn_proto::agent::v1::CapsuleRef;

use crate::{
    db::{hash_key, CapsuleRow},
    error::{ApiError, Result},
    state::AppState,
};

/// A proxied request's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub capsule: String,
    pub port: u16,
}

/// `{port}-{capsule id}.{domain}[:server port]`, or the two headers.
pub fn target(headers: &HeaderMap, domain: &str) -> Option<Target> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let (Some(c), Some(p)) = (h("x-wrenn-capsule"), h("x-wrenn-port")) {
        return Some(Target {
            capsule: c.trim().to_string(),
            port: p.trim().parse().ok()?,
        });
    }
    let host = h("host")?;
    // Without the server's own port, if any.
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (port, capsule) = label.split_once('-')?;
    if capsule.contains('.') {
        return None;
    }
    Some(Target {
        capsule: capsule.to_string(),
        port: port.parse().ok()?,
    })
}

/// A fresh access token for a capsule's ports: the plaintext (given once) and its hash.
pub fn new_token() -> crate::Result<(String, String)> {
    let t = wrenn_types::secret::hex(16)?;
    let hash = hash_key(&t);
    Ok((t, hash))
}

/// Requests for a capsule's port go to the proxy; everything else to the API.
pub async fn route(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match target(req.headers(), &state.domain) {
        Some(t) => match forward(&state, t, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
        None => next.run(req).await,
    }
}

/// Whether the request may reach the capsule's ports.
async fn allowed(
    state: &AppState,
    c: &CapsuleRow,
    proxy_token: Option<&str>,
    headers: &HeaderMap,
) -> Result<bool> {
    let (public, token_hash) = state.db.capsule_access(&c.id).await?;
    if public {
        return Ok(true);
    }
    let given = headers
        .get("x-wrenn-access-token")
        .and_then(|v| v.to_str().ok())
        .or(proxy_token);
    if let (Some(given), Some(hash)) = (given, token_hash) {
        // Both are hashes of the same length: compare without an early exit.
        let g = hash_key(given);
        if g.len() == hash.len()
            && g.bytes()
                .zip(hash.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
        {
            return Ok(true);
        }
    }
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    if let Some(key) = key {
        if let Some(caller) = state.db.authenticate_key(key).await? {
            return Ok(caller.team_id == c.team_id);
        }
    }
    Ok(false)
}

/// Headers that belong to one hop, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "x-api-key",
    "x-wrenn-access-token",
];

/// A Wrenn API key in `Authorization`: it was for the proxy, never for the capsule's code.
fn is_wrenn_credential(name: &header::HeaderName, value: &HeaderValue) -> bool {
    name == header::AUTHORIZATION
        && value
            .to_str()
            .is_ok_and(|v| v.trim_start().starts_with("Bearer wrn_"))
}

async fn forward(state: &AppState, t: Target, mut req: Request) -> Result<Response> {
    let id = crate::capsules::capsule_id(&t.capsule)?;
    let c = state.db.capsule_any(&id).await?;
    // The token may also come as `?wrenn_token=` (browsers cannot set headers on navigation).
    let query_token = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("wrenn_token="))
            .map(str::to_string)
    });
    if c.status == "stopped" || !allowed(state, &c, query_token.as_deref(), req.headers()).await? {
        // Never tell a stranger whether the capsule exists.
        return Err(ApiError::NotFound(format!("capsule {id} not found")));
    }
    if c.status != "running" {
        return Err(ApiError::InvalidState(format!(
            "capsule {id} is {}, not running",
            c.status
        )));
    }
    let address = state
        .agent()
        .get_capsule(CapsuleRef { id: id.clone() })
        .await?
        .into_inner()
        .address;
    let _ = state.db.touch_capsule(&id).await;
    let upstream = format!("{address}:{}", t.port);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(protocol) = upgrade {
        return tunnel(upstream, path, protocol, req).await;
    }
    let mut out = state
        .http
        .request(req.method().clone(), format!("http://{upstream}{path}"));
    for (name, value) in req.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) && !is_wrenn_credential(name, value) {
            out = out.header(name, value);
        }
    }
    let body = std::mem::take(req.body_mut());
    let resp = out
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await
        .map_err(|e| ApiError::Agent(format!("port {} of capsule {id}: {e}", t.port)))?;
    let mut builder = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
    }
    builder
        .body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// A WebSocket (or other upgrade): the handshake goes to the capsule as is; once it answers
/// `101`, bytes flow both ways untouched.
async fn tunnel(
    upstream: String,
    path: String,
    protocol: String,
    mut req: Request,
) -> Result<Response> {
    let mut conn = tokio::net::TcpStream::connect(&upstream)
        .await
        .map_err(|e| ApiError::Agent(format!("connecting to {upstream}: {e}")))?;
    let mut head = format!("{} {path} HTTP/1.1\r\nHost: {upstream}\r\n", req.method());
    for (name, value) in req.headers() {
        if matches!(name.as_str(), "host" | "x-api-key" | "x-wrenn-access-token")
            || is_wrenn_credential(name, value)
        {
            continue;
        }
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())
        .await
        .map_err(|e| ApiError::Agent(format!("writing to {upstream}: {e}")))?;
    // The answer's head (bounded).
    let mut buf = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 16 * 1024 || conn.read(&mut byte).await.unwrap_or(0) == 0 {
            return Err(ApiError::Agent(format!(
                "{upstream} did not answer the upgrade"
            )));
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut builder =
        Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            if let Ok(v) = HeaderValue::from_str(v.trim()) {
                builder = builder.header(k.trim(), v);
            }
        }
    }
    if status != 101 {
        return builder
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = hyper_util::rt::TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut conn).await;
            }
            Err(e) => tracing::debug!(error = %e, %protocol, "proxied upgrade failed"),
        }
    });
    builder
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn targets_by_host_and_by_headers() {
        let id = "cl-0123456789abcdefghijklmno";
        let t = Target {
            capsule: id.into(),
            port: 8080,
        };
        let host = format!("8080-{id}.wrenn.localhost:8000");
        assert_eq!(
            target(&headers(&[("host", &host)]), "wrenn.localhost"),
            Some(t.clone())
        );
        let host = format!("8080-{id}.wrenn.localhost");
        assert_eq!(
            target(&headers(&[("host", &host)]), "wrenn.localhost"),
            Some(t.clone())
        );
        assert_eq!(
            target(
                &headers(&[
                    ("x-wrenn-capsule", id),
                    ("x-wrenn-port", "8080"),
                    ("host", "127.0.0.1:8000")
                ]),
                "wrenn.localhost"
            ),
            Some(t)
        );
        for host in [
            "127.0.0.1:8000",
            "wrenn.localhost",
            "x-cl-1.wrenn.localhost",
            "8080-cl-1.evil.com",
            "99999-cl-1.wrenn.localhost",
            "8080-a.b.wrenn.localhost",
        ] {
            assert_eq!(
                target(&headers(&[("host", host)]), "wrenn.localhost"),
                None,
                "{host}"
            );
        }
    }
}
