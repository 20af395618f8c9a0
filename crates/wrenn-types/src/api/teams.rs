//! `/v1/teams`: teams, members and their roles, API keys.

use serde::{Deserialize, Serialize};

/// A member's rights in a team: owner > admin > member.
// Declared lowest first, so `Ord` compares rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

impl TryFrom<String> for Role {
    type Error = crate::ParseError;

    fn try_from(s: String) -> Result<Role, crate::ParseError> {
        Role::parse(&s).ok_or(crate::ParseError::Role(s))
    }
}

/// A team, with the caller's role in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Team {
    #[cfg_attr(
        feature = "openapi",
        schema(example = "team-0123456789abcdefghijklmno")
    )]
    pub id: String,
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    pub role: Role,
}

/// A team the caller belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeamMembership {
    #[serde(flatten)]
    pub team: Team,
    /// When the caller joined it.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub joined_at: String,
}

/// A team's member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub joined_at: String,
}

/// An API key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    #[cfg_attr(feature = "openapi", schema(example = "key-0123456789abcdefghijklmno"))]
    pub id: String,
    pub name: String,
    /// The key's first characters, to recognise it.
    #[cfg_attr(feature = "openapi", schema(example = "wrn_1a2b"))]
    pub prefix: String,
    /// The user or API key that made it (null for the admin key the server makes at its
    /// first start).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub created_by: Option<String>,
    /// The user the key belongs to: it is deleted when they leave the team or are removed
    /// from it. The user who made it, or the owner of the key that made it; null for the
    /// team's own keys (the admin key and keys it made), which live as long as the team.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub owner_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime, required = true))]
    pub last_used_at: Option<String>,
}

/// A new API key, with its secret (shown this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The key itself (`wrn_` + 32 hex): use it as `X-API-Key`.
    pub key: String,
}

/// A new team.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TeamBody {
    /// 1 to 100 characters, not all spaces, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 100,
            pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$"
        )
    )]
    pub name: String,
}

/// A user to add to a team.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    /// An existing user's email.
    #[cfg_attr(feature = "openapi", schema(
        example = "grace@example.com",
        format = Email,
        min_length = 3,
        max_length = 254
    ))]
    pub email: String,
    /// `admin` or `member` (default). Owners are made by an owner changing a role.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "member", pattern = "^(admin|member)$")
    )]
    pub role: Option<String>,
}

/// A member's new role.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    #[cfg_attr(feature = "openapi", schema(value_type = Role))]
    pub role: String,
}

/// A new API key.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyBody {
    /// 1 to 100 characters, not all spaces, no control characters (default `unnamed`).
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 100,
            pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$"
        )
    )]
    pub name: Option<String>,
}
