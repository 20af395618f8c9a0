//! One capsule, owned by one task: every operation arrives through its queue, so no two
//! operations on a capsule race. The task holds the VM, the network slot and the envd client,
//! and keeps `capsule.json` in step with the state machine.
//!
//! `machine` holds the capsule's resources and its state machine, `create` makes and adopts
//! capsules, this module the handle and the task's loop.

mod create;
mod machine;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use tokio::sync::{mpsc, oneshot};
use wrenn_types::CapsuleStatus;
use wrenn_vmm::Vmm;

pub use create::{adopt, create, prepare, Prepared, Runtime};
use machine::Capsule;

use crate::{
    envd_client::{EnvdClient, ExecOutput, ExecRequest},
    error::{AgentError, Result},
    netslot::Egress,
    record::CapsuleRecord,
    templates::{SnapshotSource, TemplateInfo, Templates},
};

/// Memory a VMM may use beyond its guest's RAM (QEMU itself, its translation cache under TCG).
pub const VMM_OVERHEAD_MIB: u64 = 128;

/// What a create needs.
#[derive(Debug, Clone, Default)]
pub struct CreateSpec {
    pub template: String,
    /// What the caller resolved `template` to: a base template's name or a snapshot
    /// template's host-side id. A template of the other kind is refused.
    pub kind: crate::templates::TemplateKind,
    /// vCPUs and memory (0: the template's own).
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Disk size (0: the template's); never smaller than the template's.
    pub disk_mib: u32,
    pub env_vars: HashMap<String, String>,
    pub metadata: HashMap<String, String>,
    pub egress: bool,
    pub egress_policy: wrenn_types::egress::EgressPolicy,
    pub timeout_secs: u32,
    pub on_timeout: crate::record::TimeoutAction,
}

/// Operations a capsule task performs.
pub enum Op {
    /// A pause; with `keep` its stopped VMM is kept for a fast resume ([`Op::Release`] ends it).
    Pause {
        keep: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Ends the VMM a pause kept (the capsule stays paused, resumable from its files).
    Release(oneshot::Sender<Result<()>>),
    /// A pause by the host's shutdown: recorded with the pause, so the next start resumes it.
    PauseForRestart(oneshot::Sender<Result<()>>),
    Resume(oneshot::Sender<Result<()>>),
    Destroy(oneshot::Sender<Result<()>>),
    /// Pauses the capsule (if it runs) and makes a template of it; it stays paused.
    Snapshot {
        name: String,
        overwrite: bool,
        templates: Arc<Templates>,
        in_use: Box<dyn Fn(&std::path::Path) -> bool + Send + Sync>,
        reply: oneshot::Sender<Result<TemplateInfo>>,
    },
    /// Pauses the capsule (if it runs): its files, to make a template of; it stays paused.
    Source(Arc<Templates>, oneshot::Sender<Result<SnapshotSource>>),
    /// Changes egress (running or paused) and records it.
    SetNetwork(Egress, oneshot::Sender<Result<()>>),
    /// Copies the capsule's whole state into a new folder (a running capsule pauses only for
    /// that and runs on; a paused one is copied from its saved files).
    Checkpoint(std::path::PathBuf, oneshot::Sender<Result<Checkpointed>>),
}

/// What [`Handle::checkpoint`] copied, and from what.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    /// The capsule's record at that moment.
    pub record: CapsuleRecord,
    /// The folder its snapshot was restored from (kernel, initrd, disk backing).
    pub restored_from: std::path::PathBuf,
    pub spec: wrenn_vmm::snapshot::SnapshotSpec,
    /// How long the guest was stopped, and for what (zero for a paused capsule).
    pub pause: PauseSteps,
}

/// Where a running capsule's checkpoint spent its time.
#[derive(Debug, Clone, Copy, Default)]
pub struct PauseSteps {
    /// The whole time its guest was stopped (QMP `stop` to the end of `cont`).
    pub total: std::time::Duration,
    /// QMP `cont`.
    pub cont: std::time::Duration,
    /// The checkpoint's own steps (all but `write` while the guest was stopped).
    pub checkpoint: wrenn_vmm::checkpoint::Times,
}

/// The shared, read-only view of a capsule.
pub type Info = Arc<RwLock<CapsuleRecord>>;

/// A handle to a capsule's task. Lifecycle operations go through the task's queue; data-plane
/// calls (exec, files, processes) go straight to envd while the capsule runs, so a long command
/// never holds up a pause or a destroy.
#[derive(Clone)]
pub struct Handle {
    pub info: Info,
    tx: mpsc::Sender<Op>,
    envd: EnvdClient,
    /// When the capsule was last used (Unix seconds), for the timeout reaper.
    last_active: Arc<std::sync::atomic::AtomicI64>,
    /// Resource use over the last 24 h, filled by the manager's sampler.
    pub metrics: Arc<std::sync::Mutex<(crate::metrics::History, crate::metrics::CpuClock)>>,
}

impl Handle {
    pub fn record(&self) -> CapsuleRecord {
        self.info.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let id = self.record().id;
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| AgentError::CapsuleGone { id: id.clone() })?;
        rx.await.map_err(|_| AgentError::CapsuleGone { id })?
    }

