//! A capsule's egress policy: allow and deny lists whose entries are IPv4/IPv6 CIDRs (or bare
//! addresses) and domain names, validated and normalized here so the server and the agent
//! agree on what is valid.
//!
//! Precedence (what the agent enforces):
//! 1. egress off: the capsule opens no connection at all;
//! 2. the host's own addresses, other capsules and loopback are never reachable; private,
//!    link-local and CGNAT ranges are not either unless the operator allowed them
//!    (`--egress-allow-private`) — a capsule's allow list cannot widen that;
//! 3. deny beats allow (a denied name is refused by the slot's resolver);
//! 4. an empty allow list allows every other address; a non-empty one allows only its CIDRs
//!    and the addresses the slot's resolver answered for its domain names (a domain matches
//!    itself and its subdomains), each for its DNS TTL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Most entries in one list.
pub const MAX_ENTRIES: usize = 256;

/// One list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// An IPv4 network (host bits cleared).
    V4(Ipv4Addr, u8),
    /// An IPv6 network (host bits cleared).
    V6(Ipv6Addr, u8),
    /// A domain name, lower case, without a trailing dot; matches itself and its subdomains.
    Domain(String),
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::V4(a, p) => write!(f, "{a}/{p}"),
            Rule::V6(a, p) => write!(f, "{a}/{p}"),
            Rule::Domain(d) => f.write_str(d),
        }
    }
}

/// Why an entry is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

fn mask4(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let bits = u32::from(a);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Ipv4Addr::from(bits & mask)
}

fn mask6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(a);
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    Ipv6Addr::from(bits & mask)
}

/// Whether `s` is a domain name: labels of `[a-z0-9-]` (1..=63, not starting or ending with
/// `-`), at least two of them, at most 253 characters, the last not all digits.
fn valid_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

impl Rule {
    /// Parses `10.0.0.0/8`, `203.0.113.7`, `2001:db8::/32` or `example.com`.
    pub fn parse(raw: &str) -> Result<Rule, RuleError> {
        let s = raw.trim();
        let bad = |why: &str| RuleError(format!("{raw:?} is not {why}"));
        if s.is_empty() {
            return Err(RuleError(
                "an empty entry is not a CIDR or a domain name".into(),
            ));
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                    _ => return Err(bad(&format!("a valid CIDR (prefix 0..={max})"))),
                },
            };
            return Ok(match ip {
                IpAddr::V4(a) => Rule::V4(mask4(a, prefix), prefix),
                IpAddr::V6(a) => Rule::V6(mask6(a, prefix), prefix),
            });
        }
        if prefix.is_some() || s.contains(':') {
            return Err(bad("a valid CIDR"));
        }
        let d = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if d.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad("a valid IP address"));
        }
        if !valid_domain(&d) {
            return Err(bad("a CIDR or a domain name"));
        }
        Ok(Rule::Domain(d))
    }

    /// Whether domain rule `self` matches `name` (itself or a subdomain).
    pub fn matches_name(&self, name: &str) -> bool {
        let Rule::Domain(d) = self else { return false };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        name == *d
            || (name.len() > d.len()
                && name.ends_with(d.as_str())
                && name.as_bytes()[name.len() - d.len() - 1] == b'.')
    }
}

/// A capsule's allow and deny lists (normalized entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPolicy {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

impl EgressPolicy {
    /// Validates and normalizes both lists (duplicates removed, order kept).
    pub fn new(allow: &[String], deny: &[String]) -> Result<EgressPolicy, RuleError> {
        fn list(what: &str, raw: &[String]) -> Result<Vec<String>, RuleError> {
            if raw.len() > MAX_ENTRIES {
                return Err(RuleError(format!(
                    "{what} has {} entries; at most {MAX_ENTRIES}",
                    raw.len()
                )));
            }
            let mut out: Vec<String> = Vec::new();
            for r in raw {
                let rule = Rule::parse(r).map_err(|e| RuleError(format!("{what}: {e}")))?;
                let text = rule.to_string();
                if !out.contains(&text) {
                    out.push(text);
                }
            }
            Ok(out)
        }
        Ok(EgressPolicy {
            allow: list("allow", allow)?,
            deny: list("deny", deny)?,
        })
    }

    fn rules(list: &[String]) -> impl Iterator<Item = Rule> + '_ {
        list.iter().filter_map(|s| Rule::parse(s).ok())
    }

    pub fn allow_rules(&self) -> Vec<Rule> {
        Self::rules(&self.allow).collect()
    }

    pub fn deny_rules(&self) -> Vec<Rule> {
        Self::rules(&self.deny).collect()
    }

    /// Whether the allow list is non-empty (everything else is denied).
    pub fn default_deny(&self) -> bool {
        !self.allow.is_empty()
    }

    /// Whether a name is denied (a deny domain matches it).
    pub fn denies_name(&self, name: &str) -> bool {
        Self::rules(&self.deny).any(|r| r.matches_name(name))
    }

    /// Whether a name is explicitly allowed (an allow domain matches it) and not denied.
    pub fn allows_name(&self, name: &str) -> bool {
        !self.denies_name(name) && Self::rules(&self.allow).any(|r| r.matches_name(name))
    }

    /// The allow list's domain names.
    pub fn allow_domains(&self) -> Vec<String> {
        Self::rules(&self.allow)
            .filter_map(|r| match r {
                Rule::Domain(d) => Some(d),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            Rule::parse("10.1.2.3/8").unwrap(),
            Rule::V4(Ipv4Addr::new(10, 0, 0, 0), 8)
        );
        assert_eq!(
            Rule::parse("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(Rule::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            Rule::parse("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            Rule::parse("API.Example.COM.").unwrap(),
            Rule::Domain("api.example.com".into())
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/x",
            "300.1.1.1",
            "1.2.3",
            "example",
            "-a.example.com",
            "a..b.com",
            "exa mple.com",
            "*.example.com",
            "example.com/24",
            "fe80::/129",
            "::g",
            "a.123",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(Rule::parse(&long).is_err());
    }

    #[test]
    fn names_match_themselves_and_subdomains() {
        let r = Rule::parse("example.com").unwrap();
        assert!(r.matches_name("example.com"));
        assert!(r.matches_name("API.example.com."));
        assert!(!r.matches_name("badexample.com"));
        assert!(!r.matches_name("example.com.evil.net"));
        assert!(!r.matches_name("com"));
    }

    #[test]
    fn policy_precedence() {
        let p = EgressPolicy::new(
            &[
                "example.com".into(),
                "198.51.100.0/24".into(),
                "example.com".into(),
            ],
            &["bad.example.com".into()],
        )
        .unwrap();
        assert_eq!(p.allow, ["example.com", "198.51.100.0/24"]);
        assert!(p.default_deny());
        assert!(p.allows_name("www.example.com"));
        assert!(!p.allows_name("bad.example.com"), "deny beats allow");
        assert!(p.denies_name("x.bad.example.com"));
        assert!(!p.allows_name("other.org"));
        assert_eq!(p.allow_domains(), ["example.com"]);
        assert!(!EgressPolicy::default().default_deny());
        let too_many: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("h{i}.example.com"))
            .collect();
        assert!(EgressPolicy::new(&too_many, &[]).is_err());
        let e = EgressPolicy::new(&[], &["nope".into()]).unwrap_err();
        assert!(e.0.starts_with("deny: "), "{e}");
    }
}
