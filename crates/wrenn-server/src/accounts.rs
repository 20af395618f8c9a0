//! Accounts: sign-up and log-in (argon2id passwords, 24 h HS256 user tokens), teams and their
//! members with roles, API keys, and who a request comes from ([`authenticate`]).
//!
//! Credentials. `X-API-Key: wrn_…` or `Authorization: Bearer wrn_…` is an API key: it acts
//! in its own team. `Authorization: Bearer <token>` (from sign-up or log-in) is a signed-in
//! user: they act in the team named by `X-Team-Id` (they must be a member; otherwise the team
//! is `not_found`, so other teams' existence never leaks) or else in their first team (the
//! personal one made at sign-up). Roles are read from the database on every request, never
//! from the token, so a role change or a removal takes effect at once.
//!
//! Rights. Roles rank owner > admin > member.
//! * Teams and members (`/v1/teams…`) need a signed-in user; API keys get `forbidden` (a key
//!   must never be able to give anyone access to a team). Any member reads the member list;
//!   admins and owners add members (as admin or member) and remove or promote plain members;
//!   only owners change an admin's or owner's role or make owners. Owners are never removed
//!   (demote first), and the last owner cannot be demoted. Anyone but an owner may leave.
//! * API keys (`/v1/api-keys`): any member or key of the team lists them (never the secret or
//!   its hash); creating and deleting needs an admin or owner, or an API key of the team (the
//!   key `wrenn up` prints must be able to make more). A key's plaintext is shown once; the
//!   database holds only its SHA-256.
//! * A key dies with its owner's membership: a key made by a user is theirs, a key made by a
//!   key belongs to that key's owner; removing a member (or a member leaving) deletes their
//!   keys in that team, in the same transaction, audited. Keys with no owner (the admin key
//!   the server makes at its first start, and keys it made) belong to the team. The admin key
//!   cannot be deleted through the API (`conflict`); the server replaces it when its file is
//!   missing or its key no longer works ([`crate::bootstrap`]).
//! * User tokens are sessions: valid 24 h unless logged out (`/v1/auth/logout`, or
//!   `/v1/auth/logout-all` for all of a user's tokens), checked on every request.
//! * Sign-up follows the server's [`SignupPolicy`] and never tells which emails have
//!   accounts; passwords follow [`check_password`]; failed log-ins are limited per account and
//!   per client address ([`limits`]); password hashing is a bounded pool ([`password`]).
//! * Every change is written to the team's audit log in the same transaction.
//!
//! Not found and forbidden: a team, member or key outside the caller's reach is `not_found`;
//! `forbidden` only ever answers members of the team about their own team.

pub mod common_passwords;
pub mod invitations;
pub mod jwt;
pub mod limits;
pub mod password;

use axum::{
    extract::{FromRequest, FromRequestParts, Path, Request, State},
    http::{request::Parts, HeaderMap, Method, StatusCode},
    Json,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use utoipa::ToSchema;
use wrenn_types::{Id, IdKind};

use crate::{
    api_docs::{BadRequest, Internal, RateLimited, Unauthorized},
    db::{self, now_ms, ApiKeyRow, Caller, Role, JWT_SECRET},
    error::{ApiError, ErrorBody, Result},
    route,
    state::AppState,
    time::rfc3339,
    Route,
};

/// The account routes (part of [`crate::routes`]).
pub fn account_routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/v1/auth/signup", signup),
        route(Method::POST, "/v1/auth/login", login),
        route(Method::POST, "/v1/auth/logout", logout),
        route(Method::POST, "/v1/auth/logout-all", logout_all),
        route(Method::GET, "/v1/teams", list_teams),
        route(Method::POST, "/v1/teams", create_team),
        route(Method::GET, "/v1/teams/{id}/members", list_members),
        route(Method::POST, "/v1/teams/{id}/members", add_member),
        route(
            Method::PATCH,
            "/v1/teams/{id}/members/{user_id}",
            set_member_role,
        ),
        route(
            Method::DELETE,
            "/v1/teams/{id}/members/{user_id}",
            remove_member,
        ),
        route(
            Method::POST,
            "/v1/teams/{id}/invitations",
            invitations::create_invitation,
        ),
        route(
            Method::GET,
            "/v1/teams/{id}/invitations",
            invitations::list_invitations,
        ),
        route(
            Method::DELETE,
            "/v1/teams/{id}/invitations/{invitation_id}",
            invitations::delete_invitation,
        ),
        route(Method::GET, "/v1/api-keys", list_api_keys),
        route(Method::POST, "/v1/api-keys", create_api_key),
        route(Method::DELETE, "/v1/api-keys/{id}", delete_api_key),
    ]
}

