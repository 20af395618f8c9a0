//! What this host tells its control plane: its machine ([`host_specs`], at registration and
//! in each heartbeat) and how full it is ([`Manager::host_load`]).

use std::collections::BTreeMap;

use wrenn_types::{
    api::hosts::{HostLoad, HostSpecs, TemplatePresence},
    CapsuleStatus,
};

use super::{
    capacity::{host_memory_bytes, meminfo_kib},
    AgentConfig, Manager,
};

const MIB: u64 = 1 << 20;

/// The data folder's file system as the agent plans on it: (size, free) bytes, both without
/// the blocks the file system keeps for root (a machine may keep much of its disk that way).
pub(super) fn disk_of(config: &AgentConfig) -> (u64, u64) {
    nix::sys::statvfs::statvfs(&config.data_dir)
        .map(|s| {
            let frag = s.fragment_size();
            let kept = s.blocks_free().saturating_sub(s.blocks_available());
            (
                s.blocks().saturating_sub(kept) * frag,
                s.blocks_available() * frag,
            )
        })
        .unwrap_or((0, 0))
}

fn cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// This machine, for an agent with `config`: architecture, cores, memory, the data folder's
/// disk, the slot range, the VMM and its accelerator.
pub fn host_specs(config: &AgentConfig) -> HostSpecs {
    let (accel, _) = wrenn_vmm::accel::detect();
    HostSpecs {
        arch: std::env::consts::ARCH.into(),
        cpu_cores: cores(),
        memory_mb: host_memory_bytes() / MIB,
        disk_mb: disk_of(config).0 / MIB,
        slots: format!("{}-{}", config.slots.start(), config.slots.end()),
        vmm: match config.backend() {
            wrenn_vmm::Backend::Qemu => "qemu".into(),
        },
        accel: accel.as_str().into(),
    }
}

/// The one-minute load average (0 when unreadable).
fn load_average() -> f32 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// `{vcpus}x{memory_mib}` of a shape snapshot's folder name (`{inputs}-{vcpus}c-{memory}m`).
fn shape_of_dir(name: &str) -> Option<String> {
    let mut parts = name.rsplit('-');
    let memory: u32 = parts.next()?.strip_suffix('m')?.parse().ok()?;
    let vcpus: u32 = parts.next()?.strip_suffix('c')?.parse().ok()?;
    Some(format!("{vcpus}x{memory}"))
}

impl Manager {
    /// This machine ([`host_specs`] of this agent's settings).
    pub fn host_specs(&self) -> HostSpecs {
        host_specs(&self.config)
    }

    /// How full the host is now: its capsules by state and what they were given, the
    /// machine's used memory and disk, its load, and the templates (with their shapes) present.
    pub fn host_load(&self) -> HostLoad {
        let mut load = HostLoad::default();
        for r in self.list() {
            match r.state {
                CapsuleStatus::Paused => load.paused += 1,
                CapsuleStatus::Stopped | CapsuleStatus::Error => continue,
                _ => {
                    load.running += 1;
                    load.vcpus_reserved += r.vcpus;
                    load.memory_mb_reserved += u64::from(r.memory_mib);
                }
            }
            load.disk_mb_reserved += u64::from(r.disk_mib);
        }
        let total = host_memory_bytes() / MIB;
        load.memory_mb_used = total.saturating_sub(meminfo_kib("MemAvailable:") / 1024);
        let (disk, free) = disk_of(&self.config);
        load.disk_mb_used = disk.saturating_sub(free) / MIB;
        load.cpu_used = load_average() / cores() as f32;
        load.buildable = self.templates.buildable_templates();
        let mut shapes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.templates.list() {
            let own = match t.kind {
                crate::templates::TemplateKind::Base => {
                    vec![format!("{}x{}", t.vcpus, t.memory_mib)]
                }
                _ => Vec::new(),
            };
            shapes.insert(t.name, own);
        }
        for (dir, _, _) in self.templates.shape_snapshots() {
            let template = dir
                .parent()
                .and_then(|p| p.parent())
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            let shape = dir
                .file_name()
                .and_then(|n| shape_of_dir(&n.to_string_lossy()));
            if let (Some(t), Some(s)) = (template, shape) {
                if let Some(list) = shapes.get_mut(&t) {
                    if !list.contains(&s) {
                        list.push(s);
                    }
                }
            }
        }
        load.templates = shapes
            .into_iter()
            .map(|(name, mut shapes)| {
                shapes.sort();
                TemplatePresence { name, shapes }
            })
            .collect();
        load
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_folders_name_their_shape() {
        assert_eq!(
            super::shape_of_dir("0123abcd4567-2c-1024m").as_deref(),
            Some("2x1024")
        );
        assert_eq!(super::shape_of_dir("x-2c"), None);
        assert_eq!(super::shape_of_dir("nonsense"), None);
    }
}
