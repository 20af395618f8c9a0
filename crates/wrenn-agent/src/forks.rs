//! Fork images: the frozen state a live fork's children restore from, kept while anything
//! needs it.
//!
//! A fork image (`WRENN_DIR/forks/<id>/`) reads like a template folder: `vmlinuz` and
//! `initrd.img` (links to the source's), `snapshot/memory` (the source's RAM at the fork,
//! flattened: its template's pages with its own on top, zero pages punched out), `snapshot/state`
//! (its device state), `snapshot/disk.qcow2` (a copy of its qcow2 overlay, still on the
//! source's backing file) and `snapshot/vm.json`; `fork.json` (0600) names the source, the
//! envd token the frozen envd holds, the fork image its disk backs on (`parent`, for forks of
//! children) and the template folder at the root of that chain.
//!
//! Children are made from it like capsules from a template: each maps `snapshot/memory`
//! privately through its own hard link (pages no child writes stay one copy in the page
//! cache), and gets a qcow2 overlay on `snapshot/disk.qcow2`. An image is removed once no
//! capsule restores from it and no other fork image's disk backs on it ([`Forks::collect`]),
//! so destroying the source (or any child) never breaks another.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wrenn_vmm::{checkpoint, memory, snapshot::Snapshot};

use crate::{
    capsule::Checkpointed,
    error::{AgentError, Result},
};

/// The description in each fork image.
const META: &str = "fork.json";
/// Where the checkpoint lands inside a fork image being made.
const CHECKPOINT: &str = "checkpoint";

/// What `fork.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForkMeta {
    /// The capsule forked.
    pub source: String,
    pub created_at_unix: i64,
    /// The source's envd token: the frozen envd asks for it until a child's `/init` sets the
    /// child's own.
    pub envd_token: String,
    /// The fork image the source restored from, when it was itself a child: this image's disk
    /// backs on that one's.
    pub parent: Option<PathBuf>,
    /// The template folder at the root of the chain (its disk is the last backing file).
    pub root: PathBuf,
}

/// The fork images of one host.
#[derive(Debug)]
pub struct Forks {
    dir: PathBuf,
    /// Images whose children are being made (no record names them yet): never collected.
    making: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

impl Forks {
    /// Opens (makes) `dir`, removing the half-made images a crash left.
    pub fn open(dir: PathBuf) -> Result<Forks> {
        wrenn_vmm::files::private_dir(&dir)?;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    tracing::info!(dir = %e.path().display(), "removing a half-made fork image");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Forks {
            dir,
            making: Default::default(),
        })
    }

    /// Marks image `dir` as in use by a fork still making its children, until `done`.
    pub fn making(&self, dir: &Path) {
        self.lock().insert(dir.to_path_buf());
    }