// ---------------------------------------------------------------------------------------------
// Who is calling.

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (hashing cost stays bounded).
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Longest user, team or key name.
const MAX_NAME_CHARS: usize = 100;

/// Who may sign up (`--signup`, `WRENN_SIGNUP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignupPolicy {
    /// Anyone may sign up (and gets a personal team).
    Open,
    /// Only with an invitation of a team's owner or admin (`POST /v1/teams/{id}/invitations`):
    /// the new user joins that team.
    Invite,
    /// Nobody: the server's admin adds existing users to teams.
    Closed,
}

impl SignupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SignupPolicy::Open => "open",
            SignupPolicy::Invite => "invite",
            SignupPolicy::Closed => "closed",
        }
    }
}

impl std::str::FromStr for SignupPolicy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<SignupPolicy, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(SignupPolicy::Open),
            "invite" => Ok(SignupPolicy::Invite),
            "closed" => Ok(SignupPolicy::Closed),
            _ => Err(format!(
                "{s:?}: the sign-up policy is open, invite or closed"
            )),
        }
    }
}

/// The account settings and counters of one server.
#[derive(Debug)]
pub struct Accounts {
    pub signup: SignupPolicy,
    /// Failed log-ins per account and per client address.
    pub logins: limits::LoginLimits,
}

impl Accounts {
    pub fn new(signup: SignupPolicy) -> std::sync::Arc<Accounts> {
        std::sync::Arc::new(Accounts {
            signup,
            logins: limits::LoginLimits::default(),
        })
    }
}

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
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn credential(headers: &HeaderMap) -> Result<Credential<'_>> {
    if let Some(key) = header(headers, "x-api-key") {
        return Ok(Credential::ApiKey(key));
    }
    let bearer = header(headers, "authorization").and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    match bearer {
        Some(k) if k.starts_with("wrn_") => Ok(Credential::ApiKey(k)),
        Some(t) if !t.is_empty() => Ok(Credential::UserToken(t)),
        _ => Err(ApiError::Unauthorized(
            "credentials are required: X-API-Key: wrn_…, or Authorization: Bearer with an API \
             key or a user token from /v1/auth/login"
                .into(),
        )),
    }
}

