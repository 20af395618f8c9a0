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
use wrenn_types::CapsuleStatus;

/// A proxied request's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub capsule: String,
    pub port: u16,
    /// Reached the E2B way (its headers, or envd's port): errors answer as E2B's proxy does.
    pub e2b: bool,
}

/// Where a request goes: `Ok(None)` is the API; `Ok(Some(_))` a capsule's port, named by the
/// Host `{port}-{capsule id}.{domain}[:server port]` (any case) or by the headers
/// `X-Wrenn-Capsule` and `X-Wrenn-Port`. A request meant for a capsule that names it badly (a
/// port that is not 1..=65535 in plain digits, one header without the other, more labels) is
/// `invalid_request` from the proxy, never passed on to the API.
pub fn target(headers: &HeaderMap, domain: &str) -> Result<Option<Target>> {
    let h = |n: &str| {
        headers
            .get(n)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::InvalidRequest(format!("{n} is not visible ASCII")))
            })
            .transpose()
    };
    match (h("x-wrenn-capsule")?, h("x-wrenn-port")?) {
        (Some(c), Some(p)) => {
            return Ok(Some(Target {
                capsule: c.trim().to_ascii_lowercase(),
                port: port(p.trim())?,
                e2b: false,
            }))
        }
        (None, None) => {}
        _ => {
            return Err(ApiError::InvalidRequest(
                "X-Wrenn-Capsule and X-Wrenn-Port go together".into(),
            ))
        }
    }
    // The E2B SDK's header routing (`E2B_SANDBOX_URL`).
    if let Some((capsule, p)) = crate::e2b::envd::header_target(headers)? {
        return Ok(Some(Target {
            capsule,
            port: port(&p)?,
            e2b: true,
        }));
    }
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return Ok(None);
    };
    // Without the server's own port, if any, and a fully qualified name's last dot.
    let host = match host.rsplit_once(':') {
        Some((name, p)) if p.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => &host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let Some(label) = host
        .strip_suffix(domain.as_str())
        .and_then(|l| l.strip_suffix('.'))
    else {
        return Ok(None);
    };
    // A name under the domain without a dash is not a capsule's (the API may be served there).
    let Some((p, capsule)) = label.split_once('-') else {
        return Ok(None);
    };
    if capsule.is_empty() || capsule.contains('.') || p.contains('.') {
        return Err(ApiError::InvalidRequest(format!(
            "{} is not a capsule's host name: use {{port}}-{{capsule id}}.{domain}",
            shown(host)
        )));
    }
    let port = port(p)?;
    Ok(Some(Target {
        capsule: capsule.to_string(),
        port,
        e2b: port == crate::e2b::ENVD_PORT,
    }))
}

/// At most 64 characters of `s`, quoted (a message never echoes a long header whole).
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// A port: 1..=65535 in plain digits, no sign, no leading zero.
fn port(p: &str) -> Result<u16> {
    let plain = !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && !p.starts_with('0');
    match plain.then(|| p.parse::<u16>().ok()).flatten() {
        Some(n) => Ok(n),
        None => Err(ApiError::InvalidRequest(format!(
            "invalid port {}: a port is 1..=65535, in digits, without a leading zero",
            shown(p)
        ))),
    }
}

/// `%XX` and `+` decoded (for comparing query keys), or `None` when not valid UTF-8.
fn query_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
            (b'+', ..) => out.push(b' '),
            (c, ..) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The query parameter that carries the capsule's access token.
const TOKEN_PARAM: &str = "wrenn_token";

/// The token of `?wrenn_token=`, if any.
fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (query_decode(k).as_deref() == Some(TOKEN_PARAM)).then(|| query_decode(v))?
    })
}

