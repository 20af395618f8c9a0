//! Sign-up, log-in and log-out: user tokens and their sessions.

use axum::{extract::State, http::StatusCode, Json};

use super::{
    auth::{ClientAddr, Session},
    jwt, password,
    policy::SignupPolicy,
    rules::{check_password, clean_name, normalize_email, MAX_PASSWORD_CHARS},
};
use crate::{
    db::{self, now_ms, JWT_SECRET},
    error::{ApiError, ErrorBody, Result},
    extract::JsonBody,
    responses::{Authed, BadRequest, Internal, RateLimited},
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::accounts::{
    LoginBody, LoginResponse, SignupAccepted, SignupBody, Token, User,
};

impl From<&db::User> for User {
    fn from(u: &db::User) -> User {
        User {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            created_at: rfc3339(u.created_at),
        }
    }
}

/// A fresh token for `user`, in a new session.
pub(super) async fn new_token(state: &AppState, user: &db::User) -> Result<Token> {
    let key = state.db.secret(JWT_SECRET).await?;
    let now = now_ms() / 1000;
    let sid = state
        .db
        .create_session(&user.id, (now + jwt::LIFETIME_SECS) * 1000)
        .await?;
    let (token, claims) = jwt::issue(key.as_bytes(), &user.id, &sid, now);
    Ok(Token {
        token,
        token_type: "Bearer".into(),
        expires_at: rfc3339(claims.exp * 1000),
    })
}

/// Sign up
///
/// Makes an account, unless the email has one already; the answer is the same either way
/// (status, body and work done), so sign-up never tells which emails have accounts. Then log
/// in. Without an invitation the user gets a personal team they own; with one they join its
/// team. The server's sign-up policy decides who may: `open` (anyone), `invite` (an
/// invitation is needed) or `closed` (nobody; the default of `wrenn up`).
#[utoipa::path(
    post,
    path = "/v1/auth/signup",
    operation_id = "signup",
    tag = "auth",
    security(()),
    request_body = SignupBody,
    responses(
        (status = 202, description = "Taken (whether or not the email had an account): log in", body = SignupAccepted),
        (status = 400, response = BadRequest),
        (status = 403, description = "`forbidden`: sign-up is closed, or needs an invitation", body = ErrorBody),
        (status = 404, description = "`not_found`: the invitation is unknown, used or expired", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    )
)]
pub async fn signup(
    State(state): State<AppState>,
    JsonBody(b): JsonBody<SignupBody>,
) -> Result<(StatusCode, Json<SignupAccepted>)> {
    match (state.accounts.signup, &b.invitation) {
        (SignupPolicy::Closed, _) => {
            return Err(ApiError::Forbidden(
                "sign-up is closed on this server: ask its admin to add you to a team".into(),
            ))
        }
        (SignupPolicy::Invite, None) => {
            return Err(ApiError::Forbidden(
                "sign-up on this server needs an invitation from a team's owner or admin".into(),
            ))
        }
        _ => {}
    }
    let email = normalize_email(&b.email)?;
    check_password(&b.password, &email)?;
    let name = match &b.name {
        Some(n) => clean_name(n, "name")?,
        None => email.split('@').next().unwrap_or("user").to_string(),
    };
    let invitation_gone =
        || ApiError::NotFound("the invitation is not valid (unknown, used or expired)".into());
    if let Some(token) = &b.invitation {
        state
            .db
            .live_invitation(token.trim())
            .await?
            .ok_or_else(invitation_gone)?;
    }
    // The same work whether or not the email is taken: hash, then try to insert (the unique
    // index decides); a taken email changes nothing and answers the same.
    let hash = password::hash(b.password).await?;
    let made = match &b.invitation {
        Some(token) => state
            .db
            .create_user_with_invitation(&email, &name, &hash, token.trim())
            .await
            .map(|_| ()),
        None => state
            .db
            .create_user_with_team(&email, &name, &hash, &format!("{name}'s team"))
            .await
            .map(|_| ()),
    };
    match made {
        Ok(()) | Err(ApiError::Conflict(_)) => {}
        Err(e) => return Err(e),
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(SignupAccepted {
            status: "accepted".into(),
            email,
            message: "if this email had no account, it has one now: log in with \
                      POST /v1/auth/login (an existing account is never changed)"
                .into(),
        }),
    ))
}

/// Log in
///
/// A token for the user (valid 24 h, or until logged out). An unknown email and a wrong
/// password get the same answer. Failed log-ins are limited per account (5 in 5 minutes) and
/// per client address (20 in 5 minutes); beyond that the answer is `rate_limited` with
/// `Retry-After`, whatever the password.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    operation_id = "login",
    tag = "auth",
    security(()),
    request_body = LoginBody,
    responses(
        (status = 200, description = "The user and a token", body = LoginResponse),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized`: invalid email or password", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Json<LoginResponse>> {
    let user = check_login(&state, addr, b).await?;
    Ok(Json(LoginResponse {
        token: new_token(&state, &user).await?,
        user: User::from(&user),
    }))
}

/// The user whose email and password these are, within the log-in limits (the check of
/// [`login`], also the console's `POST /v1/auth/session`).
pub(super) async fn check_login(
    state: &AppState,
    addr: Option<std::net::IpAddr>,
    b: LoginBody,
) -> Result<db::User> {
    let refused = || ApiError::Unauthorized("invalid email or password".into());
    let email = b.email.trim().to_lowercase();
    let limits = &state.accounts.logins;
    limits.check(&state.db, &email, addr).await?;
    if b.password.chars().count() > MAX_PASSWORD_CHARS {
        limits.failed(&state.db, &email, addr).await?;
        return Err(refused());
    }
    let found = state.db.user_by_email(&email).await?;
    let (user, stored) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    // A full hashing queue is `rate_limited`, not a failed attempt.
    let ok = password::verify(b.password, stored).await?;
    let Some(user) = user.filter(|_| ok) else {
        limits.failed(&state.db, &email, addr).await?;
        return Err(refused());
    };
    limits.succeeded(&state.db, &email).await?;
    Ok(user)
}

/// Log out
///
/// Ends this token's session: the token stops working at once (the user's other tokens keep
/// working).
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    operation_id = "logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        Authed,
        (status = 403, description = "`forbidden`: an API key (delete it instead)", body = ErrorBody),
    )
)]
pub async fn logout(State(state): State<AppState>, session: Session) -> Result<StatusCode> {
    state.db.end_session(&session.id, &session.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Log out everywhere
///
/// Ends every session of the user: all their tokens stop working at once.
#[utoipa::path(
    post,
    path = "/v1/auth/logout-all",
    operation_id = "logout_all",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "All the user's tokens are revoked"),
        Authed,
        (status = 403, description = "`forbidden`: an API key (delete it instead)", body = ErrorBody),
    )
)]
pub async fn logout_all(State(state): State<AppState>, session: Session) -> Result<StatusCode> {
    state.db.end_all_sessions(&session.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