fn team_not_found(id: &str) -> ApiError {
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

/// The caller of a request with these headers: an API key (in its team) or a signed-in user
/// (in `X-Team-Id` or their first team). `unauthorized` without valid credentials.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller> {
    let team = header(headers, "x-team-id");
    match credential(headers)? {
        Credential::ApiKey(key) => caller_for_key(state, key, team).await,
        Credential::UserToken(token) => {
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

/// A signed-in user (user token only; API keys are `forbidden`).
pub struct SignedIn(pub db::User);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match credential(&parts.headers)? {
            Credential::UserToken(token) => Ok(SignedIn(user_from_token(state, token).await?)),
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
        match credential(&parts.headers)? {
            Credential::UserToken(token) => {
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

/// A JSON body; malformed JSON, wrong types and unknown fields are `invalid_request`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(v))
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and JSON.

/// An email address, trimmed and lower-cased, or `invalid_request`.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    let bad = || ApiError::InvalidRequest(format!("{raw:?} is not a valid email address"));
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let labels_ok = domain.split('.').count() >= 2 && domain.split('.').all(|l| !l.is_empty());
    let chars_ok = email
        .chars()
        .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '<' | '>' | ',' | ';'));
    if local.is_empty()
        || local.len() > 64
        || email.len() > 254
        || domain.contains('@')
        || !labels_ok
        || !chars_ok
    {
        return Err(bad());
    }
    Ok(email)
}

/// The password rules: 8 to 256 characters, not a common password (or one character
/// repeated), and not the email or its name part.
pub fn check_password(password: &str, email: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "the password must have at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or(email);
    if lower == email || lower.contains(email) || (local.chars().count() >= 4 && lower == local) {
        return Err(ApiError::InvalidRequest(
            "the password must not be the email address".into(),
        ));
    }
    let mut chars = lower.chars();
    let first = chars.next();
    if common_passwords::is_common(&lower) || chars.all(|c| Some(c) == first) {
        return Err(ApiError::InvalidRequest(
            "this password is too common; choose another (a few unrelated words make a good one)"
                .into(),
        ));
    }
    Ok(())
}

/// A display name: trimmed, 1..=100 characters, no control characters.
fn clean_name(raw: &str, what: &str) -> Result<String> {
    let name = raw.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!(
            "{what} must have 1 to {MAX_NAME_CHARS} characters and no control characters"
        )));
    }
    Ok(name.to_string())
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    #[schema(example = "usr-0123456789abcdefghijklmno")]
    pub id: String,
    /// Lower-case.
    #[schema(example = "ada@example.com")]
    pub email: String,
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

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

/// A team, with the caller's role in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Team {
    #[schema(example = "team-0123456789abcdefghijklmno")]
    pub id: String,
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub role: Role,
}

impl Team {
    fn new(t: &db::Team, role: Role) -> Team {
        Team {
            id: t.id.clone(),
            name: t.name.clone(),
            created_at: rfc3339(t.created_at),
            role,
        }
    }
}

/// A team the caller belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TeamMembership {
    #[serde(flatten)]
    pub team: Team,
    /// When the caller joined it.
    #[schema(format = DateTime)]
    pub joined_at: String,
}

impl From<&db::Membership> for TeamMembership {
    fn from(m: &db::Membership) -> TeamMembership {
        TeamMembership {
            team: Team::new(&m.team, m.role),
            joined_at: rfc3339(m.joined_at),
        }
    }
}

/// A team's member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[schema(format = DateTime)]
    pub joined_at: String,
}

impl From<&db::Member> for Member {
    fn from(m: &db::Member) -> Member {
        Member {
            user_id: m.user.id.clone(),
            email: m.user.email.clone(),
            name: m.user.name.clone(),
            role: m.role,
            joined_at: rfc3339(m.joined_at),
        }
    }
}

/// An API key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApiKey {
    #[schema(example = "key-0123456789abcdefghijklmno")]
    pub id: String,
    pub name: String,
    /// The key's first characters, to recognise it.
    #[schema(example = "wrn_1a2b")]
    pub prefix: String,
    /// The user or API key that made it (null for the admin key the server makes at its
    /// first start).
    #[schema(required = true)]
    pub created_by: Option<String>,
    /// The user the key belongs to: it is deleted when they leave the team or are removed
    /// from it. The user who made it, or the owner of the key that made it; null for the
    /// team's own keys (the admin key and keys it made), which live as long as the team.
    #[schema(required = true)]
    pub owner_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub last_used_at: Option<String>,
}

