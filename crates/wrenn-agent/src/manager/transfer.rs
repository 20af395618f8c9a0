//! Exports and imports ([`crate::transfer`]): what a snapshot template or a paused capsule
//! sends, and how a received one lands here: written into a hidden folder beside its final
//! place, checked, then renamed into place (a broken stream leaves nothing).

use std::path::{Path, PathBuf};

use futures_util::Stream;
use tokio::sync::mpsc;
use wrenn_proto::agent::v1::{TransferChunk, TransferKind};
use wrenn_types::{CapsuleStatus, Id, IdKind};
use wrenn_vmm::cgroup::{Cgroup, Limits};

use super::Manager;
use crate::{
    capsule::{self, VMM_OVERHEAD_MIB},
    error::{AgentError, Result},
    netslot::SlotAddrs,
    record::{self, CapsuleRecord},
    templates::{TemplateInfo, TemplateKind},
    transfer::{self, Outgoing, CAPSULE_FILES, ORIGIN, TEMPLATE_FILES},
};

/// The stream an export answers with.
pub type Chunks = mpsc::Receiver<std::result::Result<TransferChunk, tonic::Status>>;

/// What an import says it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported<T> {
    /// Received and put in place; data bytes received.
    New(T, u64),
    /// Already here: the stream was not read.
    AlreadyPresent(T),
}

/// A hidden, private work folder in `parent`, removed on drop unless kept; locked while it
/// fills (`Templates::clean_leftovers` of another agent skips it).
struct Work(Option<PathBuf>, Option<nix::fcntl::Flock<std::fs::File>>);

