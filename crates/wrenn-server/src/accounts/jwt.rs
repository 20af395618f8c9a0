//! User tokens: compact JWTs signed with HMAC-SHA256 (RFC 7519 / 7515). Only `HS256` is ever
//! accepted (the header's `alg` is checked, so `none` or a key-confusion algorithm cannot
//! slip through), the signature is checked in constant time before the claims are read, and
//! expired tokens are refused.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a token is valid.
pub const LIFETIME_SECS: i64 = 24 * 3600;

/// The `iss` of every token.
const ISSUER: &str = "wrenn";

/// Longer tokens are not parsed at all.
const MAX_TOKEN_LEN: usize = 4096;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    pub iss: String,
    /// The session the token belongs to: the token is valid while the session is (log out
    /// ends it). Tokens without one are refused by the server.
    #[serde(default)]
    pub sid: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("expired token")]
    Expired,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// A token for `user_id` in session `sid`, valid from `now` (Unix seconds) for
/// [`LIFETIME_SECS`].
pub fn issue(key: &[u8], user_id: &str, sid: &str, now: i64) -> (String, Claims) {
    let claims = Claims {
        sub: user_id.into(),
        iat: now,
        exp: now + LIFETIME_SECS,
        iss: ISSUER.into(),
        sid: sid.into(),
    };
    (sign(key, &claims), claims)
}

/// `claims` as a compact HS256 JWT signed with `key`.
pub fn sign<C: Serialize>(key: &[u8], claims: &C) -> String {
    let header = Header {
        alg: "HS256".into(),
        typ: Some("JWT".into()),
    };
    let encode = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
    let signing_input = format!(
        "{}.{}",
        encode(&serde_json::to_vec(&header).unwrap_or_default()),
        encode(&serde_json::to_vec(claims).unwrap_or_default())
    );
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    let sig = encode(&m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// The claims of a token signed with `key` (HS256 only; signature checked before the claims
/// are read). Expiry and the claims' meaning are the caller's to check.
pub fn verify_signed<C: DeserializeOwned>(key: &[u8], token: &str) -> Result<C, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed);
    let h: Header = serde_json::from_slice(&decode(header)?).map_err(|_| JwtError::Malformed)?;
    if h.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    let mut m = mac(key);
    m.update(header.as_bytes());
    m.update(b".");
    m.update(payload.as_bytes());
    m.verify_slice(&decode(sig)?)
        .map_err(|_| JwtError::Signature)?;
    serde_json::from_slice(&decode(payload)?).map_err(|_| JwtError::Malformed)
}

/// The claims of a valid, unexpired user token at `now` (Unix seconds).
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, JwtError> {
    let claims: Claims = verify_signed(key, token)?;
    if claims.iss != ISSUER {
        return Err(JwtError::Malformed);
    }
    if now >= claims.exp {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_800_000_000;

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn round_trip() {
        let (token, claims) = issue(KEY, "usr-x", "ses-1", NOW);
        assert_eq!(claims.exp, NOW + LIFETIME_SECS);
        assert_eq!(verify(KEY, &token, NOW + 10), Ok(claims));
    }

    #[test]
    fn expiry_is_exclusive() {
        let (token, _) = issue(KEY, "usr-x", "ses-1", NOW);
        assert!(verify(KEY, &token, NOW + LIFETIME_SECS - 1).is_ok());
        assert_eq!(
            verify(KEY, &token, NOW + LIFETIME_SECS),
            Err(JwtError::Expired)
        );
    }

    #[test]
    fn another_key_is_refused() {
        let (token, _) = issue(KEY, "usr-x", "ses-1", NOW);
        assert_eq!(
            verify(b"another key", &token, NOW),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn tampered_claims_are_refused() {
        let (token, _) = issue(KEY, "usr-x", "ses-1", NOW);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(br#"{"sub":"usr-admin","iat":0,"exp":9999999999,"iss":"wrenn"}"#);
        let t = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(verify(KEY, &t, NOW), Err(JwtError::Signature));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let claims = b64(br#"{"sub":"usr-x","iat":0,"exp":9999999999,"iss":"wrenn"}"#);
        for alg in ["none", "HS512", "RS256", "hs256"] {
            let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
            for sig in ["", "AAAA"] {
                let t = format!("{header}.{claims}.{sig}");
                assert_eq!(verify(KEY, &t, NOW), Err(JwtError::Algorithm), "{alg}");
            }
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let (token, _) = issue(KEY, "usr-x", "ses-1", NOW);
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "wrn_0123",
            &format!("{token}.x"),
            &format!("{token}="),
            &long,
        ] {
            assert!(verify(KEY, t, NOW).is_err(), "{t}");
        }
    }

    #[test]
    fn signed_claims_of_another_issuer_are_refused() {
        let header = b64(br#"{"alg":"HS256"}"#);
        let claims = b64(br#"{"sub":"usr-x","iat":0,"exp":9999999999,"iss":"other"}"#);
        let mut m = mac(KEY);
        m.update(format!("{header}.{claims}").as_bytes());
        let sig = b64(&m.finalize().into_bytes());
        assert_eq!(
            verify(KEY, &format!("{header}.{claims}.{sig}"), NOW),
            Err(JwtError::Malformed)
        );
    }
}
