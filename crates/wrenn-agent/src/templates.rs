//! The templates of this host, and which snapshot a create restores.
//!
//! - **Base templates** are built from the recipe (`images/<name>/`, see [`crate::images`]);
//!   their ready snapshot has the shape they were built with. A create asking for another
//!   vCPU count or memory size gets a snapshot of that shape, made on first use and kept in
//!   `images/<name>/shapes/<inputs>-<v>c-<m>m/` (`<inputs>` ties it to the image it was made
//!   from, so a rebuilt image never restores an old shape).
//! - **Snapshot templates** are made from a capsule (`images/<name>/` with `template.json`): its
//!   memory, device state and flattened disk. Their capsules have the source capsule's shape.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use wrenn_vmm::snapshot::{Snapshot, SnapshotSpec};

use crate::{
    error::{AgentError, Result},
    netslot::SlotPool,
};

/// The file that marks a snapshot template.
const META: &str = "template.json";
const SHAPES: &str = "shapes";

/// Where a template came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateKind {
    #[default]
    Base,
    Snapshot,
}

/// What a snapshot template remembers (`template.json`, root-only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TemplateMeta {
    pub base: String,
    pub from_capsule: String,
    pub created_at_unix: i64,
    /// The source capsule's envd token: the snapshot's envd asks for it until a new capsule's
    /// `/init` sets that capsule's own.
    pub envd_token: String,
}

/// One template as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    pub name: String,
    pub kind: TemplateKind,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The disk size its capsules start with.
    pub disk_bytes: u64,
    /// Bytes the template takes on this host's disk.
    pub size_bytes: u64,
    pub created_at_unix: i64,
    /// The base template a snapshot template descends from.
    pub base: Option<String>,
}

/// The snapshot one create restores.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub snapshot: Snapshot,
    pub spec: SnapshotSpec,
    /// The size of the snapshot's disk: the smallest disk its capsules can have.
    pub disk_bytes: u64,
    /// The token the snapshot's envd already holds (snapshot templates only).
    pub envd_token: Option<String>,
}

