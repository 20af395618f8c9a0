//! Who is calling: credentials (API keys and user tokens) to a [`Caller`], the extractors
//! that need one, and the role a user acts with in a team.

use axum::{
    extract::FromRequestParts,
    http::{request::Parts, HeaderMap, Method},
};

use super::{cookie, jwt};
use crate::{
    db::{self, now_ms, Caller, Role, JWT_SECRET},
    error::{ApiError, Result},
    state::AppState,
};

/// The client's address (the TCP peer), when the server knows it.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

enum Credential<'a> {
    ApiKey(&'a str),
    UserToken(&'a str),
    /// The console's session cookie: a user token, usable only with the CSRF check of
    /// [`resolve`].
    Cookie(&'a str),
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The WebSocket subprotocol that carries a credential: `wrenn.token.<token>`.
pub const WS_TOKEN_PREFIX: &str = "wrenn.token.";

/// The WebSocket subprotocol that names the team a user acts in: `wrenn.team.<id>`.
pub const WS_TEAM_PREFIX: &str = "wrenn.team.";

/// The WebSocket subprotocol a socket speaks when the client offered its credential as one.
pub const WS_PROTOCOL: &str = "wrenn";

fn credential(headers: &HeaderMap) -> Result<Credential<'_>> {
    if let Some(key) = header(headers, "x-api-key") {
        return Ok(Credential::ApiKey(key));
    }
    let bearer = header(headers, "authorization").and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    // A browser cannot set headers on a WebSocket: it offers the credential as a subprotocol
    // (`wrenn.token.<token>`, beside `wrenn`, which the socket then speaks).
    let offered = || {
        header(headers, "sec-websocket-protocol")?
            .split(',')
            .find_map(|p| p.trim().strip_prefix(WS_TOKEN_PREFIX))
    };
    match bearer.or_else(offered) {
        Some(k) if k.starts_with("wrn_") => Ok(Credential::ApiKey(k)),
        Some(t) if !t.is_empty() => Ok(Credential::UserToken(t)),
        _ if cookie::session_cookie(headers).is_some() => Ok(Credential::Cookie(
            cookie::session_cookie(headers).unwrap_or_default(),
        )),
        _ => Err(ApiError::Unauthorized(
            "credentials are required: X-API-Key: wrn_…, or Authorization: Bearer with an API \
             key or a user token from /v1/auth/login"
                .into(),
        )),
    }
}

/// The request's credential, with the console's cookie checked for its CSRF token when the
/// request needs one (see [`cookie`]): a missing or wrong token is `forbidden`.
async fn resolve<'a>(
    state: &AppState,
    method: &Method,
    headers: &'a HeaderMap,
) -> Result<Credential<'a>> {
    match credential(headers)? {
        Credential::Cookie(token) => {
            if cookie::needs_csrf(method, headers) {
                let key = state.db.secret(JWT_SECRET).await?;
                let ok = cookie::offered_csrf(headers)
                    .is_some_and(|t| cookie::csrf_matches(key.as_bytes(), token, t));
                if !ok {
                    return Err(ApiError::Forbidden(
                        "a request signed in by the session cookie must carry its CSRF token \
                         (header X-CSRF-Token, from GET /v1/auth/session)"
                            .into(),
                    ));
                }
            }
            Ok(Credential::UserToken(token))
        }
        other => Ok(other),
    }
}

pub(super) fn team_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("team {id} not found"))
}

/// The user a user token stands for.
pub async fn user_from_token(state: &AppState, token: &str) -> Result<db::User> {
    Ok(session_from_token(state, token).await?.0)
}

/// The user a user token stands for, and its session: a token is valid while its session is
/// (log out ends it), checked on every request.
pub async fn session_from_token(state: &AppState, token: &str) -> Result<(db::User, String)> {
    let invalid = || ApiError::Unauthorized("invalid, expired or logged-out token".into());
    let key = state.db.secret(JWT_SECRET).await?;
    let claims = jwt::verify(key.as_bytes(), token, now_ms() / 1000).map_err(|_| invalid())?;
    if claims.sid.is_empty() || !state.db.session_is_live(&claims.sid, &claims.sub).await? {
        return Err(invalid());
    }
    let user = state.db.user(&claims.sub).await?.ok_or_else(invalid)?;
    Ok((user, claims.sid))
}

/// `user` acting in `team` (must be a member), or else in their first team.
pub async fn caller_for_user(
    state: &AppState,
    user: &db::User,
    team: Option<&str>,
) -> Result<Caller> {
    let team_id = match team {
        Some(t) => {
            state
                .db
                .role(t, &user.id)
                .await?
                .ok_or_else(|| team_not_found(t))?;
            t.to_string()
        }
        None => state
            .db
            .memberships(&user.id)
            .await?
            .into_iter()
            .next()
            .map(|m| m.team.id)
            .ok_or_else(|| {
                ApiError::Forbidden("you are not a member of any team; create one first".into())
            })?,
    };
    Ok(Caller::user(&team_id, user))
}

