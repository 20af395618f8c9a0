//! A host's identity: registration with a single-use token, the host token (a short-lived
//! HS256 JWT with its own key, sent as `X-Host-Token`), the refresh token (single use, rotated
//! on each refresh; a spent one presented again revokes them all) and the mTLS server
//! certificate the control plane's CA issues (CN = host id, SAN = the address's host part).

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, State},
    http::{request::Parts, StatusCode},
    Json,
};
use serde::{Deserialize, Serialize};
use wrenn_types::api::hosts::{HostCredentials, RefreshHostBody, RegisterHostBody};

use super::access::{host_not_found, host_team, publish_host_event, system_caller};
use crate::{
    accounts::jwt,
    db::{now_ms, HostTokenKind, IssuedIdentity},
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    state::AppState,
    time::rfc3339,
};

/// The name of the host-token signing key in `settings`.
pub const HOST_JWT_SECRET: &str = "host-jwt";
/// A refresh token's lifetime.
const REFRESH_TTL_MS: i64 = 30 * 24 * 3600 * 1000;
/// The `typ` claim of a host token.
const HOST_TYP: &str = "host";

/// What a host token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostClaims {
    /// The host's id.
    pub sub: String,
    /// Always `host`.
    pub typ: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// A host token for `host_id`, valid from `now` (Unix seconds) for `ttl_secs`.
pub async fn issue_host_token(
    state: &AppState,
    host_id: &str,
    now: i64,
    ttl_secs: i64,
) -> Result<(String, HostClaims)> {
    let key = state.db.secret(HOST_JWT_SECRET).await?;
    let claims = HostClaims {
        sub: host_id.into(),
        typ: HOST_TYP.into(),
        iat: now,
        exp: now + ttl_secs,
        jti: wrenn_types::secret::hex(8)?,
    };
    Ok((jwt::sign(key.as_bytes(), &claims), claims))
}

/// A request made by a host: the host id its valid `X-Host-Token` names. A user token or an
/// API key is never a host token (`unauthorized`).
pub struct HostAuth(pub String);

impl FromRequestParts<AppState> for HostAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = parts
            .headers
            .get("x-host-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "X-Host-Token is required: the host token from registration or refresh".into(),
                )
            })?;
        let invalid = || ApiError::Unauthorized("invalid or expired host token".into());
        let key = state.db.secret(HOST_JWT_SECRET).await?;
        let claims: HostClaims =
            jwt::verify_signed(key.as_bytes(), token).map_err(|_| invalid())?;
        if claims.typ != HOST_TYP || now_ms() / 1000 >= claims.exp || claims.sub.is_empty() {
            return Err(invalid());
        }
        Ok(HostAuth(claims.sub))
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed), checked.
pub fn address_host(address: &str) -> Result<String> {
    let bad = || {
        ApiError::InvalidRequest(format!(
            "invalid address {address:?}: HOST:PORT, where the control plane reaches the agent \
             (HOST an IP address or a DNS name)"
        ))
    };
    let (host, port) = address.trim().rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    let name = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !(ip || name) {
        return Err(bad());
    }
    Ok(host.to_string())
}

/// A new identity for `host_id` reached at `address`: host token, refresh token and
/// certificate (not stored yet).
async fn new_credentials(
    state: &AppState,
    host_id: &str,
    address: &str,
) -> Result<(HostCredentials, String, i64)> {
    let settings = state.hosts.settings;
    let pki = state.hosts.pki()?;
    let name = address_host(address)?;
    let cert = pki
        .issue_host(host_id, &[name], settings.cert_ttl)
        .map_err(|e| ApiError::InvalidRequest(format!("the host's certificate: {e}")))?;
    let info = wrenn_rpc::tls::cert_info(&cert.cert_pem)
        .map_err(|e| ApiError::Internal(format!("reading the issued certificate: {e}")))?;
    let now = now_ms();
    let (host_token, claims) = issue_host_token(
        state,
        host_id,
        now / 1000,
        settings.token_ttl.as_secs() as i64,
    )
    .await?;
    let refresh_token = format!("wrnr_{}", wrenn_types::secret::hex(32)?);
    let creds = HostCredentials {
        host_id: host_id.into(),
        host_token,
        host_token_expires_at: rfc3339(claims.exp * 1000),
        refresh_token,
        refresh_token_expires_at: rfc3339(now + REFRESH_TTL_MS),
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
        cert_expires_at: rfc3339(info.not_after * 1000),
        ca_cert_pem: pki.ca_pem().to_string(),
    };
    Ok((creds, info.sha256, info.not_after * 1000))
}