impl From<&ApiKeyRow> for ApiKey {
    fn from(k: &ApiKeyRow) -> ApiKey {
        ApiKey {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_by: k.created_by.clone(),
            owner_id: k.owner_id.clone(),
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

/// A new API key, with its secret (shown this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The key itself (`wrn_` + 32 hex): use it as `X-API-Key`.
    pub key: String,
}

/// A user token (HS256 JWT, valid 24 h), for `Authorization: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Token {
    pub token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A sign-up was taken. The answer is the same whether or not the email already had an
/// account (so sign-up never tells who has one): it carries nothing the caller did not send.
/// Log in to get a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SignupAccepted {
    /// Always `accepted`.
    #[schema(example = "accepted")]
    pub status: String,
    /// The email, as the server stores it (trimmed, lower-case).
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// What to do next.
    pub message: String,
}

/// A signed-in user and their token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LoginResponse {
    #[serde(flatten)]
    pub token: Token,
    pub user: User,
}

/// A fresh token for `user`, in a new session.
async fn new_token(state: &AppState, user: &db::User) -> Result<Token> {
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

// ---------------------------------------------------------------------------------------------
// Sign-up and log-in.

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// An address with a dotted domain (trimmed and lower-cased).
    #[schema(
        example = "ada@example.com",
        format = Email,
        min_length = 3,
        max_length = 254
    )]
    email: String,
    /// 8 to 256 characters; not a common password, not the email.
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    /// A display name (default: the email's local part): 1 to 100 characters, not all
    /// spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: Option<String>,
    /// An invitation token (`wri_…`) from `POST /v1/teams/{id}/invitations`: the new user
    /// joins that team with the invitation's role (instead of getting a personal team).
    /// Required when the server's sign-up policy is `invite`.
    invitation: Option<String>,
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

/// Credentials to log in with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(example = "ada@example.com")]
    email: String,
    password: String,
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
    let refused = || ApiError::Unauthorized("invalid email or password".into());
    let email = b.email.trim().to_lowercase();
    let limits = &state.accounts.logins;
    limits.check(&email, addr)?;
    if b.password.chars().count() > MAX_PASSWORD_CHARS {
        limits.failed(&email, addr);
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
        limits.failed(&email, addr);
        return Err(refused());
    };
    limits.succeeded(&email);
    Ok(Json(LoginResponse {
        token: new_token(&state, &user).await?,
        user: User::from(&user),
    }))
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
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: an API key (delete it instead)", body = ErrorBody),
        (status = 500, response = Internal),
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
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: an API key (delete it instead)", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn logout_all(State(state): State<AppState>, session: Session) -> Result<StatusCode> {
    state.db.end_all_sessions(&session.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Teams and members.

/// `user` acting in team `team_id` with their role; `not_found` unless a member.
async fn acting_in(state: &AppState, user: &db::User, team_id: &str) -> Result<(Caller, Role)> {
    let role = state
        .db
        .role(team_id, &user.id)
        .await?
        .ok_or_else(|| team_not_found(team_id))?;
    Ok((Caller::user(team_id, user), role))
}

fn forbidden(what: &str) -> ApiError {
    ApiError::Forbidden(format!("your role in this team does not allow {what}"))
}

/// Whether an actor with role `actor` may change a member whose role is `from` to `to`
/// (`None`: remove them). `is_self`: the member is the actor. The last-owner rule is the
/// database's ([`crate::db::Db::set_member_role`]), checked atomically with the change.
pub fn may_change_member(actor: Role, is_self: bool, from: Role, to: Option<Role>) -> Result<()> {
    match to {
        None if from == Role::Owner => {
            if actor == Role::Owner {
                Err(ApiError::Conflict(
                    "an owner cannot be removed; change their role first".into(),
                ))
            } else {
                Err(forbidden("removing an owner"))
            }
        }
        // Leaving a team.
        None if is_self => Ok(()),
        None if actor == Role::Owner || (actor == Role::Admin && from == Role::Member) => Ok(()),
        None => Err(forbidden("removing this member")),
        Some(to) if from == Role::Owner || to == Role::Owner => {
            if actor == Role::Owner {
                Ok(())
            } else {
                Err(forbidden("changing ownership"))
            }
        }
        Some(_) if actor == Role::Owner => Ok(()),
        // Admins promote plain members, and may step down themselves.
        Some(_) if actor == Role::Admin && (from == Role::Member || is_self) => Ok(()),
        Some(_) => Err(forbidden("changing this member's role")),
    }
}

/// List my teams
///
/// The signed-in user's teams with their role, in the order they joined.
#[utoipa::path(
    get,
    path = "/v1/teams",
    operation_id = "list_teams",
    tag = "teams",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Their teams", body = Vec<TeamMembership>),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: an API key (teams need a signed-in user)", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn list_teams(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
) -> Result<Json<Vec<TeamMembership>>> {
    let teams = state.db.memberships(&user.id).await?;
    Ok(Json(teams.iter().map(TeamMembership::from).collect()))
}

/// A new team.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamBody {
    /// 1 to 100 characters, not all spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
}

