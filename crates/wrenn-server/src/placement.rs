//! Placement: which host a new capsule goes to. The hosts a team may use (a BYOC team only its
//! own, everyone else only `regular` ones; online, not draining, with every asked tag), what
//! the database has on each (capsules and placements in flight), then a choice; the choice is
//! held by a host reservation, taken under the host's row lock after a re-check, until the
//! create ends.

use std::collections::HashMap;

use sqlx::Row;
use wrenn_types::api::hosts::{HostKind, HostStatus};

use crate::{
    db::{Db, HostRecord, HostUse},
    error::{ApiError, Result},
};

/// Kept free on every host for itself: memory 512 MB + 10 %, disk 2 GB + 10 %.
const RESERVE_MEMORY_MB: i64 = 512;
const RESERVE_DISK_MB: i64 = 2048;
/// vCPUs placed per core.
const CPU_OVERCOMMIT: i64 = 4;

/// What a capsule needs of its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
}

/// A placement to make.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub team_id: &'a str,
    /// Every one of these tags.
    pub tags: &'a [String],
    /// The template's name on the hosts: hosts that hold it are preferred.
    pub template: &'a str,
    /// Only this host (an admin's `host_id`; a snapshot template's own host).
    pub only_host: Option<&'a str>,
    /// Never this host (a move: the host the capsule leaves).
    pub except_host: Option<&'a str>,
    pub need: Need,
}

/// A chosen host, held by its reservation until [`Placed::release`] (or drop).
pub struct Placed {
    pub host: HostRecord,
    db: Db,
    reservation: Option<String>,
}

impl Placed {
    /// Inserts the capsule row placed here, ending the reservation with it.
    pub async fn insert(&mut self, c: &crate::db::CapsuleRow) -> Result<()> {
        match &self.reservation {
            Some(id) => self.db.insert_placed_capsule(c, id).await?,
            None => self.db.insert_capsule(c).await?,
        }
        self.reservation = None;
        Ok(())
    }

    /// Ends the reservation: the capsule exists now (and counts by its row), or never will.
    pub async fn release(mut self) {
        if let Some(id) = self.reservation.take() {
            release(&self.db, &id).await;
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(id) = self.reservation.take() {
            let db = self.db.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { release(&db, &id).await });
            }
        }
    }
}

async fn release(db: &Db, id: &str) {
    if let Err(e) = db.release_host_reservation(id).await {
        // It stops counting after RESERVATION_TTL_MS anyway.
        tracing::warn!(error = %e, %id, "removing a host reservation");
    }
}

/// Whether `team_id` is a BYOC team (its capsules go only to its own hosts).
pub async fn team_is_byoc(db: &Db, team_id: &str) -> Result<bool> {
    let r = sqlx::query("SELECT is_byoc FROM teams WHERE id = $1")
        .bind(team_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(match r {
        Some(r) => r.try_get::<i64, _>("is_byoc")? != 0,
        None => false,
    })
}

/// The hosts `ask` may go to (before capacity), and why there are none.
pub fn eligible<'h>(
    hosts: &'h [HostRecord],
    ask: &Ask<'_>,
    byoc: bool,
) -> std::result::Result<Vec<&'h HostRecord>, String> {
    let ours = |h: &&HostRecord| {
        if byoc {
            h.kind == HostKind::Byoc && h.team_id.as_deref() == Some(ask.team_id)
        } else {
            h.kind == HostKind::Regular
        }
    };
    let mut out: Vec<&HostRecord> = hosts.iter().filter(ours).collect();
    if let Some(only) = ask.only_host {
        out.retain(|h| h.id == only);
        if out.is_empty() {
            return Err(format!("host {only} is not a host this team may use"));
        }
    }
    if let Some(except) = ask.except_host {
        out.retain(|h| h.id != except);
        if out.is_empty() {
            return Err(format!("the team may use no host besides {except}"));
        }
    }
    out.retain(|h| h.status == HostStatus::Online);
    if out.is_empty() {
        return Err(match ask.only_host {
            Some(only) => format!("host {only} is not online"),
            None if byoc => "none of the team's own hosts is online".into(),
            None => "no host is online".into(),
        });
    }
    out.retain(|h| !h.draining);
    if out.is_empty() {
        return Err("every online host is draining".into());
    }
    out.retain(|h| ask.tags.iter().all(|t| h.tags.contains(t)));
    if out.is_empty() {
        return Err(format!(
            "no online host has the tags [{}]",
            ask.tags.join(", ")
        ));
    }
    Ok(out)
}

