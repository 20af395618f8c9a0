//! Template builds (`builds`) and their archives (`build_archives`).

use super::*;
use crate::error::Result;

/// A `running` build whose runner has not written for this long lost it (its control plane
/// stopped): it is failed.
pub const BUILD_STALE_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BuildRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    /// `recipe` or `dockerfile`.
    pub format: String,
    /// The recipe's or Dockerfile's text.
    pub source: String,
    pub base_template: String,
    pub healthcheck: Option<String>,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub status: String,
    pub current_step: i64,
    pub total_steps: i64,
    /// JSON: `[BuildStep]`.
    pub logs: String,
    pub error: Option<String>,
    pub capsule_id: Option<String>,
    pub default_user: String,
    pub default_workdir: String,
    /// JSON object.
    pub default_env: String,
    /// JSON array of `8000/tcp`.
    pub expose: String,
    pub actor_type: String,
    pub actor_id: String,
    pub actor_name: String,
    pub has_archive: i64,
    pub updated_at: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// 1: a platform admin's build of a platform template (`/v1/admin/builds`).
    pub platform: i64,
    /// The host running it (its build capsule's, or its image pull's), once placed.
    pub host_id: Option<String>,
}

const COLUMNS: &str = "id, team_id, name, format, source, base_template, healthcheck, vcpus, \
    memory_mb, disk_mb, status, current_step, total_steps, logs, error, capsule_id, default_user, \
    default_workdir, default_env, expose, actor_type, actor_id, actor_name, has_archive, \
    updated_at, created_at, started_at, completed_at, platform, host_id";

fn build_of(r: &sqlx::any::AnyRow) -> Result<BuildRow> {
    Ok(sqlx::FromRow::from_row(r)?)
}

/// What a running build writes after each step.
#[derive(Debug, Clone)]
pub struct BuildProgress<'a> {
    pub current_step: i64,
    pub total_steps: i64,
    pub logs: &'a str,
    pub capsule_id: Option<&'a str>,
    pub default_user: &'a str,
    pub default_workdir: &'a str,
    pub default_env: &'a str,
}

