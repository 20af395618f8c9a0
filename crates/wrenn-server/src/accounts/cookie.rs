//! The web console's session cookie and its CSRF token.
//!
//! The console signs in with `POST /v1/auth/session`: the user token goes into the cookie
//! [`SESSION_COOKIE`] (`HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` when the request
//! came over TLS), so no script can read it and a reload keeps the user signed in. A cookie
//! is an ambient credential, so every request that authenticates by it and changes anything
//! (any method but `GET`/`HEAD`/`OPTIONS`, and every WebSocket upgrade) must also carry the
//! session's CSRF token: the header [`CSRF_HEADER`], or for a WebSocket the subprotocol
//! `wrenn.csrf.<token>`. The token is an HMAC of the user token under the server's signing
//! key, handed out only in the JSON answers of `/v1/auth/session`, which another origin
//! cannot read (no CORS). A request with `X-API-Key` or `Authorization` never looks at the
//! cookie, so the SDK and CLI see no change.

use axum::http::{header, HeaderMap, HeaderValue, Method};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The cookie that holds the console's user token.
pub const SESSION_COOKIE: &str = "wrenn_session";

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The WebSocket subprotocol that carries the CSRF token: `wrenn.csrf.<token>`.
pub const WS_CSRF_PREFIX: &str = "wrenn.csrf.";

fn mac(key: &[u8], token: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    m.update(b"wrenn-csrf\0");
    m.update(token.as_bytes());
    m
}

/// The CSRF token of the session whose user token is `token`.
pub fn csrf_token(key: &[u8], token: &str) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, token).finalize().into_bytes())
}

/// Whether `offered` is `token`'s CSRF token (compared in constant time).
pub fn csrf_matches(key: &[u8], token: &str, offered: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(offered.trim()) {
        Ok(raw) => mac(key, token).verify_slice(&raw).is_ok(),
        Err(_) => false,
    }
}

/// The user token in the request's session cookie, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.trim().trim_matches('"'))
        })
        .filter(|v| !v.is_empty())
}

/// Whether a request authenticated by the cookie must carry the CSRF token: it may change
/// something (not `GET`/`HEAD`/`OPTIONS`), or it opens a WebSocket (a terminal can do
/// anything).
pub fn needs_csrf(method: &Method, headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    upgrade || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The CSRF token a request offers: the header, else a WebSocket subprotocol.
pub fn offered_csrf(headers: &HeaderMap) -> Option<&str> {
    let h = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    h.or_else(|| {
        headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)?
            .to_str()
            .ok()?
            .split(',')
            .find_map(|p| p.trim().strip_prefix(WS_CSRF_PREFIX))
    })
}

/// Whether the request reached us over TLS (directly, or through a proxy that says so).
pub fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// The `Set-Cookie` that stores `token` for `max_age_secs` (0 clears it).
pub fn set_cookie(token: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age_secs.max(0)
    );
    HeaderValue::from_str(&v)
        .unwrap_or_else(|_| HeaderValue::from_static("wrenn_session=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_token_is_bound_to_the_session_and_the_key() {
        let t = csrf_token(b"key-1", "tok.a.b");
        assert!(csrf_matches(b"key-1", "tok.a.b", &t));
        assert!(!csrf_matches(b"key-1", "tok.a.c", &t));
        assert!(!csrf_matches(b"key-2", "tok.a.b", &t));
        assert!(!csrf_matches(b"key-1", "tok.a.b", ""));
        assert!(!csrf_matches(b"key-1", "tok.a.b", "not base64 !"));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; wrenn_session=eyJ.x.y; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&h), Some("eyJ.x.y"));
        h.insert(header::COOKIE, "wrenn_session=".parse().unwrap());
        assert_eq!(session_cookie(&h), None);
        let c = set_cookie("eyJ.x.y", 60, true);
        let c = c.to_str().unwrap();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=60",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!set_cookie("t", 0, false)
            .to_str()
            .unwrap()
            .contains("Secure"));
    }

    #[test]
    fn only_reads_skip_the_csrf_check() {
        let h = HeaderMap::new();
        assert!(!needs_csrf(&Method::GET, &h));
        assert!(needs_csrf(&Method::POST, &h));
        assert!(needs_csrf(&Method::DELETE, &h));
        let mut ws = HeaderMap::new();
        ws.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(needs_csrf(&Method::GET, &ws));
        ws.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "wrenn, wrenn.csrf.abc, wrenn.team.t".parse().unwrap(),
        );
        assert_eq!(offered_csrf(&ws), Some("abc"));
    }
}
