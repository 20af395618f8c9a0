//! What routing and placement read of the hosts: where each host is reached, what it holds,
//! the capsules and reservations on it; the built-in host; heartbeats (one SQL for the REST
//! heartbeat and the built-in host's).

use sqlx::Row;
use wrenn_types::{
    api::hosts::{HostKind, HostLoad, HostSpecs, HostStatus},
    CapsuleStatus, Id, IdKind,
};

use super::*;
use crate::{
    error::{ApiError, Result},
    scheduler::{Claims, HostUsage},
};

/// Reservations older than this are ignored (a create that never ended).
pub const RESERVATION_TTL_MS: i64 = 15 * 60 * 1000;

/// A host as routing and placement see it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord {
    pub id: String,
    pub kind: HostKind,
    /// The owning team of a `byoc` host.
    pub team_id: Option<String>,
    pub status: HostStatus,
    pub draining: bool,
    pub builtin: bool,
    /// `host:port`, `https://…`, `http://…` or `unix:/path`.
    pub address: String,
    pub specs: HostSpecs,
    pub load: HostLoad,
    pub last_heartbeat_at: Option<i64>,
    /// The SHA-256 of the certificate the control plane issued it last: a new one means a
    /// new client (the old connection may still trust the old certificate).
    pub cert_fingerprint: Option<String>,
    pub tags: Vec<String>,
}

/// Count and sums of a group of capsules (`n`, `v`, `m`, `d`).
const CAPSULE_SUMS: &str = "COUNT(*) AS n, CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS v, \
     CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) AS m, \
     CAST(COALESCE(SUM(disk_size_mb), 0) AS BIGINT) AS d";
/// Count and sums of a group of reservations (`n`, `v`, `m`, `d`).
const RESERVED_SUMS: &str = "COUNT(*) AS n, CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS v, \
     CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) AS m, \
     CAST(COALESCE(SUM(disk_mb), 0) AS BIGINT) AS d";

/// Capsules (of `capsules`) that were running at their host's last heartbeat and have
/// stopped, failed or paused since (`$1`–`$3`: those statuses): the heartbeat's figures still
/// hold them.
const RELEASED_SINCE_HEARTBEAT: &str = "status IN ($1, $2, $3) \
     AND updated_at > (SELECT h.last_heartbeat_at FROM hosts h WHERE h.id = capsules.host_id) \
     AND COALESCE(started_at, created_at) <= \
     (SELECT h.last_heartbeat_at FROM hosts h WHERE h.id = capsules.host_id)";

const HOST_COLUMNS: &str = "id, kind, team_id, status, draining, builtin, address, arch, \
     cpu_cores, memory_mb, disk_mb, slots, vmm, accel, load, last_heartbeat_at, cert_fingerprint";

fn host_of(r: &sqlx::any::AnyRow) -> Result<HostRecord> {
    let bad = |what: &str, e: wrenn_types::ParseError| {
        ApiError::Internal(format!("a host's stored {what}: {e}"))
    };
    let kind: String = r.try_get("kind")?;
    let status: String = r.try_get("status")?;
    let load: String = r.try_get("load")?;
    let n = |col: &str| -> Result<i64> { Ok(r.try_get::<i64, _>(col)?) };
    Ok(HostRecord {
        id: r.try_get("id")?,
        kind: kind.parse().map_err(|e| bad("kind", e))?,
        team_id: r.try_get("team_id")?,
        status: status.parse().map_err(|e| bad("status", e))?,
        draining: n("draining")? != 0,
        builtin: n("builtin")? != 0,
        address: r.try_get("address")?,
        specs: HostSpecs {
            arch: r.try_get("arch")?,
            cpu_cores: n("cpu_cores")?.clamp(0, u32::MAX.into()) as u32,
            memory_mb: n("memory_mb")?.max(0) as u64,
            disk_mb: n("disk_mb")?.max(0) as u64,
            slots: r.try_get("slots")?,
            vmm: r.try_get("vmm")?,
            accel: r.try_get("accel")?,
        },
        // A load this server cannot read is no load (the next heartbeat writes a new one).
        load: serde_json::from_str(&load).unwrap_or_default(),
        last_heartbeat_at: r.try_get("last_heartbeat_at")?,
        cert_fingerprint: r.try_get("cert_fingerprint")?,
        tags: Vec::new(),
    })
}

