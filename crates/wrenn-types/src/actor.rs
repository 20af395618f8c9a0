//! Who did something: the `actor_type` of audit rows and the `actor.type` of events.

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// The kind of party behind a request or a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A signed-in user (a session token).
    User,
    /// An API key of a team.
    ApiKey,
    /// The control plane itself (the reconciler, the resume after a restart, security jobs).
    System,
}

impl Actor {
    pub const ALL: [Actor; 3] = [Actor::User, Actor::ApiKey, Actor::System];

    /// The text stored in the audit log and shown in events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Actor::User => "user",
            Actor::ApiKey => "api_key",
            Actor::System => "system",
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Actor {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Actor, ParseError> {
        Actor::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| ParseError::Actor(s.to_owned()))
    }
}

impl TryFrom<String> for Actor {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Actor, ParseError> {
        s.parse()
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let texts: Vec<&str> = Actor::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(texts, ["user", "api_key", "system"]);
        for a in Actor::ALL {
            assert_eq!(a.as_str().parse::<Actor>(), Ok(a));
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
            assert_eq!(
                serde_json::from_value::<Actor>(a.as_str().into()).unwrap(),
                a
            );
        }
        for bad in ["", "User", "apikey", "api-key", "admin"] {
            assert_eq!(bad.parse::<Actor>(), Err(ParseError::Actor(bad.into())));
        }
    }
}