/// The path and query the capsule sees: `wrenn_token` (a Wrenn credential) taken out, every
/// other parameter exactly as sent.
pub fn forwarded_path(path: &str, query: Option<&str>) -> String {
    let Some(q) = query else {
        return path.to_string();
    };
    let is_token = |kv: &str| {
        let k = kv.split_once('=').map_or(kv, |(k, _)| k);
        query_decode(k).as_deref() == Some(TOKEN_PARAM)
    };
    if !q.split('&').any(is_token) {
        return format!("{path}?{q}");
    }
    let kept: Vec<&str> = q.split('&').filter(|kv| !is_token(kv)).collect();
    match kept.join("&") {
        rest if rest.is_empty() => path.to_string(),
        rest => format!("{path}?{rest}"),
    }
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
        Ok(Some(t)) => {
            let (e2b, capsule, port) = (t.e2b, t.capsule.clone(), t.port);
            match forward(&state, t, req).await {
                Ok(r) => r,
                Err(e) if e2b => crate::e2b::envd::answer(e, &capsule, port),
                Err(e) => e.into_response(),
            }
        }
        Ok(None) => next.run(req).await,
        Err(e) => e.into_response(),
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
    let id = crate::capsules::lookup::capsule_id(&t.capsule)?;
    let c = state.db.capsule_any(&id).await?;
    // The token may also come as `?wrenn_token=` (browsers cannot set headers on navigation).
    let query_token = query_token(req.uri().query());
    // Never tell a stranger whether the capsule exists.
    let not_found = || ApiError::NotFound(format!("capsule {id} not found"));
    if c.status == CapsuleStatus::Stopped {
        return Err(not_found());
    }
    let by_wrenn = allowed(state, &c, query_token.as_deref(), req.headers()).await?;
    // Else the E2B SDK's `X-Access-Token`: envd's own token, which only its host knows.
    let envd_token = req
        .headers()
        .get("x-access-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !by_wrenn && envd_token.is_none() {
        return Err(not_found());
    }
    if c.status != CapsuleStatus::Running {
        if !by_wrenn {
            return Err(not_found());
        }
        return Err(ApiError::InvalidState(format!(
            "capsule {id} is {}, not running",
            c.status
        )));
    }
    let capsule = state
        .agent_for(&c)
        .await?
        .get_capsule(CapsuleRef { id: id.clone() })
        .await?
        .into_inner();
    let given = envd_token.as_deref().unwrap_or_default();
    if !by_wrenn && !crate::e2b::same_token(&capsule.envd_access_token, given) {
        return Err(not_found());
    }
    if t.port == crate::e2b::ENVD_PORT && crate::e2b::envd::is_internal(req.uri().path()) {
        return Err(ApiError::Forbidden(format!(
            "{} is envd's own path, not served through the proxy",
            req.uri().path()
        )));
    }
    let address = capsule.address;
    let _ = state.db.touch_capsule(&id).await;
    let upstream = format!("{address}:{}", t.port);
    // Without `wrenn_token`: a Wrenn credential never reaches the capsule's code.
    let path = forwarded_path(req.uri().path(), req.uri().query());
    let what = format!("port {} of capsule {id}", t.port);
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(protocol) = upgrade {
        return tunnel(upstream, &what, path, protocol, req).await;
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
        .map_err(|e| {
            // The capsule's address is the host's business: logged, not answered.
            tracing::info!(%upstream, error = %e, "proxied request failed");
            ApiError::Agent(format!(
                "{what}: {}",
                wrenn_rpc::error::chain(&e.without_url())
            ))
        })?;
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
    what: &str,
    path: String,
    protocol: String,
    mut req: Request,
) -> Result<Response> {
    let failed = |doing: &str, e: &dyn std::fmt::Display| {
        tracing::info!(%upstream, error = %e, "proxied upgrade failed: {doing}");
        ApiError::Agent(format!("{what}: {doing}: {e}"))
    };
    let mut conn = tokio::net::TcpStream::connect(&upstream)
        .await
        .map_err(|e| failed("connecting", &e))?;
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
        .map_err(|e| failed("writing", &e))?;
    // The answer's head (bounded).
    let mut buf = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 16 * 1024 || conn.read(&mut byte).await.unwrap_or(0) == 0 {
            return Err(ApiError::Agent(format!(
                "{what} did not answer the upgrade"
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

    fn routed(pairs: &[(&str, &str)]) -> Result<Option<Target>> {
        target(&headers(pairs), "wrenn.localhost")
    }

    #[test]
    fn targets_by_host_and_by_headers() {
        let id = "cl-0123456789abcdefghijklmno";
        let t = Target {
            capsule: id.into(),
            port: 8080,
            e2b: false,
        };
        for host in [
            format!("8080-{id}.wrenn.localhost:8000"),
            format!("8080-{id}.wrenn.localhost"),
            format!("8080-{id}.wrenn.localhost."),
            // Host names are case-insensitive.
            format!("8080-{}.WRENN.LocalHost:8000", id.to_uppercase()),
        ] {
            assert_eq!(
                routed(&[("host", &host)]).unwrap(),
                Some(t.clone()),
                "{host}"
            );
        }
        assert_eq!(
            routed(&[
                ("x-wrenn-capsule", id),
                ("x-wrenn-port", "8080"),
                ("host", "127.0.0.1:8000")
            ])
            .unwrap(),
            Some(t.clone())
        );
        assert_eq!(
            target(
                &headers(&[("host", &format!("8080-{id}.wrenn.localhost"))]),
                "Wrenn.LOCALHOST"
            )
            .unwrap(),
            Some(t)
        );
        // The API's own names.
        for host in [
            "127.0.0.1:8000",
            "wrenn.localhost",
            "wrenn.localhost:8000",
            "api.wrenn.localhost",
            "8080-cl-1.evil.com",
            "[::1]:8000",
        ] {
            assert_eq!(routed(&[("host", host)]).unwrap(), None, "{host}");
        }
        assert_eq!(routed(&[]).unwrap(), None);
    }

    #[test]
    fn bad_capsule_hosts_are_refused_not_passed_to_the_api() {
        for host in [
            "99999-cl-1.wrenn.localhost",
            "65536-cl-1.wrenn.localhost",
            "0-cl-1.wrenn.localhost",
            "00-cl-1.wrenn.localhost",
            "080-cl-1.wrenn.localhost",
            "+80-cl-1.wrenn.localhost",
            "-cl-1.wrenn.localhost",
            "x-cl-1.wrenn.localhost",
            "8080-.wrenn.localhost",
            "8080-a.b.wrenn.localhost",
            "a.8080-cl-1.wrenn.localhost",
            "123456789012345678901234567890-cl-1.wrenn.localhost",
        ] {
            match routed(&[("host", host)]) {
                Err(ApiError::InvalidRequest(m)) => assert!(m.len() < 200, "{m}"),
                other => panic!("{host}: {other:?}"),
            }
        }
        assert_eq!(
            routed(&[("host", "65535-cl-1.wrenn.localhost")]).unwrap(),
            Some(Target {
                capsule: "cl-1".into(),
                port: 65535,
                e2b: false,
            })
        );
        for pairs in [
            &[("x-wrenn-capsule", "cl-1"), ("x-wrenn-port", "0")][..],
            &[("x-wrenn-capsule", "cl-1"), ("x-wrenn-port", "http")],
            &[("x-wrenn-capsule", "cl-1"), ("x-wrenn-port", "70000")],
            &[("x-wrenn-capsule", "cl-1")],
            &[("x-wrenn-port", "8080")],
        ] {
            assert!(
                matches!(routed(pairs), Err(ApiError::InvalidRequest(_))),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn the_token_parameter_stays_with_the_proxy() {
        let cases = [
            ("/", None, "/"),
            ("/a", Some("x=1"), "/a?x=1"),
            ("/a", Some("wrenn_token=abc"), "/a"),
            ("/a", Some("x=1&wrenn_token=abc&y=%20+2"), "/a?x=1&y=%20+2"),
            ("/a", Some("wrenn_token=abc&wrenn_token=def"), "/a"),
            (
                "/a",
                Some("wrenn%5Ftoken=abc&keep=wrenn_token"),
                "/a?keep=wrenn_token",
            ),
            (
                "/a",
                Some("wrenn_tokens=1&a&&b="),
                "/a?wrenn_tokens=1&a&&b=",
            ),
        ];
        for (path, query, want) in cases {
            assert_eq!(forwarded_path(path, query), want, "{path}?{query:?}");
        }
        assert_eq!(
            query_token(Some("x=1&wrenn_token=abc%31")).as_deref(),
            Some("abc1")
        );
        assert_eq!(query_token(Some("x=1")), None);
        assert_eq!(query_token(None), None);
    }
}
