//! The simulation's correctness checker, written apart from the scheduler's own code (its
//! own arithmetic over the same published [`Reserves`] numbers), so a bug in the scheduler's
//! admission shows up here instead of being agreed with:
//!
//! - every placement is of the request's scope (a BYOC team's own host, else a regular
//!   host), on an online host that is not draining and holds every requested tag, and leaves
//!   the host within what it may hand out after its reserves;
//! - every refusal comes when no host at all could have taken the request.

use wrenn_server::scheduler::{Claims, HostView, Request, Reserves};
use wrenn_types::api::hosts::HostKind;

/// What the checker found over a run. Every count but `placements` and `refusals` must be 0.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    pub placements: usize,
    pub refusals: usize,
    /// Placements that left their host over its usable capacity (any resource).
    pub overfilled: usize,
    /// Placements outside the request's scope (BYOC isolation broken, either way).
    pub out_of_scope: usize,
    /// Placements on a host lacking a requested tag.
    pub missing_tags: usize,
    /// Placements on an offline or draining host.
    pub closed_host: usize,
    /// Refusals while some host could have taken the request.
    pub wrong_refusals: usize,
}

impl Audit {
    /// Whether nothing was violated.
    pub fn clean(&self) -> bool {
        self.violations() == 0
    }

    pub fn violations(&self) -> usize {
        self.overfilled
            + self.out_of_scope
            + self.missing_tags
            + self.closed_host
            + self.wrong_refusals
    }

    /// Checks the placement of `req` on `host`, before the host takes it.
    pub fn placement(&mut self, host: &HostView, req: &Request, reserves: &Reserves) {
        self.placements += 1;
        if !scoped(host, req) {
            self.out_of_scope += 1;
        }
        if !req.tags.iter().all(|t| host.tags.contains(t)) {
            self.missing_tags += 1;
        }
        if !host.online || host.draining {
            self.closed_host += 1;
        }
        if !room(host, req, reserves) {
            self.overfilled += 1;
        }
    }

    /// Checks a refusal of `req` with the cluster as it is.
    pub fn refusal(&mut self, hosts: &[HostView], req: &Request, reserves: &Reserves) {
        self.refusals += 1;
        if hosts.iter().any(|h| admits(h, req, reserves)) {
            self.wrong_refusals += 1;
        }
    }
}

fn scoped(host: &HostView, req: &Request) -> bool {
    if req.team_is_byoc {
        host.kind == HostKind::Byoc && host.team.as_deref() == Some(req.team.as_str())
    } else {
        host.kind == HostKind::Regular && host.team.is_none()
    }
}

/// `part` percent of `of`, rounded up.
fn pct(of: u64, part: u64) -> u64 {
    (of * part).div_ceil(100)
}

/// Whether `host` stays within its usable capacity with `req` on it. A host whose machine is
/// not known (no specs) is taken at its word, as the scheduler documents.
fn room(host: &HostView, req: &Request, r: &Reserves) -> bool {
    let cap = host.capacity;
    if cap == Claims::default() {
        return true;
    }
    let u = &host.usage;
    let vcpus = (u.active.vcpus + pct(u.paused.vcpus, r.paused_vcpu_percent) + u.reserved.vcpus)
        .max(u.reported.vcpus);
    let memory = (u.active.memory_mb
        + pct(u.paused.memory_mb, r.paused_memory_percent)
        + u.reserved.memory_mb)
        .max(u.reported.memory_mb);
    let disk =
        (u.active.disk_mb + pct(u.paused.disk_mb, r.paused_disk_percent) + u.reserved.disk_mb)
            .max(u.reported.disk_mb);
    let usable_vcpus = cap.vcpus * r.vcpu_overcommit;
    let usable_memory = cap
        .memory_mb
        .saturating_sub(r.memory_mb + pct(cap.memory_mb, r.memory_percent));
    let usable_disk = cap
        .disk_mb
        .saturating_sub(r.disk_mb + pct(cap.disk_mb, r.disk_percent));
    vcpus + u64::from(req.vcpus) <= usable_vcpus
        && memory + req.memory_mb <= usable_memory
        && disk + req.disk_mb <= usable_disk
}

/// Whether `host` could take `req` right now.
fn admits(host: &HostView, req: &Request, reserves: &Reserves) -> bool {
    scoped(host, req)
        && host.online
        && !host.draining
        && req.tags.iter().all(|t| host.tags.contains(t))
        && room(host, req, reserves)
}
