//! Whether a create fits this host: its memory and disk (free now, and ever), and the shapes
//! any capsule may ask for.

use std::path::Path;

use wrenn_types::CapsuleStatus;

use super::Manager;
use crate::{
    capsule::{self, CreateSpec},
    error::{AgentError, Result},
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

impl Manager {
    /// Refuses a create that would take more memory than the host has: running capsules'
    /// RAM plus their VMMs' overhead, plus the new one, plus a reserve for the host.
    pub(super) fn check_capacity(&self, memory_mib: u32) -> Result<()> {
        self.check_capacity_for(memory_mib, 1)
    }

    /// [`Manager::check_capacity`] for `count` capsules of `memory_mib` each (a fork's
    /// children, all checked before any is made).
    pub(super) fn check_capacity_for(&self, memory_mib: u32, count: usize) -> Result<()> {
        let list = self.list();
        if list.len() + count > self.config.max_capsules {
            return Err(AgentError::CapsuleLimitReached {
                running: list.len(),
            });
        }
        let committed: u64 = list
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    CapsuleStatus::Running | CapsuleStatus::Starting | CapsuleStatus::Pending
                )
            })
            .map(|r| u64::from(r.memory_mib) + capsule::VMM_OVERHEAD_MIB)
            .sum();
        let total = host_memory_bytes() >> 20;
        let one = u64::from(memory_mib) + capsule::VMM_OVERHEAD_MIB;
        if one + HOST_RESERVE_MIB > total {
            // Never, whatever else runs: the request's fault, not the host's state.
            return Err(AgentError::MemoryNeverFits {
                memory_mib,
                total_mib: total,
                reserve_mib: HOST_RESERVE_MIB,
            });
        }
        let wanted = one * count as u64;
        if committed + wanted + HOST_RESERVE_MIB > total {
            return Err(AgentError::MemoryFull {
                wanted_mib: wanted,
                free_mib: total.saturating_sub(committed + HOST_RESERVE_MIB),
                total_mib: total,
            });
        }
        Ok(())
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