impl Work {
    fn new(parent: &Path, tag: &str) -> Result<Work> {
        let dir = parent.join(format!(".import-{tag}-{}", wrenn_types::secret::hex(4)?));
        wrenn_vmm::files::private_dir(&dir)?;
        let lock = std::fs::File::open(&dir).ok().and_then(|f| {
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
        });
        Ok(Work(Some(dir), lock))
    }
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    /// Moves it to `to` (atomic on one filesystem); it is no longer removed.
    fn rename_to(mut self, to: &Path) -> Result<()> {
        self.1 = None;
        let from = self.0.take().unwrap_or_default();
        std::fs::rename(&from, to).map_err(|e| {
            let _ = std::fs::remove_dir_all(&from);
            AgentError::io(format!("putting {} in place", to.display()), e)
        })
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The accelerator a snapshot needs must be this host's (a KVM snapshot never restores
/// under TCG and the other way round).
fn check_accel(vm_json: &Path) -> Result<()> {
    let spec: wrenn_vmm::snapshot::SnapshotSpec =
        serde_json::from_slice(&std::fs::read(vm_json).unwrap_or_default())
            .map_err(|e| AgentError::BadTransfer(format!("its vm.json cannot be read: {e}")))?;
    if spec.format != wrenn_vmm::snapshot::SNAPSHOT_FORMAT {
        return Err(AgentError::BadTransfer(format!(
            "its snapshot format {} is not this host's {}",
            spec.format,
            wrenn_vmm::snapshot::SNAPSHOT_FORMAT
        )));
    }
    let (here, _) = wrenn_vmm::accel::detect();
    if spec.accel != here.as_str() {
        return Err(AgentError::BadTransfer(format!(
            "it was made under {} and this host runs {}",
            spec.accel,
            here.as_str()
        )));
    }
    Ok(())
}

impl Manager {
    /// Streams snapshot template `name` (base templates are built on each host instead).
    pub fn export_template(&self, name: &str) -> Result<Chunks> {
        let dir = self.templates.require(name, TemplateKind::Snapshot)?;
        let (tx, rx) = mpsc::channel(4);
        transfer::send(
            Outgoing {
                kind: TransferKind::Template,
                name: name.into(),
                files: TEMPLATE_FILES
                    .iter()
                    .map(|f| (f.to_string(), dir.join(f)))
                    .collect(),
            },
            tx,
        );
        Ok(rx)
    }

    /// Receives a snapshot template. One already here of that name is kept (`AlreadyPresent`,
    /// the rest of the stream unread); a base template of that name is never replaced.
    pub async fn import_template<S>(&self, mut stream: S) -> Result<Imported<TemplateInfo>>
    where
        S: Stream<Item = std::result::Result<TransferChunk, tonic::Status>> + Unpin,
    {
        let header = transfer::header(&mut stream, TransferKind::Template).await?;
        let name = header.name.clone();
        let dir = self.templates.dir(&name)?;
        if let Ok(info) = self.templates.info(&name) {
            if info.kind != TemplateKind::Snapshot {
                return Err(AgentError::BaseTemplate {
                    name,
                    refusal: "it cannot be replaced by a snapshot",
                });
            }
            return Ok(Imported::AlreadyPresent(info));
        }
        let work = Work::new(self.templates.images_dir(), &name)?;
        let bytes = transfer::receive(&mut stream, &header, work.path()).await?;
        check_accel(&work.path().join("snapshot/vm.json"))?;
        let meta: crate::templates::TemplateMeta = serde_json::from_slice(
            &std::fs::read(work.path().join("template.json")).unwrap_or_default(),
        )
        .map_err(|e| AgentError::BadTransfer(format!("its template.json cannot be read: {e}")))?;
        if std::fs::symlink_metadata(&dir).is_ok() {
            // Another import won the race (or a half-made folder is there): keep what is.
            return self.templates.info(&name).map(Imported::AlreadyPresent);
        }
        work.rename_to(&dir)?;
        tracing::info!(template = %name, from = %meta.from_capsule, bytes, "snapshot template imported");
        Ok(Imported::New(self.templates.info(&name)?, bytes))
    }

    /// Streams paused capsule `id`: its record, memory, device state, disk overlay, and what
    /// its template gave it (`origin/`: kernel, initrd, the raw disk the overlay rests on,
    /// vm.json). The capsule stays here, paused, until the control plane destroys it.
    pub async fn export_capsule(&self, id: &str) -> Result<Chunks> {
        let rec = self.get(id)?;
        if rec.state != CapsuleStatus::Paused {
            return Err(AgentError::NotPaused { state: rec.state });
        }
        // Its files change below (one memory file): a VMM kept at its pause goes first.
        self.release_kept(id).await?;
        if rec
            .snapshot_dir
            .as_deref()
            .is_some_and(|d| self.forks.is_fork(d))
        {
            return Err(AgentError::ForkChildStays { id: id.into() });
        }
        let dir = self.config.data_dir.join("capsules").join(id);
        // The other host may not have this capsule's template: its guest RAM leaves as one
        // file (`memory`), the template's pages with its own on top.
        wrenn_vmm::memory::make_own(&dir)?;
        let origin = rec
            .snapshot_dir
            .clone()
            .unwrap_or_else(|| self.config.images_dir.join(&rec.template));
        let files = CAPSULE_FILES
            .iter()
            .map(|f| {
                let path = match f.strip_prefix("origin/") {
                    Some(rest) => origin.join(rest),
                    None => dir.join(f),
                };
                (f.to_string(), path)
            })
            .collect();
        let (tx, rx) = mpsc::channel(4);
        transfer::send(
            Outgoing {
                kind: TransferKind::Capsule,
                name: id.into(),
                files,
            },
            tx,
        );
        Ok(rx)
    }

    /// Receives a paused capsule: it keeps its id, record and envd token and gets a slot
    /// (and cgroup) of this host; its disk overlay is pointed at its own `origin/` disk.
    /// Lands paused; a resume restores its memory, processes and files.
    pub async fn import_capsule<S>(&self, mut stream: S) -> Result<CapsuleRecord>
    where
        S: Stream<Item = std::result::Result<TransferChunk, tonic::Status>> + Unpin,
    {
        let header = transfer::header(&mut stream, TransferKind::Capsule).await?;
        let id = Id::parse(IdKind::Capsule, &header.name)
            .map_err(|e| AgentError::BadTransfer(e.to_string()))?
            .to_string();
        let capsules = self.config.data_dir.join("capsules");
        let dir = capsules.join(&id);
        if self.handle(&id).is_ok() || dir.exists() {
            return Err(AgentError::CapsuleExists { id });
        }
        let work = Work::new(&capsules, &id)?;
        transfer::receive(&mut stream, &header, work.path()).await?;
        check_accel(&work.path().join(ORIGIN).join("snapshot/vm.json"))?;
        let mut rec = record::load(work.path())
            .map_err(|e| AgentError::BadTransfer(format!("its capsule.json: {e}")))?;
        if rec.id != id || rec.state != CapsuleStatus::Paused {
            return Err(AgentError::BadTransfer(format!(
                "its record is of {} ({}), not of paused capsule {id}",
                rec.id, rec.state
            )));
        }
        self.make_room(rec.memory_mib, 1).await?;
        let slot = self.slots.take()?;
        rec.slot = slot;
        rec.snapshot_dir = Some(dir.join(ORIGIN));
        rec.vmm_pid = None;
        rec.error = None;
        rec.resume_after_restart = false;
        let landed = self.land_capsule(work, &dir, &rec).await;
        match landed {
            Ok(handle) => {
                self.capsules
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), handle);
                tracing::info!(%id, slot, "capsule imported");
                Ok(rec)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                if let Ok(a) = SlotAddrs::new(slot) {
                    if let Some(g) = Cgroup::named(&a.netns) {
                        g.remove();
                    }
                }
                self.slots.free(slot);
                Err(e)
            }
        }
    }

    /// Puts a received capsule folder in place and takes it over as a paused capsule.
    async fn land_capsule(
        &self,
        work: Work,
        dir: &Path,
        rec: &CapsuleRecord,
    ) -> Result<capsule::Handle> {
        record::save(work.path(), rec)?;
        work.rename_to(dir)?;
        let backing = dir.join(ORIGIN).join("snapshot/disk.img");
        let out = tokio::process::Command::new("qemu-img")
            .args(["rebase", "-u", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&backing)
            .arg(dir.join("disk.qcow2"))
            .output()
            .await
            .map_err(|e| AgentError::io("running qemu-img rebase", e))?;
        if !out.status.success() {
            return Err(AgentError::BadTransfer(format!(
                "its disk cannot be pointed at its base: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // As at create: guest RAM is a shared mapping of this file (see `prepare_capsule`).
        wrenn_vmm::files::allocate(&dir.join("memory"))?;
        let netns = SlotAddrs::new(rec.slot)?.netns;
        Cgroup::create(
            &netns,
            Limits {
                cpus: rec.vcpus,
                memory_bytes: (u64::from(rec.memory_mib) + VMM_OVERHEAD_MIB) << 20,
            },
        )?;
        capsule::adopt(dir.to_path_buf(), &self.config.images_dir, &self.runtime).await
    }
}
