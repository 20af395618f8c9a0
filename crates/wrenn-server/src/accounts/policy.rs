//! The server's account settings: who may sign up, and the log-in counters.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::limits;

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
