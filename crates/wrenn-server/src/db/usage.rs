//! Usage samples.

use sqlx::Row;

use super::*;
use crate::error::Result;

/// How often usage is sampled.
pub const USAGE_SAMPLE_SECS: i64 = 10;

impl Db {
    /// Records what a team runs now (one sample covers [`USAGE_SAMPLE_SECS`]).
    pub async fn record_usage(
        &self,
        team_id: &str,
        running: i64,
        vcpus: i64,
        memory_mb: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO usage_samples (team_id, sampled_at, running, vcpus, memory_mb) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(team_id)
        .bind(now_ms())
        .bind(running)
        .bind(vcpus)
        .bind(memory_mb)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A team's samples since `since_ms`, oldest first: (at, running, vcpus, memory_mb).
    pub async fn usage_samples(
        &self,
        team_id: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, i64, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT sampled_at, running, vcpus, memory_mb FROM usage_samples \
             WHERE team_id = $1 AND sampled_at >= $2 ORDER BY sampled_at",
        )
        .bind(team_id)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("sampled_at")?,
                    r.try_get("running")?,
                    r.try_get("vcpus")?,
                    r.try_get("memory_mb")?,
                ))
            })
            .collect()
    }
}