/// Register a host
///
/// The agent's first call (`wrenn agent --register TOKEN`), with the registration token
/// `POST /v1/hosts` answered (single use, 1 h): the host becomes `online` and gets its identity:
/// a host token for its heartbeats, a refresh token, and an mTLS server certificate issued by the
/// control plane's CA (CN = host id, SAN = the address's host part). No other credentials.
#[utoipa::path(
    post,
    path = "/v1/hosts/register",
    operation_id = "register_host",
    tag = "hosts",
    security(()),
    request_body = RegisterHostBody,
    responses(
        (status = 201, description = "The host's identity (keep it private)", body = HostCredentials),
        (status = 400, response = crate::responses::BadRequest),
        (status = 401, description = "`unauthorized`: invalid, used or expired registration token", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the host is already registered", body = ErrorBody),
        (status = 500, response = crate::responses::Internal),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    JsonBody(b): JsonBody<RegisterHostBody>,
) -> Result<(StatusCode, Json<HostCredentials>)> {
    address_host(&b.address)?;
    let host_id = state
        .db
        .spend_host_token(HostTokenKind::Registration, b.token.trim())
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized("invalid, used or expired registration token".into())
        })?;
    let (creds, fingerprint, cert_expires_at) =
        new_credentials(&state, &host_id, &b.address).await?;
    let issued = IssuedIdentity {
        cert_fingerprint: &fingerprint,
        cert_expires_at,
        refresh_token: &creds.refresh_token,
        refresh_expires_at: now_ms() + REFRESH_TTL_MS,
    };
    state
        .db
        .complete_registration(&host_id, b.address.trim(), &b.specs, &issued)
        .await?;
    if let Some(host) = state.db.host(&host_id).await? {
        if let Some(team) = host_team(&state, &host).await? {
            let by = system_caller(&team, &host_id);
            state
                .db
                .audit(
                    &by,
                    "host.registered",
                    ("host", &host_id),
                    "success",
                    &host.address,
                )
                .await?;
            let meta = HashMap::from([("address".to_string(), host.address.clone())]);
            publish_host_event(&state, &by, &team, "host.registered", &host_id, meta);
        }
    }
    Ok((StatusCode::CREATED, Json(creds)))
}

/// Refresh a host's identity
///
/// Spends the refresh token and answers a whole new identity: host token, refresh token and
/// certificate. A refresh token works once: presented again, it and every other refresh token
/// of its host are revoked (someone else has a copy), and the host must be registered anew.
#[utoipa::path(
    post,
    path = "/v1/hosts/auth/refresh",
    operation_id = "refresh_host",
    tag = "hosts",
    security(()),
    request_body = RefreshHostBody,
    responses(
        (status = 200, description = "The host's new identity", body = HostCredentials),
        (status = 400, response = crate::responses::BadRequest),
        (status = 401, description = "`unauthorized`: invalid, used, revoked or expired refresh token (a deleted host's too)", body = ErrorBody),
        (status = 500, response = crate::responses::Internal),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(b): JsonBody<RefreshHostBody>,
) -> Result<Json<HostCredentials>> {
    let refused =
        || ApiError::Unauthorized("invalid, used, revoked or expired refresh token".into());
    let host_id = state
        .db
        .spend_host_token(HostTokenKind::Refresh, b.refresh_token.trim())
        .await?
        .ok_or_else(refused)?;
    let host = state
        .db
        .host(&host_id)
        .await?
        .ok_or_else(|| host_not_found(&host_id))?;
    let (creds, fingerprint, cert_expires_at) =
        new_credentials(&state, &host_id, &host.address).await?;
    let issued = IssuedIdentity {
        cert_fingerprint: &fingerprint,
        cert_expires_at,
        refresh_token: &creds.refresh_token,
        refresh_expires_at: now_ms() + REFRESH_TTL_MS,
    };
    state.db.store_refreshed(&host_id, &issued).await?;
    Ok(Json(creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(address_host("127.0.0.2:7000").unwrap(), "127.0.0.2");
        assert_eq!(address_host("[::1]:7000").unwrap(), "::1");
        assert_eq!(
            address_host("agent-1.example:443").unwrap(),
            "agent-1.example"
        );
        for bad in ["", "host", "host:0", "host:99999", ":80", "a b:80", "x/y:1"] {
            assert!(address_host(bad).is_err(), "{bad}");
        }
    }
}
