//! Who a request acts as (`Authorization: Basic`), and the access token that guards every
//! endpoint but `/health` once `/init` has set one (header or signed `/files` URL).

use base64::Engine;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    error::{EnvdError, Result},
    state::AccessToken,
};

/// The username of `Authorization: Basic base64(user:)`, if the header is there.
pub fn basic_user(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || EnvdError::Unauthenticated("malformed Authorization header".into());
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(EnvdError::Unauthenticated(format!(
            "unsupported authorization scheme {scheme:?}; use Basic"
        )));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = text.split(':').next().unwrap_or_default();
    Ok((!user.is_empty()).then(|| user.to_string()))
}

/// Whether `X-Access-Token` carries `token`.
pub fn header_token_ok(headers: &HeaderMap, token: &AccessToken) -> bool {
    headers
        .get("x-access-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| token.matches(v))
}

/// The v1 signature E2B clients put on file URLs:
/// `v1_` + unpadded base64 of SHA-256 of `path:operation:username:token[:expiration]`.
pub fn file_signature(
    path: &str,
    operation: &str,
    username: &str,
    token: &AccessToken,
    expiration: Option<i64>,
) -> String {
    let mut raw = format!("{path}:{operation}:{username}:{}", token.expose());
    if let Some(exp) = expiration {
        raw.push_str(&format!(":{exp}"));
    }
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Checks a signed `/files` URL. `now` is the Unix time in seconds.
pub fn signature_ok(
    params: &std::collections::HashMap<String, String>,
    operation: &str,
    token: &AccessToken,
    now: i64,
) -> bool {
    let Some(signature) = params.get("signature") else {
        return false;
    };
    let expiration = match params.get("signature_expiration") {
        None => None,
        Some(e) => match e.parse::<i64>() {
            Ok(e) if e >= now => Some(e),
            _ => return false,
        },
    };
    let path = params.get("path").map(String::as_str).unwrap_or("");
    let username = params.get("username").map(String::as_str).unwrap_or("");
    let want = file_signature(path, operation, username, token, expiration);
    want.as_bytes().ct_eq(signature.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_user_parses_sdk_header() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_user(&h).unwrap(), None);
        h.insert("authorization", "Basic cm9vdDo=".parse().unwrap());
        assert_eq!(basic_user(&h).unwrap().as_deref(), Some("root"));
        h.insert("authorization", "Basic !!!".parse().unwrap());
        assert!(matches!(basic_user(&h), Err(EnvdError::Unauthenticated(_))));
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert!(basic_user(&h).is_err());
    }

    #[test]
    fn signatures_match_the_sdk_recipe() {
        let token = AccessToken::new("secret".into());
        // python: base64.b64encode(sha256(b"/tmp/a:read::secret").digest()).rstrip(b"=")
        let sig = file_signature("/tmp/a", "read", "", &token, None);
        assert!(sig.starts_with("v1_") && !sig.ends_with('='));
        let mut params: std::collections::HashMap<String, String> = [
            ("path".to_string(), "/tmp/a".to_string()),
            ("signature".into(), sig),
        ]
        .into();
        assert!(signature_ok(&params, "read", &token, 0));
        assert!(!signature_ok(&params, "write", &token, 0));
        let exp_sig = file_signature("/tmp/a", "read", "", &token, Some(100));
        params.insert("signature".into(), exp_sig);
        params.insert("signature_expiration".into(), "100".into());
        assert!(signature_ok(&params, "read", &token, 99));
        assert!(!signature_ok(&params, "read", &token, 101));
    }
}