/// Create a team
///
/// A team the signed-in user owns.
#[utoipa::path(
    post,
    path = "/v1/teams",
    operation_id = "create_team",
    tag = "teams",
    security(("bearer" = [])),
    request_body = TeamBody,
    responses(
        (status = 201, description = "The team", body = TeamMembership),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: an API key (teams need a signed-in user)", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn create_team(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    JsonBody(b): JsonBody<TeamBody>,
) -> Result<(StatusCode, Json<TeamMembership>)> {
    let name = clean_name(&b.name, "name")?;
    let m = state.db.create_owned_team(&user, &name).await?;
    Ok((StatusCode::CREATED, Json(TeamMembership::from(&m))))
}

/// List a team's members
///
/// Any member may.
#[utoipa::path(
    get,
    path = "/v1/teams/{id}/members",
    operation_id = "list_members",
    tag = "teams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    responses(
        (status = 200, description = "Its members", body = Vec<Member>),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: an API key (teams need a signed-in user)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn list_members(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(team_id): Path<String>,
) -> Result<Json<Vec<Member>>> {
    acting_in(&state, &user, &team_id).await?;
    let members = state.db.members(&team_id).await?;
    Ok(Json(members.iter().map(Member::from).collect()))
}

/// A user to add to a team.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    /// An existing user's email.
    #[schema(
        example = "grace@example.com",
        format = Email,
        min_length = 3,
        max_length = 254
    )]
    email: String,
    /// `admin` or `member` (default). Owners are made by an owner changing a role.
    #[schema(example = "member", pattern = "^(admin|member)$")]
    role: Option<String>,
}

/// Add a member
///
/// Admins and owners add existing users as `member` or `admin`.
#[utoipa::path(
    post,
    path = "/v1/teams/{id}/members",
    operation_id = "add_member",
    tag = "teams",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Team id (`team-…`)")),
    request_body = AddMemberBody,
    responses(
        (status = 201, description = "The new member", body = Member),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: an API key, or the user's role does not allow it", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's, or no user with that email", body = ErrorBody),
        (status = 409, description = "`conflict`: already a member", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn add_member(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path(team_id): Path<String>,
    JsonBody(b): JsonBody<AddMemberBody>,
) -> Result<(StatusCode, Json<Member>)> {
    let (caller, actor) = acting_in(&state, &user, &team_id).await?;
    if actor < Role::Admin {
        return Err(forbidden("adding members"));
    }
    let role = match b.role.as_deref().unwrap_or("member") {
        "member" => Role::Member,
        "admin" => Role::Admin,
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "role must be admin or member, not {other:?} (owners are made by an owner \
                 changing a member's role)"
            )))
        }
    };
    let email = normalize_email(&b.email)?;
    let (added, _) = state
        .db
        .user_by_email(&email)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user has the email {email}")))?;
    state.db.add_member(&caller, &added.id, role).await?;
    let m = state
        .db
        .member(&team_id, &added.id)
        .await?
        .ok_or_else(|| ApiError::Internal("the new member vanished".into()))?;
    Ok((StatusCode::CREATED, Json(Member::from(&m))))
}

