//! Machine shapes: which ones this host offers ([`ShapePolicy`]), their snapshots (made once
//! per shape, in a slot from the pool) and their eviction beyond the disk budget.

use std::path::{Path, PathBuf};

use wrenn_vmm::snapshot::Snapshot;

use super::{Templates, SHAPES};
use crate::{
    error::{AgentError, Result},
    netslot::SlotPool,
};

/// Which machine shapes besides a template's own this host makes snapshots of, and how much
/// disk those snapshots may take. Each new shape costs a VM boot and a kept snapshot (about
/// the guest's booted memory plus device state), so shapes come from a fixed set, and the
/// least recently used ones no capsule restores from are removed beyond the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapePolicy {
    /// vCPU counts offered (any of them with any of `memory_mib`).
    pub vcpus: Vec<u32>,
    /// Memory sizes offered, MiB.
    pub memory_mib: Vec<u32>,
    /// Most bytes all shape snapshots of this host may take before unused ones are evicted.
    pub budget_bytes: u64,
}

/// Shape snapshots used within this long are never evicted (a create that resolved one may
/// still be restoring from it).
const SHAPE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

impl Default for ShapePolicy {
    /// 1, 2, 4 or 8 vCPUs with 256 MiB to 8 GiB (powers of two): 24 shapes per template, at
    /// most 4 GiB of shape snapshots kept.
    fn default() -> ShapePolicy {
        ShapePolicy {
            vcpus: vec![1, 2, 4, 8],
            memory_mib: vec![256, 512, 1024, 2048, 4096, 8192],
            budget_bytes: 4 << 30,
        }
    }
}

impl ShapePolicy {
    /// From the agent's options: comma-separated vCPU counts and memory sizes (MiB), and the
    /// budget in MiB.
    pub fn parse(vcpus: &str, memory_mib: &str, budget_mib: u64) -> Result<ShapePolicy> {
        let list = |what: &str, s: &str| -> Result<Vec<u32>> {
            let v: Vec<u32> = s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| {
                    x.parse::<u32>().map_err(|_| AgentError::BadShapeOption {
                        option: what.into(),
                        why: format!("{x:?} is not a number"),
                    })
                })
                .collect::<Result<_>>()?;
            if v.is_empty() {
                return Err(AgentError::BadShapeOption {
                    option: what.into(),
                    why: "the list is empty".into(),
                });
            }
            Ok(v)
        };
        Ok(ShapePolicy {
            vcpus: list("shape vCPUs", vcpus)?,
            memory_mib: list("shape memory sizes", memory_mib)?,
            budget_bytes: budget_mib << 20,
        })
    }

    pub fn allows(&self, vcpus: u32, memory_mib: u32) -> bool {
        self.vcpus.contains(&vcpus) && self.memory_mib.contains(&memory_mib)
    }
}

pub(super) fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

pub(super) fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| allocated_bytes(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.blocks() * 512
    }
}

/// Records that a shape snapshot was used now (its folder's modification time: the LRU key).
pub(super) fn mark_used(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

impl Templates {
    /// The snapshot of base template `dir` with another shape, made when missing.
    pub(super) async fn shape(
        &self,
        dir: &Path,
        vcpus: u32,
        memory_mib: u32,
        pool: &SlotPool,
    ) -> Result<Snapshot> {
        let inputs = std::fs::read_to_string(dir.join("inputs.sha256")).unwrap_or_default();
        let inputs: String = inputs.trim().chars().take(12).collect();
        let shape_dir = dir
            .join(SHAPES)
            .join(format!("{inputs}-{vcpus}c-{memory_mib}m"));
        let snap = Snapshot {
            template_dir: shape_dir.clone(),
        };
        if snap.spec().is_some() {
            mark_used(&shape_dir);
            return Ok(snap);
        }
        let lock = self.making_lock(&shape_dir);
        let _making = lock.lock().await;
        if snap.spec().is_some() {
            return Ok(snap);
        }
        wrenn_vmm::files::private_dir(&dir.join(SHAPES))?;
        wrenn_vmm::files::private_dir(&shape_dir)?;
        for f in ["vmlinuz", "initrd.img", "rootfs.img"] {
            let link = shape_dir.join(f);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("../..").join(f), &link)
                    .map_err(|e| AgentError::io("linking a shape to its template", e))?;
            }
        }
        tracing::info!(template = %dir.display(), vcpus, memory_mib, "making a snapshot of a new shape");
        let slot = pool.take()?;
        let (accel, _) = wrenn_vmm::accel::detect();
        let made = crate::images::snapshot_in_slot(
            &shape_dir,
            slot,
            vcpus,
            memory_mib,
            accel,
            self.qemu.clone(),
        )
        .await;
        pool.free(slot);
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&shape_dir);
        }
        made
    }

    /// Every complete shape snapshot here: (folder, bytes on disk, last used).
    pub fn shape_snapshots(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let Ok(templates) = std::fs::read_dir(&self.images_dir) else {
            return out;
        };
        for t in templates.flatten() {
            let Ok(shapes) = std::fs::read_dir(t.path().join(SHAPES)) else {
                continue;
            };
            for s in shapes.flatten() {
                if s.file_name().to_string_lossy().starts_with('.') {
                    continue; // a shape being evicted
                }
                let dir = s.path();
                let complete = Snapshot {
                    template_dir: dir.clone(),
                }
                .spec()
                .is_some();
                if !complete {
                    continue;
                }
                let used = std::fs::metadata(&dir)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                out.push((dir.clone(), allocated_bytes(&dir), used));
            }
        }
        out
    }

    /// Removes shape snapshots, least recently used first, until all of them fit the budget:
    /// never `keep` (just resolved), one a capsule restores from, or one used in the last
    /// two minutes.
    pub fn evict_shapes(&self, keep: &Path, in_use: &(dyn Fn(&Path) -> bool + Send + Sync)) {
        let mut all = self.shape_snapshots();
        let mut total: u64 = all.iter().map(|s| s.1).sum();
        if total <= self.shapes.budget_bytes {
            return;
        }
        all.sort_by_key(|s| s.2);
        let now = std::time::SystemTime::now();
        for (dir, bytes, used) in all {
            if total <= self.shapes.budget_bytes {
                break;
            }
            let recent = now.duration_since(used).map_or(true, |d| d < SHAPE_GRACE);
            if dir == keep || recent || in_use(&dir) {
                continue;
            }
            // The making lock: nobody makes or is handed this shape while it goes.
            let lock = self.making_lock(&dir);
            let Ok(_held) = lock.try_lock() else {
                continue;
            };
            let Some(parent) = dir.parent() else { continue };
            let gone = parent.join(format!(
                ".old-{}",
                dir.file_name().unwrap_or_default().to_string_lossy()
            ));
            if std::fs::rename(&dir, &gone).is_ok() {
                let _ = std::fs::remove_dir_all(&gone);
                total = total.saturating_sub(bytes);
                tracing::info!(shape = %dir.display(), bytes, "evicted an unused shape snapshot");
            }
        }
    }
}