/// The caller of a request with this method and these headers: an API key (in its team) or a
/// signed-in user (in `X-Team-Id` or their first team; by token, or by the console's cookie
/// with its CSRF token). `unauthorized` without valid credentials.
pub async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller> {
    // (a browser's WebSocket names the team as a subprotocol `wrenn.team.<id>`)
    let team = header(headers, "x-team-id").or_else(|| {
        header(headers, "sec-websocket-protocol")?
            .split(',')
            .find_map(|p| p.trim().strip_prefix(WS_TEAM_PREFIX))
    });
    match resolve(state, method, headers).await? {
        Credential::ApiKey(key) => caller_for_key(state, key, team).await,
        Credential::UserToken(token) | Credential::Cookie(token) => {
            let user = user_from_token(state, token).await?;
            caller_for_user(state, &user, team).await
        }
    }
}

/// The caller a bare credential stands for (an API key `wrn_…`, or a user token acting in
/// `team` or their first team): for transports without headers, such as a WebSocket's first
/// frame.
pub async fn authenticate_token(
    state: &AppState,
    token: &str,
    team: Option<&str>,
) -> Result<Caller> {
    if token.starts_with("wrn_") {
        caller_for_key(state, token, team).await
    } else {
        let user = user_from_token(state, token).await?;
        caller_for_user(state, &user, team).await
    }
}

/// An API key's caller; it acts only in its own team.
async fn caller_for_key(state: &AppState, key: &str, team: Option<&str>) -> Result<Caller> {
    let caller = state
        .db
        .authenticate_key(key)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))?;
    match team {
        Some(t) if t != caller.team_id => Err(team_not_found(t)),
        _ => Ok(caller),
    }
}

/// A request's caller: an API key (`X-API-Key` or `Authorization: Bearer wrn_…`) or a
/// signed-in user (`Authorization: Bearer <token>`, in `X-Team-Id` or their first team); see
/// [`authenticate`].
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        authenticate(state, &parts.method, &parts.headers).await
    }
}

/// A signed-in user (user token only; API keys are `forbidden`).
pub struct SignedIn(pub db::User);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match resolve(state, &parts.method, &parts.headers).await? {
            Credential::UserToken(token) | Credential::Cookie(token) => {
                Ok(SignedIn(user_from_token(state, token).await?))
            }
            Credential::ApiKey(key) => {
                // A bad key is still `unauthorized`; a good one is the wrong kind of credential.
                state
                    .db
                    .authenticate_key(key)
                    .await?
                    .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))?;
                Err(ApiError::Forbidden(
                    "teams and members are managed by signed-in users, not API keys".into(),
                ))
            }
        }
    }
}

/// A signed-in user and the session of their token (user token only; API keys are
/// `forbidden`).
pub struct Session {
    pub user: db::User,
    pub id: String,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match resolve(state, &parts.method, &parts.headers).await? {
            Credential::UserToken(token) | Credential::Cookie(token) => {
                let (user, id) = session_from_token(state, token).await?;
                Ok(Session { user, id })
            }
            Credential::ApiKey(_) => Err(ApiError::Forbidden(
                "log out is for user tokens; an API key is revoked with DELETE /v1/api-keys/{id}"
                    .into(),
            )),
        }
    }
}

/// `user` acting in team `team_id` with their role; `not_found` unless a member.
pub(super) async fn acting_in(
    state: &AppState,
    user: &db::User,
    team_id: &str,
) -> Result<(Caller, Role)> {
    let role = state
        .db
        .role(team_id, &user.id)
        .await?
        .ok_or_else(|| team_not_found(team_id))?;
    Ok((Caller::user(team_id, user), role))
}

pub(super) fn forbidden(what: &str) -> ApiError {
    ApiError::Forbidden(format!("your role in this team does not allow {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_browser_socket_offers_its_credential_as_a_subprotocol() {
        let h = headers(&[(
            "sec-websocket-protocol",
            "wrenn, wrenn.token.eyJ.a.b, wrenn.team.team-1",
        )]);
        assert!(matches!(
            credential(&h),
            Ok(Credential::UserToken("eyJ.a.b"))
        ));
        let h = headers(&[("sec-websocket-protocol", "wrenn, wrenn.token.wrn_0123")]);
        assert!(matches!(credential(&h), Ok(Credential::ApiKey("wrn_0123"))));
        // A header wins over a subprotocol; no credential at all is unauthorized.
        let h = headers(&[
            ("authorization", "Bearer tok"),
            ("sec-websocket-protocol", "wrenn.token.other"),
        ]);
        assert!(matches!(credential(&h), Ok(Credential::UserToken("tok"))));
        for none in ["wrenn", "wrenn.token.", "chat, superchat"] {
            let h = headers(&[("sec-websocket-protocol", none)]);
            assert!(credential(&h).is_err(), "{none}");
        }
    }
}
