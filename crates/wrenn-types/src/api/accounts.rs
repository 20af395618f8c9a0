//! `/v1/auth` and `/v1/users`: sign-up, log-in, sessions, invitations.

use serde::{Deserialize, Serialize};

use super::teams::Role;

/// Who may sign up (`--signup`, `WRENN_SIGNUP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    #[cfg_attr(feature = "openapi", schema(example = "usr-0123456789abcdefghijklmno"))]
    pub id: String,
    /// Lower-case.
    #[cfg_attr(feature = "openapi", schema(example = "ada@example.com"))]
    pub email: String,
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

/// A user token (HS256 JWT, valid 24 h), for `Authorization: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Token {
    pub token: String,
    /// Always `Bearer`.
    #[cfg_attr(feature = "openapi", schema(example = "Bearer"))]
    pub token_type: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
}

/// A sign-up was taken. The answer is the same whether or not the email already had an
/// account (so sign-up never tells who has one): it carries nothing the caller did not send.
/// Log in to get a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignupAccepted {
    /// Always `accepted`.
    #[cfg_attr(feature = "openapi", schema(example = "accepted"))]
    pub status: String,
    /// The email, as the server stores it (trimmed, lower-case).
    #[cfg_attr(feature = "openapi", schema(example = "ada@example.com"))]
    pub email: String,
    /// What to do next.
    pub message: String,
}

/// A signed-in user and their token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    #[serde(flatten)]
    pub token: Token,
    pub user: User,
}

/// The web console's session (its user token is in the `HttpOnly` cookie, never here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsoleSession {
    pub user: User,
    /// Send as `X-CSRF-Token` on every request but `GET`/`HEAD` that the cookie signs in
    /// (and as the WebSocket subprotocol `wrenn.csrf.<token>`).
    pub csrf_token: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
}

/// A new account.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// An address with a dotted domain (trimmed and lower-cased).
    #[cfg_attr(feature = "openapi", schema(
        example = "ada@example.com",
        format = Email,
        min_length = 3,
        max_length = 254
    ))]
    pub email: String,
    /// 8 to 256 characters; not a common password, not the email.
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 256))]
    pub password: String,
    /// A display name (default: the email's local part): 1 to 100 characters, not all
    /// spaces, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 100,
            pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$"
        )
    )]
    pub name: Option<String>,
    /// An invitation token (`wri_…`) from `POST /v1/teams/{id}/invitations`: the new user
    /// joins that team with the invitation's role (instead of getting a personal team).
    /// Required when the server's sign-up policy is `invite`.
    pub invitation: Option<String>,
}

/// Credentials to log in with.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[cfg_attr(feature = "openapi", schema(example = "ada@example.com"))]
    pub email: String,
    pub password: String,
}

/// An invitation (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    #[cfg_attr(feature = "openapi", schema(example = "inv-0123456789abcdef01234567"))]
    pub id: String,
    pub team_id: String,
    /// The role the new member gets.
    pub role: Role,
    /// The user who made it.
    pub created_by: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
    /// The user who signed up with it (null while unused).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub used_by: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime, required = true))]
    pub used_at: Option<String>,
}

/// A new invitation, with its token (shown this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedInvitation {
    #[serde(flatten)]
    pub invitation: Invitation,
    /// The token to give the person invited: they pass it as `invitation` to
    /// `POST /v1/auth/signup`. Single use.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "wri_0123456789abcdef0123456789abcdef")
    )]
    pub token: String,
}

/// An invitation to make.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InvitationBody {
    /// `member` (default) or `admin`.
    #[cfg_attr(feature = "openapi", schema(example = "member"))]
    pub role: Option<String>,
    /// How long it stays valid, in hours: 1 to 720 (default 168, a week).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 720))]
    pub expires_in_hours: Option<i64>,
}