/// How much room `h` has left for `need` after `used` (memory fraction left, 0..1), or `None`
/// when it does not fit. A host that has not told its specs yet is taken at its word (the
/// agent refuses what does not fit).
pub fn room(h: &HostRecord, used: &HostUse, need: &Need) -> Option<f64> {
    let s = &h.specs;
    if s.memory_mb == 0 || s.cpu_cores == 0 {
        return Some(0.0);
    }
    let memory = s.memory_mb as i64;
    let memory = memory - RESERVE_MEMORY_MB - memory / 10;
    let disk = s.disk_mb as i64;
    let disk = disk - RESERVE_DISK_MB - disk / 10;
    let cpus = i64::from(s.cpu_cores) * CPU_OVERCOMMIT;
    // Paused capsules: no CPU, a quarter of their memory (it is on disk), all their disk.
    let memory_used = used.memory_mb + used.reserved_memory_mb + used.paused_memory_mb / 4;
    let disk_used = used.disk_mb + used.paused_disk_mb + used.reserved_disk_mb;
    let cpus_used = used.vcpus + used.reserved_vcpus;
    let fits = memory_used + need.memory_mb <= memory
        && disk_used + need.disk_mb <= disk
        && cpus_used + need.vcpus <= cpus;
    fits.then(|| (memory - memory_used - need.memory_mb) as f64 / memory.max(1) as f64)
}

/// Chooses a host for `ask` and reserves the room on it; `host_unavailable` saying why when
/// no host can take it.
pub async fn place(db: &Db, ask: &Ask<'_>) -> Result<Placed> {
    let byoc = team_is_byoc(db, ask.team_id).await?;
    let hosts = db.host_records().await?;
    let eligible = eligible(&hosts, ask, byoc).map_err(ApiError::HostUnavailable)?;
    // Too large for every host even empty: the request's fault, not the cluster's.
    if eligible
        .iter()
        .all(|h| room(h, &HostUse::default(), &ask.need).is_none())
    {
        return Err(ApiError::InvalidRequest(format!(
            "{} vCPUs, {} MB of memory and {} MB of disk can never fit: no host this capsule \
             may use is that large",
            ask.need.vcpus, ask.need.memory_mb, ask.need.disk_mb
        )));
    }
    let uses = db.host_uses().await?;
    let mut fitting = fitting(&eligible, &uses, ask);
    let checked = eligible.len();
    // One that filled up meanwhile (another create, another control plane) is dropped for
    // the next choice.
    while let Some(host) = pick(&mut fitting) {
        let need = (ask.need.vcpus, ask.need.memory_mb, ask.need.disk_mb);
        let held = db
            .reserve_on_host(&host.id, need, |used| room(host, used, &ask.need).is_some())
            .await?;
        if let Some(reservation) = held {
            return Ok(Placed {
                host: host.clone(),
                db: db.clone(),
                reservation: Some(reservation),
            });
        }
    }
    let tags = if ask.tags.is_empty() {
        String::new()
    } else {
        format!(" with tags [{}]", ask.tags.join(", "))
    };
    Err(ApiError::HostUnavailable(format!(
        "no online host{tags} has room for {} vCPUs, {} MB of memory and {} MB of disk \
         ({checked} checked); try a smaller shape or later",
        ask.need.vcpus, ask.need.memory_mb, ask.need.disk_mb
    )))
}

/// The hosts that fit: whether each holds the template, and the memory it has left.
fn fitting<'h>(
    eligible: &[&'h HostRecord],
    uses: &HashMap<String, HostUse>,
    ask: &Ask<'_>,
) -> Vec<(bool, f64, &'h HostRecord)> {
    eligible
        .iter()
        .filter_map(|h| {
            let used = uses.get(&h.id).copied().unwrap_or_default();
            let left = room(h, &used, &ask.need)?;
            let holds = h.load.templates.iter().any(|t| t.name == ask.template);
            Some((holds, left, *h))
        })
        .collect()
}

/// Takes a host out of `fitting`: among those holding the template (all, if none does), the
/// roomier of two drawn at random. Random draws keep concurrent creates, which all see the
/// same loads, from piling onto the one host that looked emptiest.
fn pick<'h>(fitting: &mut Vec<(bool, f64, &'h HostRecord)>) -> Option<&'h HostRecord> {
    let holders: Vec<usize> = (0..fitting.len()).filter(|&i| fitting[i].0).collect();
    let pool: Vec<usize> = if holders.is_empty() {
        (0..fitting.len()).collect()
    } else {
        holders
    };
    if pool.is_empty() {
        return None;
    }
    let (a, b) = (
        pool[random_below(pool.len())],
        pool[random_below(pool.len())],
    );
    let best = if fitting[b].1 > fitting[a].1 { b } else { a };
    Some(fitting.swap_remove(best).2)
}

/// A random number in `0..n` (`n` > 0).
fn random_below(n: usize) -> usize {
    let mut bytes = [0u8; 8];
    // Without the system's randomness the first is as good a choice as any.
    if getrandom::fill(&mut bytes).is_err() {
        return 0;
    }
    (u64::from_le_bytes(bytes) % n as u64) as usize
}
