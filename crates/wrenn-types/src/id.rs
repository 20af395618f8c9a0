//! Prefixed identifiers: a kind prefix and 25 base-36 characters of a random 128-bit value,
//! e.g. `cl-0k3q9...`.

use std::fmt;

/// What an identifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Capsule,
    User,
    Team,
    ApiKey,
    Host,
    Build,
    Channel,
    Audit,
    Template,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Capsule => "cl-",
            IdKind::User => "usr-",
            IdKind::Team => "team-",
            IdKind::ApiKey => "key-",
            IdKind::Host => "host-",
            IdKind::Build => "bld-",
            IdKind::Channel => "ch-",
            IdKind::Audit => "log-",
            IdKind::Template => "tpl-",
        }
    }
}

const BODY_LEN: usize = 25;

/// A parsed identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "{0:?} is not a valid {1} id (expected {2} followed by 25 lowercase base-36 characters)"
    )]
    Invalid(String, &'static str, &'static str),
}

fn base36(mut v: u128) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; BODY_LEN];
    for slot in out.iter_mut().rev() {
        *slot = digits[(v % 36) as usize];
        v /= 36;
    }
    out.iter().map(|b| *b as char).collect()
}

impl Id {
    /// A fresh random identifier of `kind`.
    pub fn new(kind: IdKind) -> Id {
        let mut bytes = [0u8; 16];
        // Ids name resources, they are not secrets: where the OS random source fails (it does
        // not on Linux after boot), the clock still keeps them apart.
        if crate::secret::fill(&mut bytes).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            bytes = t.to_le_bytes();
        }
        Id(format!(
            "{}{}",
            kind.prefix(),
            base36(u128::from_le_bytes(bytes))
        ))
    }

    /// Parses `text` as an identifier of `kind`.
    pub fn parse(kind: IdKind, text: &str) -> Result<Id, IdError> {
        let ok = text.strip_prefix(kind.prefix()).is_some_and(|b| {
            b.len() == BODY_LEN
                && b.bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        });
        if ok {
            Ok(Id(text.to_string()))
        } else {
            Err(IdError::Invalid(
                text.to_string(),
                kind_name(kind),
                kind.prefix(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn kind_name(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Capsule => "capsule",
        IdKind::User => "user",
        IdKind::Team => "team",
        IdKind::ApiKey => "API key",
        IdKind::Host => "host",
        IdKind::Build => "build",
        IdKind::Channel => "channel",
        IdKind::Audit => "audit log",
        IdKind::Template => "template",
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = Id::new(IdKind::Capsule);
        assert!(id.as_str().starts_with("cl-"));
        assert_eq!(id.as_str().len(), 3 + 25);
        assert_eq!(Id::parse(IdKind::Capsule, id.as_str()).unwrap(), id);
        assert_ne!(Id::new(IdKind::Capsule), id);
        for bad in [
            "",
            "cl-",
            "cl-../../etc/passwd",
            "usr-0000000000000000000000000",
            "cl-ABCDEFGHIJKLMNOPQRSTUVWXY",
        ] {
            assert!(Id::parse(IdKind::Capsule, bad).is_err(), "{bad}");
        }
        assert_eq!(base36(0), "0".repeat(25));
        assert_eq!(base36(u128::MAX).len(), 25);
    }
}
