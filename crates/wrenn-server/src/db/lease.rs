//! Leases: background work that must run once across control-plane replicas (the reconciler,
//! usage sampling, the host monitor) is done only by the holder of its lease. A holder renews
//! before the lease expires; when it stops renewing (it died, or it is stuck), another replica
//! takes the lease over once it has expired. Plain portable SQL (an upsert that only takes an
//! expired lease or renews one's own), so SQLite and PostgreSQL behave alike; expiry is by the
//! replicas' clocks, which must agree to well within the lease's lifetime.

use std::time::Duration;

use super::{now_ms, Db};
use crate::error::Result;

/// One named lease, as one holder sees it.
#[derive(Clone)]
pub struct Lease {
    db: Db,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// `name`'s lease for this control plane (holder: [`Db::instance`]), `ttl` long.
    pub fn new(db: &Db, name: &str, ttl: Duration) -> Lease {
        Lease::for_holder(db, name, db.instance(), ttl)
    }

    /// `name`'s lease for `holder`.
    pub fn for_holder(db: &Db, name: &str, holder: &str, ttl: Duration) -> Lease {
        Lease {
            db: db.clone(),
            name: name.into(),
            holder: holder.into(),
            ttl,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn until(&self, now: i64) -> i64 {
        now + i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Takes the lease if it is free or expired, or renews it if this holder has it: true
    /// when this holder holds it now (for `ttl` from now).
    pub async fn try_acquire(&self) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
        )
        .bind(&self.name)
        .bind(&self.holder)
        .bind(self.until(now))
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Extends the lease if this holder still has it (expired or not, as long as nobody took
    /// it over): false when it was lost.
    pub async fn renew(&self) -> Result<bool> {
        let done = sqlx::query("UPDATE leases SET expires_at = $1 WHERE name = $2 AND holder = $3")
            .bind(self.until(now_ms()))
            .bind(&self.name)
            .bind(&self.holder)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up (if this holder has it), so another replica need not wait for it to
    /// expire.
    pub async fn release(&self) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(&self.name)
            .bind(&self.holder)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Who holds `name`'s lease now (None: nobody, or it expired).
    pub async fn holder_of(db: &Db, name: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT holder FROM leases WHERE name = $1 AND expires_at > $2")
                .bind(name)
                .bind(now_ms())
                .fetch_optional(db.pool())
                .await?;
        Ok(row.map(|r| r.0))
    }
}