impl Db {
    /// A host (any status), with its tags, or `None`.
    pub async fn host_record(&self, id: &str) -> Result<Option<HostRecord>> {
        let Some(r) = sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut host = host_of(&r)?;
        host.tags = sqlx::query("SELECT tag FROM host_tags WHERE host_id = $1 ORDER BY tag")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("tag"))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Some(host))
    }

    /// The built-in host's id, if there is one.
    pub async fn builtin_host_id(&self) -> Result<Option<String>> {
        let r = sqlx::query("SELECT id FROM hosts WHERE builtin = 1 ORDER BY created_at")
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get("id")).transpose()?)
    }

    /// Every registered host (not `pending`), with its tags, by id.
    pub async fn host_records(&self) -> Result<Vec<HostRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE status <> $1 ORDER BY id"
        ))
        .bind(HostStatus::Pending.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut hosts = rows.iter().map(host_of).collect::<Result<Vec<_>>>()?;
        let mut tags: HashMap<String, Vec<String>> = HashMap::new();
        for r in sqlx::query("SELECT host_id, tag FROM host_tags ORDER BY tag")
            .fetch_all(&self.pool)
            .await?
        {
            tags.entry(r.try_get("host_id")?)
                .or_default()
                .push(r.try_get("tag")?);
        }
        for h in &mut hosts {
            h.tags = tags.remove(&h.id).unwrap_or_default();
        }
        Ok(hosts)
    }

    /// What the database puts on each host (hosts with nothing on them are left out).
    pub async fn host_uses(&self) -> Result<HashMap<String, HostUsage>> {
        let mut uses: HashMap<String, HostUsage> = HashMap::new();
        for r in sqlx::query(&format!(
            "SELECT host_id, status, {CAPSULE_SUMS} FROM capsules \
             WHERE host_id IS NOT NULL AND status NOT IN ($1, $2) GROUP BY host_id, status"
        ))
        .bind(CapsuleStatus::Stopped.as_str())
        .bind(CapsuleStatus::Error.as_str())
        .fetch_all(&self.pool)
        .await?
        {
            let host: String = r.try_get("host_id")?;
            let status: String = r.try_get("status")?;
            add_capsules(uses.entry(host).or_default(), &status, &r)?;
        }
        for r in sqlx::query(&format!(
            "SELECT host_id, {RESERVED_SUMS} FROM host_reservations WHERE created_at > $1 GROUP BY host_id"
        ))
        .bind(now_ms() - RESERVATION_TTL_MS)
        .fetch_all(&self.pool)
        .await?
        {
            let host: String = r.try_get("host_id")?;
            add_reserved(uses.entry(host).or_default(), &r)?;
        }
        let sql = format!(
            "SELECT host_id, {CAPSULE_SUMS} FROM capsules \
             WHERE host_id IS NOT NULL AND {RELEASED_SINCE_HEARTBEAT} GROUP BY host_id"
        );
        for r in released_query(&sql).fetch_all(&self.pool).await? {
            let host: String = r.try_get("host_id")?;
            add_released(uses.entry(host).or_default(), &r)?;
        }
        Ok(uses)
    }

    /// Reserves `vcpus`/`memory_mb`/`disk_mb` on `host_id` if `fits` says the host still has
    /// room once its current use (re-read under the host's row lock, so concurrent placements on
    /// any control plane see each other) is known. The reservation's id, or `None` (no room).
    pub async fn reserve_on_host(
        &self,
        host_id: &str,
        need: Claims,
        fits: impl FnOnce(&HostUsage) -> bool,
    ) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        // The host's row lock until commit (PostgreSQL; SQLite has one writer anyway).
        let locked = sqlx::query("UPDATE hosts SET draining = draining WHERE id = $1")
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Ok(None);
        }
        let mut used = HostUsage::default();
        for r in sqlx::query(&format!(
            "SELECT status, {CAPSULE_SUMS} FROM capsules \
             WHERE host_id = $1 AND status NOT IN ($2, $3) GROUP BY status"
        ))
        .bind(host_id)
        .bind(CapsuleStatus::Stopped.as_str())
        .bind(CapsuleStatus::Error.as_str())
        .fetch_all(&mut *tx)
        .await?
        {
            let status: String = r.try_get("status")?;
            add_capsules(&mut used, &status, &r)?;
        }
        if let Some(r) = sqlx::query(&format!(
            "SELECT {RESERVED_SUMS} \
             FROM host_reservations WHERE host_id = $1 AND created_at > $2"
        ))
        .bind(host_id)
        .bind(now_ms() - RESERVATION_TTL_MS)
        .fetch_optional(&mut *tx)
        .await?
        {
            add_reserved(&mut used, &r)?;
        }
        let sql = format!(
            "SELECT {CAPSULE_SUMS} FROM capsules WHERE host_id = $4 AND {RELEASED_SINCE_HEARTBEAT}"
        );
        if let Some(r) = released_query(&sql)
            .bind(host_id)
            .fetch_optional(&mut *tx)
            .await?
        {
            add_released(&mut used, &r)?;
        }
        if !fits(&used) {
            return Ok(None);
        }
        let id = Id::new(IdKind::Host)
            .to_string()
            .replacen("host-", "rsv-", 1);
        sqlx::query(
            "INSERT INTO host_reservations (id, host_id, vcpus, memory_mb, disk_mb, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(host_id)
        .bind(need.vcpus as i64)
        .bind(need.memory_mb as i64)
        .bind(need.disk_mb as i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Inserts capsule row `c` and ends the host reservation `reservation` that held its room,
    /// at once and under the host's row lock (a placement re-reading the host's use sees the
    /// room counted once, never twice nor not at all).
    pub async fn insert_placed_capsule(&self, c: &CapsuleRow, reservation: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE hosts SET draining = draining WHERE id = $1")
            .bind(&c.host_id)
            .execute(&mut *tx)
            .await?;
        capsules::insert_capsule_on(&mut tx, c).await?;
        sqlx::query("DELETE FROM host_reservations WHERE id = $1")
            .bind(reservation)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a placement in flight (its capsule exists now, or never will).
    pub async fn release_host_reservation(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM host_reservations WHERE id = $1 OR created_at <= $2")
            .bind(id)
            .bind(now_ms() - RESERVATION_TTL_MS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The built-in host's id: its row made on first call (kind `regular`, `builtin`, online,
    /// reached at `address`), kept after; its address is `address` from now on. Capsules from
    /// before hosts (`host_id IS NULL`) are its.
    pub async fn ensure_builtin_host(&self, address: &str) -> Result<String> {
        let now = now_ms();
        let id = match self.builtin_host_id().await? {
            Some(id) => {
                sqlx::query("UPDATE hosts SET address = $1, updated_at = $2 WHERE id = $3")
                    .bind(address)
                    .bind(now)
                    .bind(&id)
                    .execute(&self.pool)
                    .await?;
                id
            }
            None => {
                let id = Id::new(IdKind::Host).to_string();
                sqlx::query(
                    "INSERT INTO hosts (id, kind, status, builtin, address, created_by, \
                     created_at, updated_at) VALUES ($1, $2, $3, 1, $4, $5, $6, $7)",
                )
                .bind(&id)
                .bind(HostKind::Regular.as_str())
                .bind(HostStatus::Online.as_str())
                .bind(address)
                .bind(BOOTSTRAP_ACTOR)
                .bind(now)
                .bind(now)
                .execute(&self.pool)
                .await?;
                id
            }
        };
        sqlx::query("UPDATE capsules SET host_id = $1 WHERE host_id IS NULL")
            .bind(&id)
            .execute(&self.pool)
            .await?;
        sqlx::query("UPDATE templates SET host_id = $1 WHERE host_id IS NULL")
            .bind(&id)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// A heartbeat: the host's specs and load now, `last_heartbeat_at` now, and `online`.
    /// Whether it was `unreachable` until now (it came back: `host.up`). A host that is
    /// `pending` or gone is left alone (`None`).
    pub async fn record_heartbeat(
        &self,
        host_id: &str,
        specs: &HostSpecs,
        load: &HostLoad,
    ) -> Result<Option<bool>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let came_back = sqlx::query(
            "UPDATE hosts SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(HostStatus::Online.as_str())
        .bind(now)
        .bind(host_id)
        .bind(HostStatus::Unreachable.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let done = sqlx::query(
            "UPDATE hosts SET arch = $1, cpu_cores = $2, memory_mb = $3, disk_mb = $4, \
             slots = $5, vmm = $6, accel = $7, load = $8, last_heartbeat_at = $9 \
             WHERE id = $10 AND status = $11",
        )
        .bind(&specs.arch)
        .bind(i64::from(specs.cpu_cores))
        .bind(specs.memory_mb.min(i64::MAX as u64) as i64)
        .bind(specs.disk_mb.min(i64::MAX as u64) as i64)
        .bind(&specs.slots)
        .bind(&specs.vmm)
        .bind(&specs.accel)
        .bind(serde_json::to_string(load).unwrap_or_else(|_| "{}".into()))
        .bind(now)
        .bind(host_id)
        .bind(HostStatus::Online.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0).then_some(came_back))
    }

    /// A host's capsules that are not stopped (for its reconciler).
    pub async fn live_capsules_on(&self, host_id: &str) -> Result<Vec<CapsuleRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM capsules WHERE host_id = $1 AND status <> $2",
            capsules::CAPSULE_COLUMNS
        ))
        .bind(host_id)
        .bind(CapsuleStatus::Stopped.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(capsules::capsule_of).collect()
    }
}

/// Adds a `(status, n, v, m, d)` row of capsule sums to `used`.
fn add_capsules(used: &mut HostUsage, status: &str, r: &sqlx::any::AnyRow) -> Result<()> {
    let status: CapsuleStatus = status
        .parse()
        .map_err(|e| ApiError::Internal(format!("a capsule's stored status: {e}")))?;
    used.count_group(status, sums(r)?, group_size(r)?);
    Ok(())
}

fn add_reserved(used: &mut HostUsage, r: &sqlx::any::AnyRow) -> Result<()> {
    used.reserved = used.reserved.plus(sums(r)?);
    used.capsules += group_size(r)?;
    Ok(())
}

/// `sql` (over [`RELEASED_SINCE_HEARTBEAT`]; its own parameters start at `$4`) with the
/// statuses bound.
fn released_query(sql: &str) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql)
        .bind(CapsuleStatus::Stopped.as_str())
        .bind(CapsuleStatus::Error.as_str())
        .bind(CapsuleStatus::Paused.as_str())
}

/// Adds a sums row of capsules released since the heartbeat: their vCPUs and memory (the
/// disk a heartbeat reports is measured, not summed).
fn add_released(used: &mut HostUsage, r: &sqlx::any::AnyRow) -> Result<()> {
    let s = sums(r)?;
    used.released = used.released.plus(Claims::new(s.vcpus, s.memory_mb, 0));
    Ok(())
}

/// The row count of a sums row (`n`).
fn group_size(r: &sqlx::any::AnyRow) -> Result<u64> {
    Ok(r.try_get::<i64, _>("n")?.max(0) as u64)
}

/// The vCPUs, memory and disk of a sums row (`v`, `m`, `d`; SUM of no rows is NULL: 0).
fn sums(r: &sqlx::any::AnyRow) -> Result<Claims> {
    let get =
        |c: &str| -> Result<u64> { Ok(r.try_get::<Option<i64>, _>(c)?.unwrap_or(0).max(0) as u64) };
    Ok(Claims::new(get("v")?, get("m")?, get("d")?))
}