impl Db {
    /// Records a new `pending` build and its archive, at once.
    pub async fn insert_build(&self, b: &BuildRow, archive: Option<&[u8]>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO builds ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, \
             $27, $28, $29, $30)"
        ))
        .bind(&b.id)
        .bind(&b.team_id)
        .bind(&b.name)
        .bind(&b.format)
        .bind(&b.source)
        .bind(&b.base_template)
        .bind(&b.healthcheck)
        .bind(b.vcpus)
        .bind(b.memory_mb)
        .bind(b.disk_mb)
        .bind(&b.status)
        .bind(b.current_step)
        .bind(b.total_steps)
        .bind(&b.logs)
        .bind(&b.error)
        .bind(&b.capsule_id)
        .bind(&b.default_user)
        .bind(&b.default_workdir)
        .bind(&b.default_env)
        .bind(&b.expose)
        .bind(&b.actor_type)
        .bind(&b.actor_id)
        .bind(&b.actor_name)
        .bind(b.has_archive)
        .bind(b.updated_at)
        .bind(b.created_at)
        .bind(b.started_at)
        .bind(b.completed_at)
        .bind(b.platform)
        .bind(&b.host_id)
        .execute(&mut *tx)
        .await?;
        if let Some(data) = archive {
            sqlx::query("INSERT INTO build_archives (build_id, data) VALUES ($1, $2)")
                .bind(&b.id)
                .bind(data.to_vec())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Any team's builds, newest first (platform admins).
    pub async fn all_builds(&self, limit: i64) -> Result<Vec<BuildRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM builds ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(build_of).collect()
    }

    /// Build `id` of any team (platform admins).
    pub async fn any_build(&self, id: &str) -> Result<Option<BuildRow>> {
        let r = sqlx::query(&format!("SELECT {COLUMNS} FROM builds WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(build_of).transpose()
    }

    /// The team's build `id`.
    pub async fn build(&self, team_id: &str, id: &str) -> Result<Option<BuildRow>> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM builds WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(build_of).transpose()
    }

    /// The team's builds, newest first (at most `limit`).
    pub async fn builds(&self, team_id: &str, limit: i64) -> Result<Vec<BuildRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM builds WHERE team_id = $1 ORDER BY created_at DESC, id DESC \
             LIMIT $2"
        ))
        .bind(team_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(build_of).collect()
    }

    /// The team's builds that are not over yet.
    pub async fn unfinished_builds(&self, team_id: &str) -> Result<i64> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n FROM builds WHERE team_id = $1 AND status IN ('pending', 'running')",
        )
        .bind(team_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get::<i64, _>("n")?)
    }

    /// Takes the oldest `pending` build (`running` from now), if any; every replica may ask,
    /// only one gets each build.
    pub async fn claim_build(&self) -> Result<Option<BuildRow>> {
        loop {
            let r = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM builds WHERE status = 'pending' ORDER BY created_at, id LIMIT 1"
            ))
            .fetch_optional(&self.pool)
            .await?;
            let Some(r) = r else { return Ok(None) };
            let mut b = build_of(&r)?;
            let now = now_ms();
            let taken = sqlx::query(
                "UPDATE builds SET status = 'running', started_at = $2, updated_at = $2 \
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(&b.id)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if taken == 1 {
                b.status = "running".into();
                b.started_at = Some(now);
                b.updated_at = now;
                return Ok(Some(b));
            }
            // Another replica took it (or it was cancelled): look again.
        }
    }

    /// Running builds by host (`builds::hosts`): those placed, by host id, and how many are
    /// not placed yet.
    pub async fn running_builds_by_host(&self) -> Result<(HashMap<String, i64>, i64)> {
        let rows = sqlx::query(
            "SELECT host_id, COUNT(*) AS n FROM builds WHERE status = 'running' GROUP BY host_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let (mut placed, mut unplaced) = (HashMap::new(), 0);
        for r in &rows {
            let n = r.try_get::<i64, _>("n")?;
            match r.try_get::<Option<String>, _>("host_id")? {
                Some(h) => {
                    placed.insert(h, n);
                }
                None => unplaced += n,
            }
        }
        Ok((placed, unplaced))
    }

    /// The running build runs on `host`.
    pub async fn set_build_host(&self, id: &str, host: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET host_id = $2 WHERE id = $1")
            .bind(id)
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A running build back in the queue as it was (no host had room for it after all); false
    /// when it is no longer `running`.
    pub async fn requeue_build(&self, id: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE builds SET status = 'pending', started_at = NULL, host_id = NULL, \
             current_step = 0, logs = '[]', updated_at = $2 WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A running build's progress; false when it is no longer `running` (cancelled).
    pub async fn build_progress(&self, id: &str, p: &BuildProgress<'_>) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE builds SET current_step = $2, total_steps = $3, logs = $4, capsule_id = $5, \
             default_user = $6, default_workdir = $7, default_env = $8, updated_at = $9 \
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(p.current_step)
        .bind(p.total_steps)
        .bind(p.logs)
        .bind(p.capsule_id)
        .bind(p.default_user)
        .bind(p.default_workdir)
        .bind(p.default_env)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A running build is alive.
    pub async fn touch_build(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET updated_at = $2 WHERE id = $1 AND status = 'running'")
            .bind(id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The build's status now (None: no such build).
    pub async fn build_status(&self, id: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT status FROM builds WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get::<String, _>("status")).transpose()?)
    }

    /// Ends a `running` build (`success` or `failed`); false when it had ended already.
    pub async fn finish_build(&self, id: &str, status: &str, error: Option<&str>) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE builds SET status = $2, error = $3, completed_at = $4, updated_at = $4 \
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.drop_build_archive(id).await?;
        Ok(n == 1)
    }

    /// Cancels the team's build if it is not over; false when it was.
    pub async fn cancel_build(&self, team_id: &str, id: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE builds SET status = 'cancelled', error = 'cancelled', completed_at = $3, \
             updated_at = $3 WHERE team_id = $1 AND id = $2 AND status IN ('pending', 'running')",
        )
        .bind(team_id)
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Fails `running` builds no runner has written to for [`BUILD_STALE_MS`]: their
    /// control plane stopped. Returns them (their capsules are to be destroyed).
    pub async fn fail_stale_builds(&self) -> Result<Vec<BuildRow>> {
        let cutoff = now_ms() - BUILD_STALE_MS;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM builds WHERE status = 'running' AND updated_at < $1"
        ))
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        let mut failed = Vec::new();
        for r in &rows {
            let b = build_of(r)?;
            let n = sqlx::query(
                "UPDATE builds SET status = 'failed', error = $2, completed_at = $3, updated_at = $3 \
                 WHERE id = $1 AND status = 'running' AND updated_at < $4",
            )
            .bind(&b.id)
            .bind("the control plane stopped during the build; start it again")
            .bind(now_ms())
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if n == 1 {
                self.drop_build_archive(&b.id).await?;
                failed.push(b);
            }
        }
        Ok(failed)
    }

    /// Ended builds whose build capsule may still exist (its destroy failed, e.g. the control
    /// plane was stopping): the sweep destroys them.
    pub async fn builds_with_leftover_capsules(&self) -> Result<Vec<BuildRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM builds WHERE status IN ('success', 'failed', 'cancelled') \
             AND capsule_id IS NOT NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(build_of).collect()
    }

    /// The build capsule is gone.
    pub async fn clear_build_capsule(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET capsule_id = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The build's archive (a vetted tar).
    pub async fn build_archive(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let r = sqlx::query("SELECT data FROM build_archives WHERE build_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get::<Vec<u8>, _>("data")).transpose()?)
    }

    /// Deletes the build's archive; on SQLite its pages go back to the file system at once
    /// (PostgreSQL's autovacuum reuses them).
    pub async fn drop_build_archive(&self, id: &str) -> Result<()> {
        let gone = sqlx::query("DELETE FROM build_archives WHERE build_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if gone > 0 && self.cluster.is_none() {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pragma(db: &Db, name: &str) -> i64 {
        sqlx::query_scalar(&format!("PRAGMA {name}"))
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    /// A database made before auto_vacuum was set is converted at open, and a dropped
    /// archive's pages leave the file instead of staying free inside it.
    #[tokio::test]
    async fn a_dropped_archive_gives_its_pages_back_to_the_file_system() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        {
            // As an older Wrenn left it: tables, no auto_vacuum.
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            sqlx::query("CREATE TABLE older (x INTEGER)")
                .execute(&pool)
                .await
                .unwrap();
            let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(mode, 0);
            pool.close().await;
        }
        let db = Db::open(&url).await.unwrap();
        assert_eq!(pragma(&db, "auto_vacuum").await, 2, "incremental");
        let archive = vec![7u8; 8 << 20];
        sqlx::query("INSERT INTO build_archives (build_id, data) VALUES ($1, $2)")
            .bind("b1")
            .bind(&archive)
            .execute(db.pool())
            .await
            .unwrap();
        let page = pragma(&db, "page_size").await;
        let with = pragma(&db, "page_count").await;
        assert!(with * page > 8 << 20, "{with} pages of {page}");
        db.drop_build_archive("b1").await.unwrap();
        assert_eq!(db.build_archive("b1").await.unwrap(), None);
        assert_eq!(pragma(&db, "freelist_count").await, 0);
        let without = pragma(&db, "page_count").await;
        assert!(
            (with - without) * page >= 8 << 20,
            "{with} pages before, {without} after"
        );
    }
}