    /// Ends [`Forks::making`] for `dir` (its children's records now name it, or they failed).
    pub fn done(&self, dir: &Path) {
        self.lock().remove(dir);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.making.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new, empty folder for an image being made (hidden until [`Forks::finish`]), and the
    /// folder its checkpoint goes to.
    pub fn begin(&self) -> Result<(PathBuf, PathBuf)> {
        let work = self
            .dir
            .join(format!(".new-{}", wrenn_types::secret::hex(8)?));
        wrenn_vmm::files::private_dir(&work)?;
        let cp = work.join(CHECKPOINT);
        Ok((work, cp))
    }

    /// Whether `dir` is a fork image of this host.
    pub fn is_fork(&self, dir: &Path) -> bool {
        dir.parent() == Some(self.dir.as_path())
    }

    /// Turns the checkpoint in `work` into a fork image and puts it in place; on failure
    /// `work` is removed.
    pub async fn finish(&self, work: &Path, cp: &Checkpointed) -> Result<Snapshot> {
        let made = self.fill(work, cp).await;
        let placed = made.and_then(|()| {
            let dir = self
                .dir
                .join(format!("fk-{}", wrenn_types::secret::hex(8)?));
            // Marked before it is visible, so no collection ever sees it unused.
            self.making(&dir);
            if let Err(e) = std::fs::rename(work, &dir) {
                self.done(&dir);
                return Err(AgentError::io("placing the fork image", e));
            }
            Ok(dir)
        });
        match placed {
            Ok(dir) => Ok(Snapshot { template_dir: dir }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(work);
                Err(e)
            }
        }
    }

    async fn fill(&self, work: &Path, cp: &Checkpointed) -> Result<()> {
        let from = work.join(CHECKPOINT);
        let snap = Snapshot {
            template_dir: work.to_path_buf(),
        };
        let snap_dir = snap.dir();
        wrenn_vmm::files::private_dir(&snap_dir)?;
        for f in ["vmlinuz", "initrd.img"] {
            crate::templates::link_or_copy(&cp.restored_from.join(f), &work.join(f))?;
        }
        let (from_c, snap_c) = (from.clone(), snap_dir.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mem = snap_c.join("memory");
            // A template layout's base has its zero pages punched already and `flatten` leaves
            // the delta's as holes: only a whole own file needs the scan.
            let own = matches!(
                memory::MemoryLayout::of(&from_c),
                memory::MemoryLayout::Own(_)
            );
            memory::flatten(&from_c, &mem)?;
            if own {
                wrenn_vmm::files::punch_zero_pages(&mem)?;
            }
            for f in [checkpoint::STATE, checkpoint::DISK] {
                std::fs::rename(from_c.join(f), snap_c.join(f))
                    .map_err(|e| AgentError::io("placing the checkpoint", e))?;
            }
            std::fs::remove_dir_all(&from_c)
                .map_err(|e| AgentError::io("removing the checkpoint", e))
        })
        .await
        .map_err(|e| AgentError::io("flattening memory", std::io::Error::other(e)))??;
        let spec = serde_json::to_vec_pretty(&cp.spec)
            .map_err(|e| AgentError::io("encoding vm.json", std::io::Error::other(e)))?;
        wrenn_vmm::files::write_private(&snap_dir.join("vm.json"), &spec)?;
        let parent = self
            .is_fork(&cp.restored_from)
            .then(|| cp.restored_from.clone());
        let root = match parent.as_deref().and_then(read_meta) {
            Some(m) => m.root,
            None => cp.restored_from.clone(),
        };
        let meta = ForkMeta {
            source: cp.record.id.clone(),
            created_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            envd_token: cp.record.access_token.clone(),
            parent,
            root,
        };
        let text = serde_json::to_vec_pretty(&meta)
            .map_err(|e| AgentError::io("encoding fork.json", std::io::Error::other(e)))?;
        wrenn_vmm::files::write_private(&work.join(META), &text)?;
        Ok(wrenn_vmm::files::private_tree(work)?)
    }

    /// The fork images in place (not those being made), with their descriptions.
    pub fn list(&self) -> Vec<(PathBuf, ForkMeta)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| read_meta(&e.path()).map(|m| (e.path(), m)))
            .collect()
    }

    /// Whether a fork image's disk chain ends in template folder `template_dir` (the template
    /// is then in use).
    pub fn hold(&self, template_dir: &Path) -> bool {
        self.list()
            .iter()
            .any(|(_, m)| m.root.starts_with(template_dir))
    }

    /// Removes every fork image no capsule restores from (`used`), no fork is making children
    /// from, and no kept image backs on; returns how many went. Folders without a readable
    /// `fork.json` are left alone.
    pub fn collect(&self, used: impl Fn(&Path) -> bool) -> usize {
        let making = self.lock().clone();
        let used = |d: &Path| making.contains(d) || used(d);
        let mut removed = 0;
        loop {
            let all = self.list();
            let gone: Vec<&PathBuf> = all
                .iter()
                .map(|(dir, _)| dir)
                .filter(|dir| {
                    !used(dir) && !all.iter().any(|(_, m)| m.parent.as_deref() == Some(dir))
                })
                .collect();
            if gone.is_empty() {
                return removed;
            }
            for dir in gone {
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => {
                        tracing::info!(dir = %dir.display(), "fork image no longer used: removed");
                        removed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "removing a fork image");
                        return removed;
                    }
                }
            }
        }
    }
}

fn read_meta(dir: &Path) -> Option<ForkMeta> {
    let text = std::fs::read(dir.join(META)).ok()?;
    serde_json::from_slice(&text).ok()
}
