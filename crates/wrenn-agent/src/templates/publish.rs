//! Snapshot templates: made from a paused capsule's files ([`Templates::publish`]), deleted,
//! and what older versions or crashes left tidied up.

use std::path::Path;

use super::{unix_now, SnapshotSource, TemplateInfo, TemplateMeta, Templates, META, SHAPES};
use crate::error::{AgentError, Result};

pub(super) fn random_suffix() -> Result<String> {
    Ok(wrenn_types::secret::hex(4)?)
}

/// Hard-links `src` (following symlinks) to `dst`, or copies it where links cannot be made.
pub(crate) fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
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

impl Templates {
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
        self.publish_as(name, overwrite, Filling::Snapshot(&source), in_use)
            .await
    }

    /// [`Templates::publish`] with the folder filled by `filling`.
    pub(super) async fn publish_as(
        &self,
        name: &str,
        overwrite: bool,
        filling: Filling<'_>,
        in_use: impl Fn(&Path) -> bool,
    ) -> Result<TemplateInfo> {
        let dir = self.dir(name)?;
        let exists = std::fs::symlink_metadata(&dir).is_ok();
        if exists {
            if self.meta(name).is_none() {
                return Err(AgentError::BaseTemplate {
                    name: name.into(),
                    refusal: "it cannot be replaced by a snapshot",
                });
            }
            if !overwrite {
                return Err(AgentError::TemplateExists { name: name.into() });
            }
            if in_use(&dir) {
                return Err(AgentError::TemplateInUse { name: name.into() });
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
            Ok(_held) => match filling {
                Filling::Snapshot(source) => self.fill(&work, name, source).await,
                Filling::Fresh(source, defaults, pool) => {
                    self.fill_fresh(&work, name, source, defaults, pool).await
                }
            },
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

    pub(super) async fn fill(
        &self,
        work: &Path,
        name: &str,
        source: &SnapshotSource,
    ) -> Result<()> {
        let snap_dir = work.join("snapshot");
        wrenn_vmm::files::private_dir(&snap_dir)?;
        for f in ["vmlinuz", "initrd.img"] {
            link_or_copy(&source.restored_from.join(f), &work.join(f))?;
        }
        let (memory_dir, state) = (source.memory_dir.clone(), source.state.clone());
        let (mem_to, state_to) = (snap_dir.join("memory"), snap_dir.join("state"));
        tokio::task::spawn_blocking(move || -> Result<()> {
            wrenn_vmm::memory::flatten(&memory_dir, &mem_to)?;
            wrenn_vmm::files::punch_zero_pages(&mem_to)?;
            std::fs::copy(&state, &state_to)
                .map_err(|e| AgentError::io("copying the device state", e))?;
            Ok(wrenn_vmm::files::private_file(&state_to)?)
        })
        .await
        .map_err(|e| AgentError::io("copying memory", std::io::Error::other(e)))??;
        // The disk, flattened: the template does not depend on the capsule's base.
        flatten_disk(&source.disk, &snap_dir.join("disk.img")).await?;
        let meta = TemplateMeta {
            base: source.base.clone(),
            from_capsule: source.capsule_id.clone(),
            created_at_unix: unix_now(),
            envd_token: source.envd_token.clone(),
            fresh: false,
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
            return Err(AgentError::TemplateNotFound { name: name.into() });
        }
        if self.meta(name).is_none() {
            return Err(AgentError::BaseTemplate {
                name: name.into(),
                refusal: "base templates are not deleted through the API",
            });
        }
        if in_use(&dir) {
            return Err(AgentError::TemplateInUse { name: name.into() });
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
            if n.starts_with(".new-") || n.starts_with(".old-") || n.starts_with(".import-") {
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

/// What fills a new template's folder.
pub(super) enum Filling<'a> {
    /// The capsule's memory, device state and flattened disk.
    Snapshot(&'a SnapshotSource),
    /// Its flattened disk, booted afresh in a slot of the pool with the defaults set.
    Fresh(
        &'a SnapshotSource,
        &'a super::FreshDefaults,
        &'a crate::netslot::SlotPool,
    ),
}

/// `disk` (a qcow2 and its backing chain) as one raw image at `to`.
pub(super) async fn flatten_disk(disk: &Path, to: &Path) -> Result<()> {
    let out = tokio::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
        .arg(disk)
        .arg(to)
        .output()
        .await
        .map_err(|e| AgentError::io("running qemu-img convert", e))?;
    if !out.status.success() {
        return Err(AgentError::DiskFlatten {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

pub(super) fn write_private(path: &Path, meta: &TemplateMeta) -> Result<()> {
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
