//! Log-in rate limits, per account (email) and per client address: after too many failed
//! attempts within a window, further attempts are refused with `rate_limited` (429) and a
//! `Retry-After` saying when the window ends, before any password is checked. A successful
//! log-in clears its account's count (not its address's). Counts live in the database (table
//! `login_failures`), so every control plane on it counts together; rows of ended windows are
//! removed as failures come in.

use std::{net::IpAddr, time::Duration};

use crate::{
    db::{now_ms, Db},
    error::ApiError,
};

/// Failed log-ins per account within [`WINDOW`] before it is refused.
pub const ACCOUNT_FAILURES: u32 = 5;
/// Failed log-ins per client address within [`WINDOW`] before it is refused.
pub const ADDRESS_FAILURES: u32 = 20;
/// How long failures count.
pub const WINDOW: Duration = Duration::from_secs(300);

/// The log-in limits.
#[derive(Debug)]
pub struct LoginLimits {
    per_account: u32,
    per_address: u32,
    window_ms: i64,
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

fn account(email: &str) -> String {
    format!("account:{email}")
}

fn address(ip: IpAddr) -> String {
    format!("address:{ip}")
}

impl LoginLimits {
    pub fn new(per_account: u32, per_address: u32, window: Duration) -> LoginLimits {
        LoginLimits {
            per_account,
            per_address,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2),
        }
    }

    /// `Some(seconds to wait)` when `key` has `limit` failures or more in its current window.
    async fn blocked(
        &self,
        db: &Db,
        key: &str,
        limit: u32,
        now: i64,
    ) -> Result<Option<u64>, ApiError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT started_at, failures FROM login_failures WHERE subject = $1")
                .bind(key)
                .fetch_optional(db.pool())
                .await?;
        Ok(row.and_then(|(started, failures)| {
            let ends = started + self.window_ms;
            (now < ends && failures >= i64::from(limit))
                .then(|| ((ends - now + 999) / 1000).max(1) as u64)
        }))
    }

    async fn fail(&self, db: &Db, key: &str, now: i64) -> Result<(), ApiError> {
        // One statement: a new window, or one more failure in the current one.
        sqlx::query(
            "INSERT INTO login_failures (subject, started_at, failures) VALUES ($1, $2, 1) \
             ON CONFLICT (subject) DO UPDATE SET \
             failures = CASE WHEN login_failures.started_at <= $3 THEN 1 \
                        ELSE login_failures.failures + 1 END, \
             started_at = CASE WHEN login_failures.started_at <= $3 THEN $2 \
                          ELSE login_failures.started_at END",
        )
        .bind(key)
        .bind(now)
        .bind(now - self.window_ms)
        .execute(db.pool())
        .await?;
        Ok(())
    }

    /// `rate_limited` when the account or the address has failed too often lately.
    pub async fn check(&self, db: &Db, email: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let now = now_ms();
        if let Some(ip) = ip {
            if let Some(s) = self
                .blocked(db, &address(ip), self.per_address, now)
                .await?
            {
                return Err(limited("from this address", s));
            }
        }
        if let Some(s) = self
            .blocked(db, &account(email), self.per_account, now)
            .await?
        {
            return Err(limited("for this account", s));
        }
        Ok(())
    }

    /// Counts a failed log-in against both (and forgets windows that have ended).
    pub async fn failed(&self, db: &Db, email: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let now = now_ms();
        sqlx::query("DELETE FROM login_failures WHERE started_at <= $1")
            .bind(now - self.window_ms)
            .execute(db.pool())
            .await?;
        if let Some(ip) = ip {
            self.fail(db, &address(ip), now).await?;
        }
        self.fail(db, &account(email), now).await
    }

    /// A successful log-in: the account starts afresh.
    pub async fn succeeded(&self, db: &Db, email: &str) -> Result<(), ApiError> {
        sqlx::query("DELETE FROM login_failures WHERE subject = $1")
            .bind(account(email))
            .execute(db.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        (Db::open(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn account_and_address_limits() {
        let (db, _dir) = db().await;
        let l = LoginLimits::new(2, 3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        l.failed(&db, "a@x.org", Some(ip)).await.unwrap();
        l.failed(&db, "a@x.org", Some(ip)).await.unwrap();
        let e = l.check(&db, "a@x.org", None).await.unwrap_err();
        assert_eq!(e.status_and_code().1, "rate_limited");
        let ApiError::RateLimited {
            retry_after_secs, ..
        } = e
        else {
            panic!("rate_limited")
        };
        assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}");
        // Another account from the same address: one more failure fills the address.
        assert!(l.check(&db, "b@x.org", Some(ip)).await.is_ok());
        l.failed(&db, "b@x.org", Some(ip)).await.unwrap();
        assert!(l.check(&db, "c@x.org", Some(ip)).await.is_err());
        assert!(l
            .check(&db, "c@x.org", Some("192.0.2.2".parse().unwrap()))
            .await
            .is_ok());
        // Success clears the account, not the address.
        l.succeeded(&db, "a@x.org").await.unwrap();
        assert!(l.check(&db, "a@x.org", None).await.is_ok());
        assert!(l.check(&db, "a@x.org", Some(ip)).await.is_err());
    }

    #[tokio::test]
    async fn a_window_ends_and_counting_starts_over() {
        let (db, _dir) = db().await;
        let l = LoginLimits::new(2, 100, Duration::from_millis(300));
        l.failed(&db, "a@x.org", None).await.unwrap();
        l.failed(&db, "a@x.org", None).await.unwrap();
        assert!(l.check(&db, "a@x.org", None).await.is_err());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(l.check(&db, "a@x.org", None).await.is_ok());
        // A failure after the window starts a new one at 1 (not 3).
        l.failed(&db, "a@x.org", None).await.unwrap();
        assert!(l.check(&db, "a@x.org", None).await.is_ok());
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT subject, failures FROM login_failures")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(rows, [("account:a@x.org".to_string(), 1)]);
    }
}
