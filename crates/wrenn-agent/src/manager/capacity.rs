//! Whether a create fits this host: its memory (a budget the caches yield to) and disk (free
//! now, and ever), and the shapes any capsule may ask for.

use std::{
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use wrenn_types::CapsuleStatus;

use super::Manager;
use crate::{
    capsule::{self, CreateSpec},
    error::{AgentError, Result},
    record::CapsuleRecord,
};

/// Memory the host keeps for itself: creates that would leave less are refused.
const HOST_RESERVE_MIB: u64 = 512;
/// Free disk a create needs beyond the capsule's memory file: its disk overlay's first
/// writes, its records and logs.
const CREATE_DISK_MARGIN_MIB: u64 = 64;

/// Disk the host keeps free under the capsules folder: 5% of the filesystem, at most 2 GiB.
fn disk_reserve(total: u64) -> u64 {
    (total / 20).min(2 << 30)
}

/// Bytes a file takes on disk (0 when missing).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// How much memory capsules may commit: their RAM plus [`capsule::VMM_OVERHEAD_MIB`] each,
/// VMMs kept by paused capsules and warm machines counted like running capsules.
#[derive(Default)]
pub(crate) struct MemoryBudget {
    /// MiB; 0: the host's memory less [`HOST_RESERVE_MIB`].
    limit_mib: AtomicU64,
}

impl MemoryBudget {
    fn mib(&self) -> u64 {
        match self.limit_mib.load(Ordering::Relaxed) {
            0 => (host_memory_bytes() >> 20).saturating_sub(HOST_RESERVE_MIB),
            n => n,
        }
    }
}

/// What a VMM of `memory_mib` commits.
fn committed_by(memory_mib: u32) -> u64 {
    u64::from(memory_mib) + capsule::VMM_OVERHEAD_MIB
}

impl Manager {
    /// Sets the memory capsules may commit, MiB (0: the host's memory less 512 MiB). Above
    /// the host's memory it overcommits: what the guests touch must then fit. Caches beyond
    /// it end now.
    pub async fn set_capsule_memory_mib(&self, mib: u64) {
        self.memory.limit_mib.store(mib, Ordering::Relaxed);
        while self.committed_mib(&self.list(), true) > self.memory.mib()
            && self.end_one_cache().await
        {}
    }

    /// The memory capsules may commit, MiB ([`Manager::set_capsule_memory_mib`]).
    pub fn capsule_memory_mib(&self) -> u64 {
        self.memory.mib()
    }

    /// Memory committed now: running capsules (of `list`, this host's), and with `caches`
    /// kept VMMs and warm machines.
    fn committed_mib(&self, list: &[CapsuleRecord], caches: bool) -> u64 {
        let running: u64 = list
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    CapsuleStatus::Running | CapsuleStatus::Starting | CapsuleStatus::Pending
                )
            })
            .map(|r| committed_by(r.memory_mib))
            .sum();
        if !caches {
            return running;
        }
        let kept: u64 = self
            .kept
            .ids()
            .iter()
            .filter_map(|id| self.handle(id).ok())
            .map(|h| committed_by(h.record().memory_mib))
            .sum();
        let warm: u64 = self.pool.memory_mibs().into_iter().map(committed_by).sum();
        running + kept + warm
    }

    /// Refuses `count` new capsules of `memory_mib` each (a fork's children are checked
    /// together, before any is made) beyond the host's capsule limit or memory budget. See
    /// [`Manager::make_room`] for the caller that lets caches yield first.
    pub(super) fn check_capacity_for(&self, memory_mib: u32, count: usize) -> Result<()> {
        self.check_room(memory_mib, count, count, true)
    }

    /// Whether a create could fit with every cache ended (checked before its shape is made;
    /// caches end only once a warm machine of it had its chance).
    pub(super) fn check_capacity_without_caches(&self, memory_mib: u32) -> Result<()> {
        self.check_room(memory_mib, 1, 1, false)
    }

    /// Room for `count` VMMs of `memory_mib` each, `new` of them new capsules (a resume's is
    /// counted among the capsules already).
    fn check_room(&self, memory_mib: u32, count: usize, new: usize, caches: bool) -> Result<()> {
        let list = self.list();
        let live = list.len();
        if live + new > self.config.max_capsules {
            return Err(AgentError::CapsuleLimitReached { running: live });
        }
        let budget = self.memory.mib();
        let one = committed_by(memory_mib);
        if one > budget {
            // Never, whatever else runs: the request's fault, not the host's state.
            return Err(AgentError::MemoryNeverFits {
                memory_mib,
                budget_mib: budget,
                overhead_mib: capsule::VMM_OVERHEAD_MIB,
            });
        }
        let wanted = one * count as u64;
        let committed = self.committed_mib(&list, caches);
        if committed + wanted > budget {
            return Err(AgentError::MemoryFull {
                wanted_mib: wanted,
                free_mib: budget.saturating_sub(committed),
                budget_mib: budget,
            });
        }
        Ok(())
    }

    /// [`Manager::check_capacity_for`], ending caches while memory is what is short: the
    /// oldest kept VMM first (its capsule resumes from its files), then warm machines. Work
    /// always comes before what only speeds it up.
    pub(super) async fn make_room(&self, memory_mib: u32, count: usize) -> Result<()> {
        self.make_room_for(memory_mib, count, count).await
    }

    /// [`Manager::make_room`] for a paused capsule's VMM (it is among the capsules already).
    pub(super) async fn make_room_to_resume(&self, memory_mib: u32) -> Result<()> {
        self.make_room_for(memory_mib, 1, 0).await
    }

    async fn make_room_for(&self, memory_mib: u32, count: usize, new: usize) -> Result<()> {
        // Caches end only if ending them all would make the room.
        self.check_room(memory_mib, count, new, false)?;
        loop {
            match self.check_room(memory_mib, count, new, true) {
                Err(AgentError::MemoryFull { .. }) if self.end_one_cache().await => {}
                checked => return checked,
            }
        }
    }

    /// Ends one cache holding memory; false when there is none.
    async fn end_one_cache(&self) -> bool {
        if let Some(id) = self.kept.pop_oldest() {
            tracing::info!(%id, "memory is short: ending a paused capsule's kept VMM");
            self.release_all(vec![id]).await;
            return true;
        }
        match self.pool.pop_any() {
            Some(w) => {
                tracing::info!(id = %w.id, "memory is short: ending a warm machine");
                self.discard_warm(w).await;
                true
            }
            None => false,
        }
    }

    /// Refuses a create whose disk and memory file (allocated in full at create, so a full disk
    /// can never fault a running guest's RAM) could not be written in full on the
    /// filesystem that holds capsule folders (`statvfs` of it, so what anything else on the
    /// host uses counts too). Every live capsule may still grow its overlay to its disk size
    /// and its memory file to its RAM: that promised growth counts as used. A request larger
    /// than the whole filesystem is `invalid_argument` (it can never fit); one that does not
    /// fit now is `insufficient_storage` (507; it may fit once capsules go).
    pub(super) fn check_disk(&self, disk_bytes: u64, memory_mib: u32) -> Result<()> {
        let dir = self.config.data_dir.join("capsules");
        let st = nix::sys::statvfs::statvfs(&dir)
            .map_err(|e| AgentError::io("reading the free disk space", std::io::Error::from(e)))?;
        let total = st.blocks() * st.fragment_size();
        let free = st.blocks_available() * st.fragment_size();
        let reserve = disk_reserve(total);
        let wanted = disk_bytes + ((u64::from(memory_mib) + CREATE_DISK_MARGIN_MIB) << 20);
        let mib = |b: u64| b >> 20;
        if wanted + reserve > total {
            return Err(AgentError::DiskNeverFits {
                disk_mib: mib(disk_bytes),
                memory_mib,
                capacity_mib: mib(total.saturating_sub(reserve)),
            });
        }
        let promised: u64 = self
            .list()
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    CapsuleStatus::Running
                        | CapsuleStatus::Paused
                        | CapsuleStatus::Starting
                        | CapsuleStatus::Pending
                )
            })
            .map(|r| {
                let d = dir.join(&r.id);
                (u64::from(r.disk_mib) << 20).saturating_sub(allocated(&d.join("disk.qcow2")))
                    + (u64::from(r.memory_mib) << 20).saturating_sub(allocated(&d.join("memory")))
            })
            .sum();
        if promised + wanted + reserve > free {
            return Err(AgentError::HostDiskFull {
                wanted_mib: mib(wanted),
                free_mib: mib(free.saturating_sub(promised + reserve)),
            });
        }
        Ok(())
    }
}

pub(super) fn host_memory_bytes() -> u64 {
    meminfo_kib("MemTotal:") * 1024
}

/// A `/proc/meminfo` field in KiB (0 when unreadable).
pub(super) fn meminfo_kib(field: &str) -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// The shapes a capsule may ask for (0 everywhere: the template's).
pub(super) fn validate_shape(spec: &CreateSpec) -> Result<()> {
    let bad = |m: String| Err(AgentError::BadShape(m));
    if spec.vcpus > 32 {
        return bad(format!("vcpus must be 1..=32, not {}", spec.vcpus));
    }
    if spec.memory_mib != 0 && !(128..=65_536).contains(&spec.memory_mib) {
        return bad(format!(
            "memory_mib must be 128..=65536, not {}",
            spec.memory_mib
        ));
    }
    if !spec.memory_mib.is_multiple_of(2) {
        return bad(format!("memory_mib must be even, not {}", spec.memory_mib));
    }
    if spec.disk_mib > 1 << 20 {
        return bad(format!(
            "disk_mib must be at most 1 TiB, not {}",
            spec.disk_mib
        ));
    }
    Ok(())
}
