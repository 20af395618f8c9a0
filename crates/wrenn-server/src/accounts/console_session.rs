//! `/v1/auth/session`: the web console's sign-in by cookie (see [`super::cookie`]). The
//! SDK's and CLI's log-in (`/v1/auth/login`, a token in the answer) is unchanged.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use super::{
    auth::{session_from_token, ClientAddr},
    cookie,
    jwt::{self, LIFETIME_SECS},
    sessions::{check_login, new_token, LoginBody, User},
};
use crate::{
    db::{now_ms, JWT_SECRET},
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    responses::{BadRequest, Internal, RateLimited},
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::accounts::ConsoleSession;

fn no_session() -> ApiError {
    ApiError::Unauthorized("not signed in (no session cookie, or it has ended)".into())
}

/// The session a valid cookie stands for: its user, CSRF token and end.
async fn describe(state: &AppState, token: &str) -> Result<ConsoleSession> {
    let (user, _) = session_from_token(state, token).await?;
    let key = state.db.secret(JWT_SECRET).await?;
    let claims = jwt::verify(key.as_bytes(), token, now_ms() / 1000).map_err(|_| no_session())?;
    Ok(ConsoleSession {
        user: User::from(&user),
        csrf_token: cookie::csrf_token(key.as_bytes(), token),
        expires_at: rfc3339(claims.exp * 1000),
    })
}

fn with_cookie(value: HeaderValue, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::SET_COOKIE, value);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Sign in (web console)
///
/// Checks the email and password as `/v1/auth/login` does (same limits, same answer for an
/// unknown email and a wrong password) and starts a 24 h session held in the `HttpOnly`,
/// `SameSite=Strict` cookie `wrenn_session` (`Secure` over TLS). The answer gives the
/// session's CSRF token: requests signed in by the cookie that change anything must send it
/// as `X-CSRF-Token` (else `forbidden`). For the console; programs use `/v1/auth/login`.
#[utoipa::path(
    post,
    path = "/v1/auth/session",
    operation_id = "console_sign_in",
    tag = "auth",
    security(()),
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in: the session cookie is set", body = ConsoleSession,
            headers(("set-cookie" = String, description = "`wrenn_session=…; HttpOnly; SameSite=Strict`"))),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized`: invalid email or password", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Response> {
    let user = check_login(&state, addr, b).await?;
    let token = new_token(&state, &user).await?;
    let session = describe(&state, &token.token).await?;
    let value = cookie::set_cookie(&token.token, LIFETIME_SECS, cookie::over_tls(&headers));
    Ok(with_cookie(value, Json(session)))
}

/// The console's session
///
/// The signed-in user of the session cookie and the session's CSRF token (how the console
/// finds its session again after a reload). `unauthorized` without a live session cookie.
#[utoipa::path(
    get,
    path = "/v1/auth/session",
    operation_id = "console_session",
    tag = "auth",
    security(()),
    responses(
        (status = 200, description = "The session", body = ConsoleSession),
        (status = 401, description = "`unauthorized`: no session cookie, or its session ended", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let token = cookie::session_cookie(&headers).ok_or_else(no_session)?;
    let session = describe(&state, token).await.map_err(|e| match e {
        ApiError::Unauthorized(_) => no_session(),
        other => other,
    })?;
    let mut r = Json(session).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Sign out (web console)
///
/// Ends the session of the cookie on the server (its token stops working at once) and
/// clears the cookie. Needs the session's `X-CSRF-Token`.
#[utoipa::path(
    delete,
    path = "/v1/auth/session",
    operation_id = "console_sign_out",
    tag = "auth",
    security(()),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses(
        (status = 204, description = "Signed out: the cookie is cleared"),
        (status = 401, description = "`unauthorized`: no session cookie", body = ErrorBody),
        (status = 403, description = "`forbidden`: the CSRF token is missing or wrong", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    let token = cookie::session_cookie(&headers).ok_or_else(no_session)?;
    debug_assert!(cookie::needs_csrf(&method, &headers));
    let key = state.db.secret(JWT_SECRET).await?;
    let ok = cookie::offered_csrf(&headers)
        .is_some_and(|t| cookie::csrf_matches(key.as_bytes(), token, t));
    if !ok {
        return Err(ApiError::Forbidden(
            "signing out needs the session's CSRF token (header X-CSRF-Token)".into(),
        ));
    }
    // An ended or expired session has nothing left to end; the cookie goes either way.
    if let Ok((user, sid)) = session_from_token(&state, token).await {
        state.db.end_session(&sid, &user.id).await?;
    }
    let value = cookie::set_cookie("", 0, cookie::over_tls(&headers));
    Ok(with_cookie(value, StatusCode::NO_CONTENT))
}
