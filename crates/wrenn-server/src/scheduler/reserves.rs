//! Admission: how much of a host the scheduler may fill ([`Reserves`]) and how much of it is
//! taken ([`Reserves::used`]).

use super::view::{Claims, HostView};

/// What each host keeps back, and how paused capsules count. The defaults:
///
/// - memory: 512 MB + 10 % of the machine stay free for the host itself (the agent, QEMU's
///   own overhead, the page cache the snapshots are read through);
/// - disk: 2 GB + 10 % stay free (templates fetched on demand, memory files of pauses);
/// - CPU: up to 4 vCPUs per core are handed out (capsules idle most of the time);
/// - a paused capsule counts 0 CPU, 25 % of its memory (its memory file is on disk, but a
///   resume needs the RAM back soon) and 100 % of its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserves {
    pub memory_mb: u64,
    pub memory_percent: u64,
    pub disk_mb: u64,
    pub disk_percent: u64,
    /// vCPUs handed out per core.
    pub vcpu_overcommit: u64,
    /// How much of a paused capsule's memory counts, in percent.
    pub paused_memory_percent: u64,
    /// How much of a paused capsule's vCPUs count, in percent.
    pub paused_vcpu_percent: u64,
    /// How much of a paused capsule's disk counts, in percent.
    pub paused_disk_percent: u64,
}

impl Default for Reserves {
    fn default() -> Reserves {
        Reserves {
            memory_mb: 512,
            memory_percent: 10,
            disk_mb: 2048,
            disk_percent: 10,
            vcpu_overcommit: 4,
            paused_memory_percent: 25,
            paused_vcpu_percent: 0,
            paused_disk_percent: 100,
        }
    }
}

const fn percent(of: u64, p: u64) -> u64 {
    // Rounded up: a reserve or a paused capsule never counts for less than its share.
    (of.saturating_mul(p)).div_ceil(100)
}

impl Reserves {
    /// What may be handed out on a machine of `capacity`.
    pub const fn usable(&self, capacity: Claims) -> Claims {
        let keep_mem = self
            .memory_mb
            .saturating_add(percent(capacity.memory_mb, self.memory_percent));
        let keep_disk = self
            .disk_mb
            .saturating_add(percent(capacity.disk_mb, self.disk_percent));
        Claims {
            vcpus: capacity.vcpus.saturating_mul(self.vcpu_overcommit),
            memory_mb: capacity.memory_mb.saturating_sub(keep_mem),
            disk_mb: capacity.disk_mb.saturating_sub(keep_disk),
        }
    }

    /// What is taken on `host`: the database's active capsules, its paused ones (weighted)
    /// and the in-flight reservations, or what the host reported (less what has been released
    /// since) if that is more (resource by resource).
    pub fn used(&self, host: &HostView) -> Claims {
        let u = &host.usage;
        let paused = Claims {
            vcpus: percent(u.paused.vcpus, self.paused_vcpu_percent),
            memory_mb: percent(u.paused.memory_mb, self.paused_memory_percent),
            disk_mb: percent(u.paused.disk_mb, self.paused_disk_percent),
        };
        let ours = u.active.plus(paused).plus(u.reserved);
        ours.max(u.reported.minus(u.released))
    }

    /// Whether `need` fits on `host` with its reserves kept (always, when its machine is not
    /// known yet: its agent decides).
    pub fn admits(&self, host: &HostView, need: Claims) -> bool {
        host.capacity_unknown() || (self.free(host).covers(need) && host.has_free_slot())
    }

    /// What is still free on `host` (never below zero).
    pub fn free(&self, host: &HostView) -> Claims {
        self.usable(host.capacity).minus(self.used(host))
    }

    /// How full `host` would be with `add` on it: the largest used fraction over the three
    /// resources (0 = empty, 1 = full; above 1 when it does not fit). A host with none of a
    /// resource usable counts as full of it; a host whose machine is not known as full.
    pub fn fill_after(&self, host: &HostView, add: Claims) -> f64 {
        if host.capacity_unknown() {
            return 1.0;
        }
        let usable = self.usable(host.capacity);
        let used = self.used(host).plus(add);
        let frac = |used: u64, usable: u64| -> f64 {
            if usable == 0 {
                if used == 0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                used as f64 / usable as f64
            }
        };
        frac(used.vcpus, usable.vcpus)
            .max(frac(used.memory_mb, usable.memory_mb))
            .max(frac(used.disk_mb, usable.disk_mb))
    }
}
