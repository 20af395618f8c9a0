//! Log-in rate limits, per account (email) and per client address: after too many failed
//! attempts within a window, further attempts are refused with `rate_limited` (429) and a
//! `Retry-After` saying when the window ends, before any password is checked. A successful
//! log-in clears its account's count (not its address's). Counts live in this process's
//! memory, bounded in size ([`MAX_KEYS`] per table).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::error::ApiError;

/// Failed log-ins per account within [`WINDOW`] before it is refused.
pub const ACCOUNT_FAILURES: u32 = 5;
/// Failed log-ins per client address within [`WINDOW`] before it is refused.
pub const ADDRESS_FAILURES: u32 = 20;
/// How long failures count.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Most accounts or addresses tracked at once (expired ones are dropped first).
pub const MAX_KEYS: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failures per key within a window.
#[derive(Debug)]
struct Table {
    limit: u32,
    window: Duration,
    entries: HashMap<String, Window>,
}

impl Table {
    fn new(limit: u32, window: Duration) -> Table {
        Table {
            limit,
            window,
            entries: HashMap::new(),
        }
    }

    /// `Some(seconds to wait)` when `key` is over its limit now.
    fn blocked(&mut self, key: &str, now: Instant) -> Option<u64> {
        let w = *self.entries.get(key)?;
        let ends = w.started + self.window;
        if now >= ends {
            self.entries.remove(key);
            return None;
        }
        (w.failures >= self.limit).then(|| (ends - now).as_secs().max(1))
    }

    fn fail(&mut self, key: &str, now: Instant) {
        if self.entries.len() >= MAX_KEYS && !self.entries.contains_key(key) {
            let window = self.window;
            self.entries.retain(|_, w| now < w.started + window);
            if self.entries.len() >= MAX_KEYS {
                // Only a flood of distinct keys within one window gets here: start over
                // rather than grow without bound.
                tracing::warn!(
                    keys = self.entries.len(),
                    "log-in failure table full; cleared"
                );
                self.entries.clear();
            }
        }
        let w = self.entries.entry(key.to_string()).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= w.started + self.window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures += 1;
    }

    fn clear(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// The log-in limits of one server.
#[derive(Debug)]
pub struct LoginLimits {
    accounts: Mutex<Table>,
    addresses: Mutex<Table>,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits::new(ACCOUNT_FAILURES, ADDRESS_FAILURES, WINDOW)
    }
}

fn limited(what: &str, secs: u64) -> ApiError {
    ApiError::RateLimited {
        message: format!("too many failed log-ins {what}; try again in {secs} s"),
        retry_after_secs: secs,
    }
}

impl LoginLimits {
    pub fn new(per_account: u32, per_address: u32, window: Duration) -> LoginLimits {
        LoginLimits {
            accounts: Mutex::new(Table::new(per_account, window)),
            addresses: Mutex::new(Table::new(per_address, window)),
        }
    }

    /// `rate_limited` when the account or the address has failed too often lately.
    pub fn check(&self, email: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        if let Some(ip) = address {
            if let Some(s) = lock(&self.addresses).blocked(&ip.to_string(), now) {
                return Err(limited("from this address", s));
            }
        }
        if let Some(s) = lock(&self.accounts).blocked(email, now) {
            return Err(limited("for this account", s));
        }
        Ok(())
    }

    /// Counts a failed log-in against both.
    pub fn failed(&self, email: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        if let Some(ip) = address {
            lock(&self.addresses).fail(&ip.to_string(), now);
        }
        lock(&self.accounts).fail(email, now);
    }

    /// A successful log-in: the account starts afresh.
    pub fn succeeded(&self, email: &str) {
        lock(&self.accounts).clear(email);
    }
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    // A panic while holding the lock leaves only counters behind: keep using them.
    t.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_within_the_window() {
        let mut t = Table::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.blocked("a", t0), None);
            t.fail("a", t0);
        }
        assert_eq!(t.blocked("a", t0), Some(60));
        assert_eq!(t.blocked("a", t0 + Duration::from_secs(45)), Some(15));
        assert_eq!(t.blocked("b", t0), None, "another key is not affected");
        // The window ends: allowed again, counting from zero.
        assert_eq!(t.blocked("a", t0 + Duration::from_secs(60)), None);
        t.fail("a", t0 + Duration::from_secs(61));
        assert_eq!(t.blocked("a", t0 + Duration::from_secs(61)), None);
        t.clear("a");
        assert!(t.entries.is_empty());
    }

    #[test]
    fn stays_bounded() {
        let mut t = Table::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            t.fail(&i.to_string(), t0);
        }
        assert!(t.entries.len() <= MAX_KEYS);
    }

    #[test]
    fn account_and_address_limits() {
        let l = LoginLimits::new(2, 3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        l.failed("a@x.org", Some(ip));
        l.failed("a@x.org", Some(ip));
        let e = l.check("a@x.org", None).unwrap_err();
        assert_eq!(e.status_and_code().1, "rate_limited");
        // Another account from the same address: one more failure fills the address.
        assert!(l.check("b@x.org", Some(ip)).is_ok());
        l.failed("b@x.org", Some(ip));
        assert!(l.check("c@x.org", Some(ip)).is_err());
        assert!(l
            .check("c@x.org", Some("192.0.2.2".parse().unwrap()))
            .is_ok());
        // Success clears the account, not the address.
        l.succeeded("a@x.org");
        assert!(l.check("a@x.org", None).is_ok());
        assert!(l.check("a@x.org", Some(ip)).is_err());
    }
}