/// A member's new role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    #[schema(value_type = Role)]
    role: String,
}

/// Change a member's role
///
/// Admins manage plain members; only owners touch admins and owners; the last owner cannot
/// step down.
#[utoipa::path(
    patch,
    path = "/v1/teams/{id}/members/{user_id}",
    operation_id = "set_member_role",
    tag = "teams",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Team id (`team-…`)"),
        ("user_id" = String, Path, description = "The member's user id (`usr-…`)"),
    ),
    request_body = RoleBody,
    responses(
        (status = 200, description = "The member", body = Member),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: an API key, or the user's role does not allow it", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's, or not a member", body = ErrorBody),
        (status = 409, description = "`conflict`: the last owner, or the role changed meanwhile", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn set_member_role(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path((team_id, member_id)): Path<(String, String)>,
    JsonBody(b): JsonBody<RoleBody>,
) -> Result<Json<Member>> {
    let (caller, actor) = acting_in(&state, &user, &team_id).await?;
    let to = Role::parse(&b.role).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "role must be owner, admin or member, not {:?}",
            b.role
        ))
    })?;
    let target = state
        .db
        .member(&team_id, &member_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {member_id} is not a member")))?;
    may_change_member(actor, member_id == user.id, target.role, Some(to))?;
    if target.role != to {
        state
            .db
            .set_member_role(&caller, &member_id, target.role, to)
            .await?;
    }
    let m = state
        .db
        .member(&team_id, &member_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {member_id} is not a member")))?;
    Ok(Json(Member::from(&m)))
}

/// Remove a member
///
/// Or leave (anyone but an owner). Owners are never removed: demote them first. The API keys
/// the member owns in this team are deleted with their membership (audited), so a removed
/// member's keys stop working at once.
#[utoipa::path(
    delete,
    path = "/v1/teams/{id}/members/{user_id}",
    operation_id = "remove_member",
    tag = "teams",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Team id (`team-…`)"),
        ("user_id" = String, Path, description = "The member's user id (`usr-…`)"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: an API key, or the user's role does not allow it", body = ErrorBody),
        (status = 404, description = "`not_found`: no such team among the user's, or not a member", body = ErrorBody),
        (status = 409, description = "`conflict`: an owner (change their role first)", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn remove_member(
    State(state): State<AppState>,
    SignedIn(user): SignedIn,
    Path((team_id, member_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let (caller, actor) = acting_in(&state, &user, &team_id).await?;
    let target = state
        .db
        .member(&team_id, &member_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {member_id} is not a member")))?;
    may_change_member(actor, member_id == user.id, target.role, None)?;
    state
        .db
        .remove_member(&caller, &member_id, target.role)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// API keys.

/// Keys are managed by the team's API keys and by its admins and owners.
async fn require_key_manager(state: &AppState, caller: &Caller) -> Result<()> {
    let Some(user_id) = caller.user_id() else {
        return Ok(()); // an API key of this team
    };
    match state.db.role(&caller.team_id, user_id).await? {
        Some(r) if r >= Role::Admin => Ok(()),
        Some(_) => Err(forbidden("managing API keys")),
        None => Err(team_not_found(&caller.team_id)),
    }
}

/// List API keys
///
/// The team's keys, newest first (never a secret). Any member or key of the team may.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "list_api_keys",
    tag = "api-keys",
    responses(
        (status = 200, description = "The team's keys", body = Vec<ApiKey>),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
    )
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKey>>> {
    let keys = state.db.api_keys(&caller.team_id).await?;
    Ok(Json(keys.iter().map(ApiKey::from).collect()))
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyBody {
    /// 1 to 100 characters, not all spaces, no control characters (default `unnamed`).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: Option<String>,
}

/// Create an API key
///
/// The team's admins and owners, and its API keys, may. The key is shown this once. It
/// belongs to the user who makes it (or to the owner of the key that makes it) and is
/// deleted when they leave the team or are removed from it (`owner_id`).
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "create_api_key",
    tag = "api-keys",
    request_body = ApiKeyBody,
    responses(
        (status = 201, description = "The key, with its secret", body = CreatedApiKey),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a plain member", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(b): JsonBody<ApiKeyBody>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    require_key_manager(&state, &caller).await?;
    let name = match &b.name {
        Some(n) => clean_name(n, "name")?,
        None => "unnamed".to_string(),
    };
    let (row, plaintext) = state.db.create_api_key_as(&caller, &name).await?;
    let body = CreatedApiKey {
        api_key: ApiKey::from(&row),
        key: plaintext,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Delete an API key
///
/// The team's admins and owners, and its API keys, may; it stops working at once. The admin
/// key the server made at its first start (`created_by` null) is not deleted this way
/// (`conflict`): delete its file and restart the server to replace it.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "delete_api_key",
    tag = "api-keys",
    params(("id" = String, Path, description = "API key id (`key-…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: a plain member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key in the team", body = ErrorBody),
        (status = 409, description = "`conflict`: the server's admin key (replace it by deleting its file and restarting the server)", body = ErrorBody),
        (status = 500, response = Internal),
    )
)]
pub async fn delete_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = Id::parse(IdKind::ApiKey, &id)
        .map_err(|_| ApiError::NotFound(format!("API key {id} not found")))?
        .to_string();
    require_key_manager(&state, &caller).await?;
    state.db.delete_api_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "ada@exa@mple.com",
            "a da@example.com",
            "ada@example..com",
            "ada@.example.com",
            "<ada>@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn passwords_and_names() {
        let e = "ada.lovelace@example.com";
        assert!(check_password("1234567", e).is_err());
        assert!(check_password("correct horse", e).is_ok());
        assert!(check_password("ééééééé", e).is_err()); // characters, not bytes
        assert!(check_password("éèéèéèéè", e).is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_CHARS + 1), e).is_err());
        // Common passwords, in any case, and one character repeated.
        for common in [
            "password",
            "Password",
            "PASSWORD1",
            "12345678",
            "qwertyuiop",
            "aaaaaaaaaa",
        ] {
            assert!(check_password(common, e).is_err(), "{common}");
        }
        // Not the email, nor its name part.
        assert!(check_password("ada.lovelace@example.com", e).is_err());
        assert!(check_password("Ada.Lovelace", e).is_err());
        assert!(check_password("my ada.lovelace@example.com!", e).is_err());
        assert_eq!(clean_name("  Ada ", "name").unwrap(), "Ada");
        assert!(clean_name("   ", "name").is_err());
        assert!(clean_name("a\nb", "name").is_err());
        assert!(clean_name(&"n".repeat(101), "name").is_err());
    }

    fn code(r: Result<()>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.status_and_code().1,
        }
    }

    #[test]
    fn account_shapes_are_unchanged() {
        use serde_json::json;

        use crate::assert_same_json;

        let u = db::User {
            id: "usr-1".into(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            created_at: 1_700_000_000_000,
        };
        let t = db::Team {
            id: "team-1".into(),
            name: "Ada's team".into(),
            created_at: 1_700_000_000_500,
        };
        // Before: `user_json`, `team_json`, `membership_json`, `member_json`, `api_key_json`.
        let old_user = json!({
            "id": u.id, "email": u.email, "name": u.name, "created_at": rfc3339(u.created_at),
        });
        let old_team = |role: Role| {
            json!({
                "id": t.id, "name": t.name, "created_at": rfc3339(t.created_at),
                "role": role.as_str(),
            })
        };
        assert_same_json(&User::from(&u), old_user.clone());
        assert_same_json(&Team::new(&t, Role::Owner), old_team(Role::Owner));
        let m = db::Membership {
            team: t.clone(),
            role: Role::Admin,
            joined_at: 1_700_000_001_000,
        };
        let mut old_membership = old_team(Role::Admin);
        old_membership["joined_at"] = json!(rfc3339(m.joined_at));
        assert_same_json(&TeamMembership::from(&m), old_membership);
        let member = db::Member {
            user: u.clone(),
            role: Role::Member,
            joined_at: 1_700_000_002_000,
        };
        assert_same_json(
            &super::Member::from(&member),
            json!({
                "user_id": u.id, "email": u.email, "name": u.name, "role": "member",
                "joined_at": rfc3339(member.joined_at),
            }),
        );
        for (created_by, last_used_at) in [(None, None), (Some("usr-1"), Some(1_700_000_003_000))] {
            let k = ApiKeyRow {
                id: "key-1".into(),
                team_id: t.id.clone(),
                name: "ci".into(),
                prefix: "wrn_1a2b".into(),
                created_by: created_by.map(str::to_string),
                owner_id: created_by.map(str::to_string),
                created_at: 1_700_000_000_000,
                last_used_at,
            };
            let old_key = json!({
                "id": k.id, "name": k.name, "prefix": k.prefix, "created_by": k.created_by,
                "owner_id": k.owner_id, "created_at": rfc3339(k.created_at), "last_used_at": k.last_used_at.map(rfc3339),
            });
            assert_same_json(&ApiKey::from(&k), old_key.clone());
            let mut old_created = old_key;
            old_created["key"] = json!("wrn_secret");
            assert_same_json(
                &CreatedApiKey {
                    api_key: ApiKey::from(&k),
                    key: "wrn_secret".into(),
                },
                old_created,
            );
        }
        let token = Token {
            token: "a.b.c".into(),
            token_type: "Bearer".into(),
            expires_at: rfc3339(1_700_086_400_000),
        };
        // Before: `token_fields` plus `user` (and `team` at sign-up).
        let old_login = json!({
            "token": "a.b.c", "token_type": "Bearer", "expires_at": rfc3339(1_700_086_400_000),
            "user": old_user,
        });
        assert_same_json(
            &LoginResponse {
                token: token.clone(),
                user: User::from(&u),
            },
            old_login.clone(),
        );
        let _ = old_login;
    }

    #[test]
    fn member_rights_table() {
        // (actor, self?, from, to (None = remove), answer)
        let table = [
            // Members change nobody, but may leave.
            (Member, false, Member, Some(Admin), "forbidden"),
            (Member, true, Member, Some(Admin), "forbidden"),
            (Member, false, Member, None, "forbidden"),
            (Member, true, Member, None, "ok"),
            (Member, false, Owner, None, "forbidden"),
            // Admins manage plain members, never admins or owners.
            (Admin, false, Member, Some(Admin), "ok"),
            (Admin, false, Member, Some(Member), "ok"),
            (Admin, false, Member, Some(Owner), "forbidden"),
            (Admin, false, Admin, Some(Member), "forbidden"),
            (Admin, true, Admin, Some(Member), "ok"),
            (Admin, true, Admin, Some(Owner), "forbidden"),
            (Admin, false, Owner, Some(Member), "forbidden"),
            (Admin, false, Member, None, "ok"),
            (Admin, false, Admin, None, "forbidden"),
            (Admin, true, Admin, None, "ok"),
            (Admin, false, Owner, None, "forbidden"),
            // Owners do anything but remove an owner (demote first).
            (Owner, false, Member, Some(Owner), "ok"),
            (Owner, false, Admin, Some(Member), "ok"),
            (Owner, false, Owner, Some(Admin), "ok"),
            (Owner, true, Owner, Some(Member), "ok"),
            (Owner, false, Admin, None, "ok"),
            (Owner, false, Owner, None, "conflict"),
            (Owner, true, Owner, None, "conflict"),
        ];
        for (actor, is_self, from, to, want) in table {
            assert_eq!(
                code(may_change_member(actor, is_self, from, to)),
                want,
                "{actor:?} self={is_self} {from:?} -> {to:?}"
            );
        }
    }
}