/// A capsule's files, to be made into a snapshot template.
#[derive(Debug, Clone)]
pub struct SnapshotSource {
    pub capsule_id: String,
    pub base: String,
    /// The template folder the capsule was restored from (for its kernel and initrd).
    pub restored_from: PathBuf,
    pub memory: PathBuf,
    pub state: PathBuf,
    /// The capsule's qcow2 disk.
    pub disk: PathBuf,
    pub spec: SnapshotSpec,
    pub envd_token: String,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

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
                    x.parse::<u32>().map_err(|_| {
                        AgentError::InvalidArgument(format!("{what}: {x:?} is not a number"))
                    })
                })
                .collect::<Result<_>>()?;
            if v.is_empty() {
                return Err(AgentError::InvalidArgument(format!(
                    "{what}: the list is empty"
                )));
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

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

fn allocated_bytes(path: &Path) -> u64 {
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
fn mark_used(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn random_suffix() -> Result<String> {
    Ok(wrenn_types::secret::hex(4)?)
}

/// Hard-links `src` (following symlinks) to `dst`, or copies it where links cannot be made.
fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    let real = src
        .canonicalize()
        .map_err(|e| AgentError::io(format!("finding {}", src.display()), e))?;
    if std::fs::hard_link(&real, dst).is_ok() {
        return Ok(());
    }
    std::fs::copy(&real, dst)
        .map(|_| ())
        .map_err(|e| AgentError::io(format!("copying {}", real.display()), e))
}

/// The templates in one images folder.
pub struct Templates {
    images_dir: PathBuf,
    qemu: PathBuf,
    shapes: ShapePolicy,
    /// One lock per shape being made, so concurrent creates make it once.
    making: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Templates {
    pub fn new(images_dir: PathBuf, qemu: PathBuf, shapes: ShapePolicy) -> Templates {
        Templates {
            images_dir,
            qemu,
            shapes,
            making: Mutex::default(),
        }
    }

    pub fn images_dir(&self) -> &Path {
        &self.images_dir
    }

    /// The folder of template `name` (which must be a valid name).
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        if wrenn_types::TemplateName::parse(name).is_err() {
            return Err(AgentError::BadTemplateName(name.into()));
        }
        Ok(self.images_dir.join(name))
    }

    /// Checks that `name` is a template of `kind` here: a real folder (never a symlink) directly
    /// in the images folder, with `template.json` exactly when it is a snapshot template. A
    /// template of the other kind is `not_found`, as a missing one: a create names a template
    /// the control plane resolved for its caller, never whatever folder the name points at.
    pub fn require(&self, name: &str, kind: TemplateKind) -> Result<PathBuf> {
        let dir = self.dir(name)?;
        let missing = || AgentError::NotFound(format!("template {name} not found"));
        let is_dir = std::fs::symlink_metadata(&dir)
            .map(|m| m.file_type().is_dir())
            .unwrap_or(false);
        if !is_dir {
            return Err(missing());
        }
        let is_snapshot = std::fs::symlink_metadata(dir.join(META))
            .map(|m| m.file_type().is_file())
            .unwrap_or(false);
        let found = if is_snapshot {
            TemplateKind::Snapshot
        } else {
            TemplateKind::Base
        };
        if found != kind {
            tracing::warn!(template = name, asked = ?kind, is = ?found, "refused a template of another kind");
            return Err(missing());
        }
        Ok(dir)
    }

    /// The snapshot template record of `name`, if it is one.
    pub fn meta(&self, name: &str) -> Option<TemplateMeta> {
        let text = std::fs::read(self.dir(name).ok()?.join(META)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// One template, if it has a ready snapshot.
    pub fn info(&self, name: &str) -> Result<TemplateInfo> {
        let dir = self.dir(name)?;
        let snap = Snapshot {
            template_dir: dir.clone(),
        };
        let spec = snap
            .spec()
            .ok_or_else(|| AgentError::NotFound(format!("template {name} not found")))?;
        let meta = self.meta(name);
        let created = std::fs::metadata(snap.dir())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(TemplateInfo {
            name: name.into(),
            kind: if meta.is_some() {
                TemplateKind::Snapshot
            } else {
                TemplateKind::Base
            },
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            disk_bytes: file_len(&snap.disk()),
            size_bytes: allocated_bytes(&dir),
            created_at_unix: meta.as_ref().map_or(created, |m| m.created_at_unix),
            base: meta.map(|m| m.base),
        })
    }

    /// Every template with a ready snapshot, by name.
    pub fn list(&self) -> Vec<TemplateInfo> {
        let mut names: Vec<String> = std::fs::read_dir(&self.images_dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| wrenn_types::TemplateName::parse(n).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.iter().filter_map(|n| self.info(n).ok()).collect()
    }

    /// Whether template `name` can give a capsule of `vcpus` and `memory_mib` (0: its own),
    /// checked without making anything: the template's shape and memory size.
    pub fn check(&self, name: &str, vcpus: u32, memory_mib: u32) -> Result<SnapshotSpec> {
        // Cheap: the snapshot's vm.json and template.json, no walk of the template's files.
        let spec = Snapshot {
            template_dir: self.dir(name)?,
        }
        .spec()
        .ok_or_else(|| AgentError::NotFound(format!("template {name} not found")))?;
        let differs = (vcpus != 0 && vcpus != spec.vcpus)
            || (memory_mib != 0 && memory_mib != spec.memory_mib);
        if differs && self.meta(name).is_some() {
            return Err(AgentError::InvalidArgument(format!(
                "template {name} is a snapshot of a {}-vCPU, {} MiB capsule; its capsules have \
                 that shape",
                spec.vcpus, spec.memory_mib
            )));
        }
        let (v, m) = (
            if vcpus == 0 { spec.vcpus } else { vcpus },
            if memory_mib == 0 {
                spec.memory_mib
            } else {
                memory_mib
            },
        );
        if differs && (v, m) != (spec.vcpus, spec.memory_mib) && !self.shapes.allows(v, m) {
            return Err(AgentError::InvalidArgument(format!(
                "{v} vCPUs with {m} MiB is not a shape this host offers: vCPUs one of {}, \
                 memory (MiB) one of {} (or template {name}'s own {} vCPUs with {} MiB)",
                join(&self.shapes.vcpus),
                join(&self.shapes.memory_mib),
                spec.vcpus,
                spec.memory_mib
            )));
        }
        Ok(spec)
    }

    /// The disk size of template `name`'s capsules (its snapshot disk's), without making
    /// anything.
    pub fn disk_bytes(&self, name: &str) -> Result<u64> {
        Ok(file_len(
            &Snapshot {
                template_dir: self.dir(name)?,
            }
            .disk(),
        ))
    }

    /// The snapshot a capsule of `name` with `vcpus` and `memory_mib` (0: the template's own)
    /// restores. A base template's snapshot of a new shape is made here, in a slot from `pool`;
    /// shape snapshots beyond the budget that `in_use` says no capsule restores from are
    /// evicted, least recently used first.
    pub async fn resolve(
        &self,
        name: &str,
        vcpus: u32,
        memory_mib: u32,
        pool: &SlotPool,
        in_use: &(dyn Fn(&Path) -> bool + Send + Sync),
    ) -> Result<Resolved> {
        // Refuses another shape for a snapshot template (it keeps its source's shape).
        let spec = self.check(name, vcpus, memory_mib)?;
        let dir = self.dir(name)?;
        let own = Snapshot {
            template_dir: dir.clone(),
        };
        let vcpus = if vcpus == 0 { spec.vcpus } else { vcpus };
        let memory_mib = if memory_mib == 0 {
            spec.memory_mib
        } else {
            memory_mib
        };
        if vcpus == spec.vcpus && memory_mib == spec.memory_mib {
            return Ok(Resolved {
                disk_bytes: file_len(&own.disk()),
                snapshot: own,
                spec,
                envd_token: self.meta(name).map(|m| m.envd_token),
            });
        }
        let shaped = self.shape(&dir, vcpus, memory_mib, pool).await?;
        self.evict_shapes(&shaped.template_dir, in_use);
        let spec = shaped.spec().ok_or_else(|| {
            AgentError::FailedPrecondition(format!("the {vcpus}-vCPU snapshot of {name} is gone"))
        })?;
        Ok(Resolved {
            disk_bytes: file_len(&shaped.disk()),
            snapshot: shaped,
            spec,
            envd_token: None,
        })
    }

    /// The snapshot of base template `dir` with another shape, made when missing.
    async fn shape(
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
        let lock = self
            .making
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(shape_dir.clone())
            .or_default()
            .clone();
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
            let lock = self
                .making
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(dir.clone())
                .or_default()
                .clone();
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

    /// Makes template `name` from a paused capsule's files. An existing snapshot template of
    /// that name is replaced only with `overwrite` and only when `in_use` says no capsule
    /// restores from it; base templates are never replaced.
    pub async fn publish(
        &self,
        name: &str,
        overwrite: bool,
        source: SnapshotSource,
        in_use: impl Fn(&Path) -> bool,
    ) -> Result<TemplateInfo> {
        let dir = self.dir(name)?;
        let exists = std::fs::symlink_metadata(&dir).is_ok();
        if exists {
            if self.meta(name).is_none() {
                return Err(AgentError::FailedPrecondition(format!(
                    "{name} is a base template; it cannot be replaced by a snapshot"
                )));
            }
            if !overwrite {
                return Err(AgentError::AlreadyExists(format!(
                    "template {name} already exists"
                )));
            }
            if in_use(&dir) {
                return Err(AgentError::FailedPrecondition(format!(
                    "template {name} is in use by capsules; destroy them first"
                )));
            }
        }
        let work = self
            .images_dir
            .join(format!(".new-{name}-{}", random_suffix()?));
        // A team's memory, disk and envd token: a 0700 folder of 0600 files.
        wrenn_vmm::files::private_dir(&work)?;
        // Held while the folder fills: `clean_leftovers` skips folders someone is filling.
        let lock = std::fs::File::open(&work)
            .map_err(|e| AgentError::io("opening the template folder", e))
            .and_then(|f| {
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
                    |(_, e)| AgentError::io("locking the template folder", std::io::Error::from(e)),
                )
            });
        let made = match lock {
            Ok(_held) => self.fill(&work, name, &source).await,
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
        if exists {
            let old = self
                .images_dir
                .join(format!(".old-{name}-{}", random_suffix()?));
            std::fs::rename(&dir, &old)
                .map_err(|e| AgentError::io("moving the old template aside", e))?;
            let _ = std::fs::remove_dir_all(&old);
        }
        if let Err(e) = std::fs::rename(&work, &dir) {
            let _ = std::fs::remove_dir_all(&work);
            return Err(AgentError::io("publishing the template", e));
        }
        self.info(name)
    }

    async fn fill(&self, work: &Path, name: &str, source: &SnapshotSource) -> Result<()> {
        let snap_dir = work.join("snapshot");
        wrenn_vmm::files::private_dir(&snap_dir)?;
        for f in ["vmlinuz", "initrd.img"] {
            link_or_copy(&source.restored_from.join(f), &work.join(f))?;
        }
        let (memory, state) = (source.memory.clone(), source.state.clone());
        let (mem_to, state_to) = (snap_dir.join("memory"), snap_dir.join("state"));
        tokio::task::spawn_blocking(move || -> Result<()> {
            wrenn_vmm::files::copy_sparse(&memory, &mem_to)?;
            wrenn_vmm::files::punch_zero_pages(&mem_to)?;
            std::fs::copy(&state, &state_to)
                .map_err(|e| AgentError::io("copying the device state", e))?;
            Ok(wrenn_vmm::files::private_file(&state_to)?)
        })
        .await
        .map_err(|e| AgentError::io("copying memory", std::io::Error::other(e)))??;
        // The disk, flattened: the template does not depend on the capsule's base.
        let out = tokio::process::Command::new("qemu-img")
            .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
            .arg(&source.disk)
            .arg(snap_dir.join("disk.img"))
            .output()
            .await
            .map_err(|e| AgentError::io("running qemu-img convert", e))?;
        if !out.status.success() {
            return Err(AgentError::FailedPrecondition(format!(
                "flattening the disk failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let meta = TemplateMeta {
            base: source.base.clone(),
            from_capsule: source.capsule_id.clone(),
            created_at_unix: unix_now(),
            envd_token: source.envd_token.clone(),
        };
        write_private(&work.join(META), &meta)?;
        let spec = serde_json::to_vec_pretty(&source.spec)
            .map_err(|e| AgentError::io("encoding vm.json", std::io::Error::other(e)))?;
        wrenn_vmm::files::write_private(&snap_dir.join("vm.json"), &spec)?;
        // The flattened disk (`qemu-img` made it 0644) and anything else: private.
        wrenn_vmm::files::private_tree(work)?;
        tracing::info!(template = name, from = %source.capsule_id, "snapshot template made");
        Ok(())
    }

    /// Deletes snapshot template `name` unless a capsule restores from it.
    pub fn delete(&self, name: &str, in_use: impl Fn(&Path) -> bool) -> Result<()> {
        let dir = self.dir(name)?;
        if !dir.exists() {
            return Err(AgentError::NotFound(format!("template {name} not found")));
        }
        if self.meta(name).is_none() {
            return Err(AgentError::FailedPrecondition(format!(
                "{name} is a base template; base templates are not deleted through the API"
            )));
        }
        if in_use(&dir) {
            return Err(AgentError::FailedPrecondition(format!(
                "template {name} is in use by capsules; destroy them first"
            )));
        }
        let gone = self
            .images_dir
            .join(format!(".old-{name}-{}", random_suffix()?));
        std::fs::rename(&dir, &gone).map_err(|e| AgentError::io("deleting the template", e))?;
        std::fs::remove_dir_all(&gone).map_err(|e| AgentError::io("deleting the template", e))
    }

    /// Makes what earlier versions left readable to others private: every snapshot template
    /// folder, and the snapshot and shapes of every base template (0700 folders, 0600 files;
    /// the recipe's kernel, initrd and root image stay as built). Failures are logged.
    pub fn make_private(&self) {
        let Ok(dir) = std::fs::read_dir(&self.images_dir) else {
            return;
        };
        for e in dir.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if wrenn_types::TemplateName::parse(&name).is_err() {
                continue;
            }
            let trees = if self.meta(&name).is_some() {
                vec![e.path()]
            } else {
                vec![e.path().join("snapshot"), e.path().join(SHAPES)]
            };
            for t in trees {
                if let Err(err) = wrenn_vmm::files::private_tree(&t) {
                    tracing::warn!(dir = %t.display(), error = %err, "making a template private");
                }
            }
        }
    }

    /// Removes what half-made or half-deleted templates left (after a crash).
    pub fn clean_leftovers(&self) {
        let Ok(dir) = std::fs::read_dir(&self.images_dir) else {
            return;
        };
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(".new-") || n.starts_with(".old-") {
                let busy = std::fs::File::open(e.path())
                    .ok()
                    .map(|f| {
                        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
                            .is_err()
                    })
                    .unwrap_or(false);
                if busy {
                    continue; // another agent is making it right now
                }
                tracing::info!(dir = %e.path().display(), "removing a half-made template");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn write_private(path: &Path, meta: &TemplateMeta) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_vec_pretty(meta)
        .map_err(|e| AgentError::io("encoding template.json", std::io::Error::other(e)))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AgentError::io("writing template.json", e))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| AgentError::io("writing template.json", e))
}
