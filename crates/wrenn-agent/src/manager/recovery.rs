//! What a start removes that nothing owns: QEMUs of capsule folders, VMM cgroups.

use std::collections::HashMap;

use crate::{capsule::Handle, netslot};

pub(super) fn kill_if_qemu_of(pid: u32, dir: &std::path::Path) {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmd).contains(&dir.display().to_string()) {
        // SAFETY: plain kill(2) of a QEMU that belongs to this capsule folder.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Kills QEMUs under `capsules_dir` that no adopted capsule owns.
pub(super) fn kill_stray_qemus(
    backend: wrenn_vmm::Backend,
    capsules_dir: &std::path::Path,
    adopted: &HashMap<String, Handle>,
) {
    let owned: Vec<u32> = adopted
        .values()
        .filter_map(|h| h.record().vmm_pid)
        .collect();
    for (pid, cmd) in backend.processes_under(capsules_dir) {
        if !owned.contains(&pid) {
            tracing::info!(pid, %cmd, "killing a stray QEMU");
            // SAFETY: plain kill(2) of a QEMU started for a capsule folder nobody owns.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Removes the VMM groups of slots in `range` that no adopted capsule holds, killing what
/// still runs in them.
pub(super) fn cleanup_cgroups(keep: &[u32], range: &std::ops::RangeInclusive<u32>) {
    for name in wrenn_vmm::cgroup::existing() {
        let Some(n) = name
            .strip_prefix(netslot::NETNS_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !range.contains(&n) || keep.contains(&n) {
            continue;
        }
        if let Some(group) = wrenn_vmm::cgroup::Cgroup::named(&name) {
            for pid in group.pids() {
                // SAFETY: plain kill(2) of a process left in an orphaned VMM group.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            tracing::info!(%name, "removing an orphaned VMM cgroup");
            group.remove();
        }
    }
}