    pub async fn pause(&self) -> Result<()> {
        self.call(|reply| Op::Pause { keep: false, reply }).await
    }
    /// Pauses, keeping the stopped VMM: a resume then only runs it on (see [`Op::Pause`]).
    pub async fn pause_keeping(&self) -> Result<()> {
        self.call(|reply| Op::Pause { keep: true, reply }).await
    }
    /// Ends the VMM a pause kept, if any.
    pub async fn release(&self) -> Result<()> {
        self.call(Op::Release).await
    }
    pub async fn resume(&self) -> Result<()> {
        self.call(Op::Resume).await
    }
    /// Pauses for the host's shutdown: `resume_after_restart` is set in the same record write.
    pub async fn pause_for_restart(&self) -> Result<()> {
        self.call(Op::PauseForRestart).await
    }
    pub async fn destroy(&self) -> Result<()> {
        self.call(Op::Destroy).await
    }
    pub async fn set_network(&self, egress: Egress) -> Result<()> {
        self.call(|reply| Op::SetNetwork(egress, reply)).await
    }
    pub async fn snapshot(
        &self,
        name: String,
        overwrite: bool,
        templates: Arc<Templates>,
        in_use: Box<dyn Fn(&std::path::Path) -> bool + Send + Sync>,
    ) -> Result<TemplateInfo> {
        self.call(|reply| Op::Snapshot {
            name,
            overwrite,
            templates,
            in_use,
            reply,
        })
        .await
    }
    /// Pauses the capsule (if it runs) and gives its files, to make a template of.
    pub async fn source(&self, templates: Arc<Templates>) -> Result<SnapshotSource> {
        self.call(|reply| Op::Source(templates, reply)).await
    }
    /// Copies the capsule's whole state into the new folder `dest`
    /// ([`wrenn_vmm::checkpoint`]).
    pub async fn checkpoint(&self, dest: std::path::PathBuf) -> Result<Checkpointed> {
        self.call(|reply| Op::Checkpoint(dest, reply)).await
    }
    /// Marks the capsule as used now.
    pub fn touch(&self) {
        self.last_active
            .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Seconds since the capsule was last used.
    pub fn idle_secs(&self) -> i64 {
        unix_now() - self.last_active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The capsule's envd, if the capsule is running (this counts as activity).
    pub fn envd(&self) -> Result<EnvdClient> {
        self.touch();
        let state = self.record().state;
        if state != CapsuleStatus::Running {
            return Err(AgentError::NotRunning { id: None, state });
        }
        Ok(self.envd.clone())
    }

    pub async fn exec(&self, req: ExecRequest) -> Result<ExecOutput> {
        self.envd()?.exec(&req).await
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Handle {
    fn new(info: Info, tx: mpsc::Sender<Op>, envd: EnvdClient) -> Handle {
        Handle {
            info,
            tx,
            envd,
            last_active: Arc::new(std::sync::atomic::AtomicI64::new(unix_now())),
            metrics: Arc::default(),
        }
    }
}

/// The capsule's task: one operation at a time, until destroyed. A VMM that dies turns the
/// capsule to `error` and releases what it held.
async fn run(mut capsule: Capsule, mut rx: mpsc::Receiver<Op>) {
    while capsule.state() != CapsuleStatus::Error {
        let death = capsule.vm.death_watch();
        // A death already seen is handled before the next operation.
        let op = tokio::select! {
            biased;
            _ = async {
                match death {
                    Some(mut d) => { let _ = d.wait_for(|x| x.is_some()).await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                let why = capsule.vm.status().to_string();
                if capsule.state() == CapsuleStatus::Paused {
                    // A kept VMM: the capsule's state is in its files all the same.
                    tracing::info!(%why, "a paused capsule's kept VMM ended");
                    capsule.vm.release().await;
                } else {
                    capsule.fail(format!("the VMM died: {why}")).await;
                }
                continue;
            }
            op = rx.recv() => op,
        };
        let Some(op) = op else {
            // Every handle is gone: the agent is shutting down; leave the VM running.
            return;
        };
        match op {
            Op::Pause { keep, reply } => {
                let _ = reply.send(capsule.pause(false, keep).await);
            }
            Op::Release(reply) => {
                capsule.vm.release().await;
                let _ = reply.send(Ok(()));
            }
            Op::PauseForRestart(reply) => {
                let _ = reply.send(capsule.pause(true, false).await);
            }
            Op::Resume(reply) => {
                let _ = reply.send(capsule.resume().await);
            }
            Op::Destroy(reply) => {
                capsule.destroy().await;
                let _ = reply.send(Ok(()));
                return;
            }
            Op::Snapshot {
                name,
                overwrite,
                templates,
                in_use,
                reply,
            } => {
                let made = capsule
                    .snapshot(name, overwrite, &templates, in_use.as_ref())
                    .await;
                let _ = reply.send(made);
            }
            Op::Source(templates, reply) => {
                let _ = reply.send(capsule.source(&templates).await);
            }
            Op::SetNetwork(egress, reply) => {
                let _ = reply.send(capsule.set_network(egress).await);
            }
            Op::Checkpoint(dest, reply) => {
                let _ = reply.send(capsule.checkpoint(&dest).await);
            }
        }
    }
    // In error the capsule holds no VM and no slot; only destroy does anything now.
    while let Some(op) = rx.recv().await {
        match op {
            Op::Destroy(reply) => {
                capsule.destroy().await;
                let _ = reply.send(Ok(()));
                return;
            }
            other => {
                let why = capsule
                    .info
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .error
                    .clone()
                    .unwrap_or_default();
                let err = || AgentError::InError { why: why.clone() };
                match other {
                    Op::Pause { reply: r, .. }
                    | Op::Release(r)
                    | Op::PauseForRestart(r)
                    | Op::Resume(r) => {
                        let _ = r.send(Err(err()));
                    }
                    Op::Snapshot { reply, .. } => {
                        let _ = reply.send(Err(err()));
                    }
                    Op::Source(_, r) => {
                        let _ = r.send(Err(err()));
                    }
                    Op::SetNetwork(_, r) => {
                        let _ = r.send(Err(err()));
                    }
                    Op::Checkpoint(_, r) => {
                        let _ = r.send(Err(err()));
                    }
                    Op::Destroy(_) => {}
                }
            }
        }
    }
}
