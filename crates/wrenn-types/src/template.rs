//! Template names: the one check of a template's or snapshot's name in Wrenn.

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// A template's or a snapshot's name: `[a-zA-Z0-9][a-zA-Z0-9._-]*`, at most
/// [`TemplateName::MAX_LEN`] characters (a new snapshot's at most
/// [`TemplateName::MAX_SNAPSHOT_LEN`]). It is a folder name on the hosts, so it can never be
/// `.`, `..` or hold a `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateName(String);

impl TemplateName {
    /// The longest name a template may have.
    pub const MAX_LEN: usize = 64;
    /// The longest name a new snapshot may be given.
    pub const MAX_SNAPSHOT_LEN: usize = 48;

    /// A template name, at most [`TemplateName::MAX_LEN`] characters.
    pub fn parse(name: &str) -> Result<TemplateName, ParseError> {
        TemplateName::parse_max(name, TemplateName::MAX_LEN)
    }

    /// The name of a new snapshot, at most [`TemplateName::MAX_SNAPSHOT_LEN`] characters.
    pub fn parse_snapshot(name: &str) -> Result<TemplateName, ParseError> {
        TemplateName::parse_max(name, TemplateName::MAX_SNAPSHOT_LEN)
    }

    fn parse_max(name: &str, max: usize) -> Result<TemplateName, ParseError> {
        let mut chars = name.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
            && name.len() <= max
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(TemplateName(name.to_owned()))
        } else {
            Err(ParseError::TemplateName {
                name: name.to_owned(),
                max,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::str::FromStr for TemplateName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<TemplateName, ParseError> {
        TemplateName::parse(s)
    }
}

impl TryFrom<String> for TemplateName {
    type Error = ParseError;

    fn try_from(s: String) -> Result<TemplateName, ParseError> {
        TemplateName::parse(&s)
    }
}

impl From<TemplateName> for String {
    fn from(n: TemplateName) -> String {
        n.0
    }
}

impl AsRef<str> for TemplateName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for TemplateName {
    fn as_ref(&self) -> &std::path::Path {
        self.0.as_ref()
    }
}

impl std::fmt::Display for TemplateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for TemplateName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TemplateName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_names() {
        let longest = format!("a{}", "b".repeat(63));
        for ok in [
            "minimal",
            "python",
            "my.tpl_1-x",
            "A",
            "9",
            "a..b",
            "a-",
            "x.",
            longest.as_str(),
        ] {
            let n = TemplateName::parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(n.as_str(), ok);
            assert_eq!(ok.parse::<TemplateName>(), Ok(n.clone()));
            assert_eq!(n.to_string(), ok);
            assert_eq!(String::from(n), ok);
        }
        assert_eq!(longest.len(), TemplateName::MAX_LEN);
    }

    #[test]
    fn refused_names() {
        let too_long = "x".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-dash",
            "_under",
            "a/b",
            "/abs",
            "a b",
            "a\nb",
            "a\0",
            "é",
            "café",
            "a:b",
            "a*",
            too_long.as_str(),
        ] {
            let e = TemplateName::parse(bad).unwrap_err();
            assert_eq!(
                e,
                ParseError::TemplateName {
                    name: bad.into(),
                    max: 64
                }
            );
            assert!(bad.parse::<TemplateName>().is_err());
            assert!(TemplateName::try_from(bad.to_string()).is_err());
        }
    }

    #[test]
    fn snapshot_names_are_shorter() {
        let at_most = "s".repeat(48);
        assert!(TemplateName::parse_snapshot(&at_most).is_ok());
        let over = "s".repeat(49);
        assert_eq!(
            TemplateName::parse_snapshot(&over),
            Err(ParseError::TemplateName {
                name: over.clone(),
                max: 48
            })
        );
        assert!(TemplateName::parse(&over).is_ok());
        assert!(TemplateName::parse_snapshot(".x").is_err());
    }

    #[test]
    fn serde_validates() {
        let n: TemplateName = serde_json::from_str("\"python\"").unwrap();
        assert_eq!(n, "python");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"python\"");
        for bad in ["\"../etc\"", "\"\"", "\".x\"", "3"] {
            assert!(serde_json::from_str::<TemplateName>(bad).is_err(), "{bad}");
        }
    }
}
