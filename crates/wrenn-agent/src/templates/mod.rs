//! The templates of this host, and which snapshot a create restores.
//!
//! - **Base templates** are built from the recipe (`images/<name>/`, see [`crate::images`]);
//!   their ready snapshot has the shape they were built with. A create asking for another
//!   vCPU count or memory size gets a snapshot of that shape, made on first use and kept in
//!   `images/<name>/shapes/<inputs>-<v>c-<m>m/` (`<inputs>` ties it to the image it was made
//!   from, so a rebuilt image never restores an old shape).
//! - **Snapshot templates** are made from a capsule (`images/<name>/` with `template.json`): its
//!   memory, device state and flattened disk. Their capsules have the source capsule's shape.
//!
//! - **Fresh templates** are snapshot templates (the same folder, `template.json` with `fresh`)
//!   whose snapshot is of a fresh boot of a capsule's flattened disk, with defaults set in its
//!   envd: a build without a started process ends in one (no memory of the build kept).
//!
//! `shapes` holds the shape policy, shape snapshots and their eviction; `publish` making,
//! deleting and tidying snapshot templates; `fresh` the fresh ones.

mod base;
mod fresh;
mod image;
mod publish;
mod shapes;

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
pub use fresh::FreshDefaults;
pub use image::{image_template_name, ImageTemplate, IMAGE_PREFIX};
pub(crate) use publish::link_or_copy;
pub use shapes::ShapePolicy;
use shapes::{allocated_bytes, join};

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
    /// `/init` sets that capsule's own ("" for a fresh template: its envd has none).
    pub envd_token: String,
    /// A fresh template ([`Templates::publish_fresh`]): the capsule's disk booted afresh, no
    /// memory or process of the capsule kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
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
    /// The token the snapshot's envd already holds (snapshot templates and fork images: the
    /// snapshot of a capsule).
    pub envd_token: Option<String>,
}

impl Resolved {
    /// Whether the snapshot is a capsule's (a snapshot template or a fork image): its guest
    /// was set up at that capsule's create (root mounted with discard, the slot resolver in
    /// `/etc/resolv.conf`), so a capsule made from it needs neither again.
    pub fn of_capsule(&self) -> bool {
        self.envd_token.is_some()
    }
}

/// A capsule's files, to be made into a snapshot template.
#[derive(Debug, Clone)]
pub struct SnapshotSource {
    pub capsule_id: String,
    pub base: String,
    /// The template folder the capsule was restored from (for its kernel and initrd).
    pub restored_from: PathBuf,
    /// The (saved) capsule's folder: its guest RAM, in whichever layout
    /// (`wrenn_vmm::memory`), is flattened into the template's memory file.
    pub memory_dir: PathBuf,
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

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The templates in one images folder.
pub struct Templates {
    images_dir: PathBuf,
    qemu: PathBuf,
    shapes: ShapePolicy,
    /// The static envd binary base templates are built with on first need (`base`).
    envd: Option<PathBuf>,
    /// One lock per shape or base template being made, so concurrent creates make it once.
    making: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}
impl Templates {
    pub fn new(images_dir: PathBuf, qemu: PathBuf, shapes: ShapePolicy) -> Templates {
        Templates {
            images_dir,
            qemu,
            shapes,
            envd: None,
            making: Mutex::default(),
        }
    }

    /// These templates, building the known base templates on first need with `envd`.
    pub fn with_envd(mut self, envd: Option<PathBuf>) -> Templates {
        self.envd = envd;
        self
    }

    /// The lock held while `dir` (a shape or a base template) is made.
    fn making_lock(&self, dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.making
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(dir.to_path_buf())
            .or_default()
            .clone()
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
        let missing = || AgentError::TemplateNotFound { name: name.into() };
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
            .ok_or_else(|| AgentError::TemplateNotFound { name: name.into() })?;
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
        .ok_or_else(|| AgentError::TemplateNotFound { name: name.into() })?;
        let differs = (vcpus != 0 && vcpus != spec.vcpus)
            || (memory_mib != 0 && memory_mib != spec.memory_mib);
        if differs && self.meta(name).is_some() {
            return Err(AgentError::SnapshotShape {
                name: name.into(),
                vcpus: spec.vcpus,
                memory_mib: spec.memory_mib,
            });
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
            return Err(AgentError::ShapeNotOffered {
                name: name.into(),
                vcpus: v,
                memory_mib: m,
                offered_vcpus: join(&self.shapes.vcpus),
                offered_memory: join(&self.shapes.memory_mib),
                own_vcpus: spec.vcpus,
                own_memory_mib: spec.memory_mib,
            });
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
                envd_token: self
                    .meta(name)
                    .map(|m| m.envd_token)
                    .filter(|t| !t.is_empty()),
            });
        }
        let shaped = self.shape(&dir, vcpus, memory_mib, pool).await?;
        self.evict_shapes(&shaped.template_dir, in_use);
        let spec = shaped.spec().ok_or_else(|| AgentError::ShapeGone {
            name: name.into(),
            vcpus,
        })?;
        Ok(Resolved {
            disk_bytes: file_len(&shaped.disk()),
            snapshot: shaped,
            spec,
            envd_token: None,
        })
    }
}
