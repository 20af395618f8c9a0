//! One capsule, owned by one task: every operation arrives through its queue, so no two
//! operations on a capsule race. The task holds the VM, the network slot and the envd client,
//! and keeps `capsule.json` in step with the state machine.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use tokio::sync::{mpsc, oneshot};
use wrenn_types::{CapsuleStatus, Transition};
use wrenn_vmm::{
    cgroup::{Cgroup, Limits},
    snapshot, Net, QemuVm, Vmm,
};

use crate::{
    envd_client::{EnvdClient, ExecOutput, ExecRequest, InitRequest},
    error::{AgentError, Result},
    netslot::{self, Egress, Slot},
    record::{self, CapsuleRecord},
    templates::{Resolved, SnapshotSource, TemplateInfo, Templates},
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
    Pause(oneshot::Sender<Result<()>>),
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
    /// Changes egress (running or paused) and records it.
    SetNetwork(Egress, oneshot::Sender<Result<()>>),
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
            .map_err(|_| AgentError::NotFound(format!("capsule {id} is gone")))?;
        rx.await
            .map_err(|_| AgentError::NotFound(format!("capsule {id} is gone")))?
    }

    pub async fn pause(&self) -> Result<()> {
        self.call(Op::Pause).await
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
            return Err(AgentError::FailedPrecondition(format!(
                "capsule is {state}, not running"
            )));
        }
        Ok(self.envd.clone())
    }

    pub async fn exec(&self, req: ExecRequest) -> Result<ExecOutput> {
        self.envd()?.exec(&req).await
    }
}

/// A capsule's resources, owned by its task.
struct Capsule {
    dir: PathBuf,
    info: Info,
    vm: QemuVm,
    slot: Slot,
    envd: EnvdClient,
}

fn envd_addr(slot: &Slot) -> SocketAddr {
    SocketAddr::new(slot.addrs.capsule_ip.into(), wrenn_vmm::config::ENVD_PORT)
}

fn new_token() -> Result<String> {
    Ok(wrenn_types::secret::hex(24)?)
}

impl Capsule {
    fn transition(&self, t: Transition) -> Result<()> {
        let mut rec = self.info.write().unwrap_or_else(|e| e.into_inner());
        rec.state = rec
            .state
            .apply(t)
            .map_err(|e| AgentError::FailedPrecondition(e.to_string()))?;
        rec.vmm_pid = self.vm.pid();
        record::save(&self.dir, &rec)
    }

    fn state(&self) -> CapsuleStatus {
        self.info.read().unwrap_or_else(|e| e.into_inner()).state
    }

    /// Grows the disk to `bytes` and the guest's root filesystem with it (online).
    async fn grow_disk(&mut self, bytes: u64) -> Result<()> {
        self.vm.grow_disk(bytes).await?;
        let out = self
            .envd
            .exec(&ExecRequest {
                cmd: "/usr/sbin/resize2fs".into(),
                args: vec!["/dev/vda".into()],
                user: Some("root".into()),
                timeout: Some(std::time::Duration::from_secs(60)),
                ..ExecRequest::default()
            })
            .await?;
        if out.exit_code != 0 {
            return Err(AgentError::Envd(format!(
                "growing the root filesystem failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Has the guest's root filesystem discard what it frees (online discard), so space freed
    /// in the guest is given back to the host: the disk is attached with `discard=unmap`, and
    /// a discarded cluster of the qcow2 overlay is punched out of the host file. Templates'
    /// snapshots were taken with the image's mount options, so it is set here, at create.
    /// Best effort: a guest that cannot remount still runs (it only keeps its freed space).
    async fn enable_discard(&self) {
        let out = self
            .envd
            .exec(&ExecRequest {
                cmd: "/bin/mount".into(),
                args: vec!["-o".into(), "remount,discard".into(), "/".into()],
                user: Some("root".into()),
                timeout: Some(std::time::Duration::from_secs(30)),
                ..ExecRequest::default()
            })
            .await;
        match out {
            Ok(o) if o.exit_code == 0 => {}
            Ok(o) => tracing::warn!(
                stderr = %String::from_utf8_lossy(&o.stderr).trim(),
                "the guest could not turn on discard"
            ),
            Err(e) => tracing::warn!(error = %e, "the guest could not turn on discard"),
        }
    }

    /// Points the guest's resolver at the slot resolver (the only name server it may use;
    /// the same address in every slot, so snapshots keep it). Best effort: a capsule without
    /// DNS still runs.
    async fn set_dns(&self) {
        let text = format!("nameserver {}\n", crate::dns::SLOT_RESOLVER);
        if let Err(e) = self
            .envd
            .write_file("/etc/resolv.conf", Some("root"), text.into())
            .await
        {
            tracing::warn!(error = %e, "setting the guest's name server");
        }
    }

    /// Whether the network may change now (the slot exists).
    fn set_network_allowed(&self) -> Result<()> {
        match self.state() {
            CapsuleStatus::Running | CapsuleStatus::Paused => Ok(()),
            state => Err(AgentError::FailedPrecondition(format!(
                "capsule is {state}; only a running or paused capsule's network can change"
            ))),
        }
    }

    /// Changes the slot's egress rules and the record.
    async fn set_network(&mut self, egress: Egress) -> Result<()> {
        self.set_network_allowed()?;
        self.slot.set_egress(egress.clone()).await?;
        let mut rec = self.info.write().unwrap_or_else(|e| e.into_inner());
        rec.egress = egress.on;
        rec.egress_policy = egress.policy;
        record::save(&self.dir, &rec)
    }

    async fn init_envd(&self, first: bool, snapshot_token: Option<&str>) -> Result<()> {
        let rec = self.info.read().unwrap_or_else(|e| e.into_inner()).clone();
        let req = InitRequest {
            access_token: Some(rec.access_token.clone()),
            env_vars: if first {
                rec.env_vars.clone()
            } else {
                HashMap::new()
            },
            default_user: None,
            default_workdir: None,
        };
        // A template's envd has no token (a snapshot template's has its source capsule's);
        // afterwards it needs the capsule's own.
        let previous = if first {
            snapshot_token
        } else {
            Some(rec.access_token.as_str())
        };
        self.envd.init(&req, previous).await
    }

    async fn start_vm(&mut self, state: &std::path::Path) -> Result<()> {
        self.vm.restore(state).await?;
        self.vm.resume().await?;
        self.vm
            .wait_ready(envd_addr(&self.slot), std::time::Duration::from_secs(60))
            .await?;
        Ok(())
    }

    async fn pause(&mut self, for_restart: bool) -> Result<()> {
        if self.state() != CapsuleStatus::Running {
            return Err(AgentError::FailedPrecondition(format!(
                "capsule is {}, not running",
                self.state()
            )));
        }
        self.vm.pause().await?;
        if let Err(e) = self.vm.save(&self.dir.join("state")).await {
            // Keep the capsule usable if its VM still runs; otherwise it is lost.
            if self.vm.resume().await.is_err() {
                self.fail(format!("pausing failed: {e}")).await;
            }
            return Err(e.into());
        }
        // Saved with the state by `transition`: a shutdown's pause is never lost.
        self.info
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .resume_after_restart = for_restart;
        self.transition(Transition::Pause)
    }

    async fn resume(&mut self) -> Result<()> {
        if self.state() != CapsuleStatus::Paused {
            return Err(AgentError::FailedPrecondition(format!(
                "capsule is {}, not paused",
                self.state()
            )));
        }
        let resumed = async {
            self.start_vm(&self.dir.join("state")).await?;
            self.init_envd(false, None).await
        }
        .await;
        if let Err(e) = resumed {
            self.fail(format!("resuming failed: {e}")).await;
            return Err(e);
        }
        self.info
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .resume_after_restart = false;
        self.transition(Transition::Resume)
    }

    fn release_cgroup(&self) {
        if let Some(g) = &self.vm.config().cgroup {
            g.remove();
        }
    }

    /// Pauses the capsule if it runs, then makes template `name` of its files.
    async fn snapshot(
        &mut self,
        name: String,
        overwrite: bool,
        templates: &Templates,
        in_use: &(dyn Fn(&std::path::Path) -> bool + Send + Sync),
    ) -> Result<TemplateInfo> {
        match self.state() {
            CapsuleStatus::Running => self.pause(false).await?,
            CapsuleStatus::Paused => {}
            state => {
                return Err(AgentError::FailedPrecondition(format!(
                    "capsule is {state}; only running or paused capsules can be snapshotted"
                )))
            }
        }
        let rec = self.info.read().unwrap_or_else(|e| e.into_inner()).clone();
        let config = self.vm.config();
        let source = SnapshotSource {
            capsule_id: rec.id.clone(),
            base: rec.template.clone(),
            restored_from: rec
                .snapshot_dir
                .clone()
                .unwrap_or_else(|| templates.images_dir().join(&rec.template)),
            memory: config.memory_path(),
            state: self.dir.join("state"),
            disk: config.disk.clone(),
            spec: snapshot::SnapshotSpec {
                format: snapshot::SNAPSHOT_FORMAT,
                vcpus: config.vcpus,
                memory_mib: config.memory_mib,
                accel: config.accel.as_str().into(),
            },
            envd_token: rec.access_token.clone(),
        };
        templates.publish(&name, overwrite, source, in_use).await
    }

    /// Turns the capsule to `error` with `why`, stops its VMM and releases its slot at once;
    /// the folder stays (for the console log) until destroy.
    async fn fail(&mut self, why: String) {
        tracing::warn!(id = %self.info.read().unwrap_or_else(|e| e.into_inner()).id, %why, "capsule failed");
        let _ = self.vm.stop().await;
        self.release_cgroup();
        self.slot.release().await;
        let mut rec = self.info.write().unwrap_or_else(|e| e.into_inner());
        rec.state = rec
            .state
            .apply(Transition::Fail)
            .unwrap_or(CapsuleStatus::Error);
        rec.error = Some(why);
        rec.vmm_pid = None;
        rec.resume_after_restart = false;
        let _ = record::save(&self.dir, &rec);
    }

    /// Marks the capsule stopped and removes everything it owns.
    async fn destroy(&mut self) {
        {
            let mut rec = self.info.write().unwrap_or_else(|e| e.into_inner());
            rec.state = rec
                .state
                .apply(Transition::Stop)
                .unwrap_or(CapsuleStatus::Stopped);
        }
        self.teardown().await;
    }

    /// Stops the VM and removes everything the capsule owns; the folder goes last.
    async fn teardown(&mut self) {
        let _ = self.vm.stop().await;
        self.release_cgroup();
        self.slot.release().await;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing the capsule folder");
        }
    }
}

/// Creates a capsule from the template snapshot in `template_dir`, inside `dir`, on `slot`.
/// On any failure everything made so far is removed.
pub async fn create(
    id: String,
    dir: PathBuf,
    resolved: Resolved,
    slot_index: u32,
    spec: CreateSpec,
    qemu: PathBuf,
    upstreams: Arc<Vec<SocketAddr>>,
) -> Result<Handle> {
    let disk_bytes = if spec.disk_mib == 0 {
        resolved.disk_bytes
    } else {
        u64::from(spec.disk_mib) << 20
    };
    if disk_bytes < resolved.disk_bytes {
        return Err(AgentError::InvalidArgument(format!(
            "disk_mib must be at least the template's {} MiB",
            resolved.disk_bytes >> 20
        )));
    }
    // Memory, disk, device state, logs and the envd token: a 0700 folder of 0600 files.
    wrenn_vmm::files::private_dir(&dir)?;
    let snap = resolved.snapshot.clone();
    let shape = resolved.spec.clone();
    let rec = CapsuleRecord {
        id: id.clone(),
        template: spec.template.clone(),
        snapshot_dir: Some(snap.template_dir.clone()),
        disk_mib: (disk_bytes >> 20) as u32,
        vcpus: shape.vcpus,
        memory_mib: shape.memory_mib,
        slot: slot_index,
        egress: spec.egress,
        egress_policy: spec.egress_policy.clone(),
        state: CapsuleStatus::Pending,
        created_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        env_vars: spec.env_vars,
        metadata: spec.metadata,
        access_token: new_token()?,
        vmm_pid: None,
        error: None,
        timeout_secs: spec.timeout_secs,
        on_timeout: spec.on_timeout,
        resume_after_restart: false,
    };
    if let Err(e) = record::save(&dir, &rec) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    let egress = Egress {
        on: spec.egress,
        policy: spec.egress_policy.clone(),
    };
    let slot = match Slot::create_with(slot_index, egress, Some(upstreams)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let limits = Limits {
        cpus: shape.vcpus,
        memory_bytes: (u64::from(shape.memory_mib) + VMM_OVERHEAD_MIB) << 20,
    };
    // The memory copy and `qemu-img` block: off the async workers.
    let (netns, snap_c, dir_c) = (slot.addrs.netns.clone(), snap.clone(), dir.clone());
    let built = tokio::task::spawn_blocking(move || {
        let cgroup = Cgroup::create(&netns, limits)?;
        let mut config = snapshot::prepare_capsule(
            &snap_c,
            &dir_c,
            Net::Tap {
                netns,
                tap: netslot::TAP.into(),
            },
            qemu,
        )?;
        config.cgroup = cgroup;
        QemuVm::new(config)
    })
    .await
    .unwrap_or_else(|e| {
        Err(wrenn_vmm::VmmError::io(
            "preparing the capsule",
            std::io::Error::other(e),
        ))
    });
    let vm = match built {
        Ok(vm) => vm,
        Err(e) => {
            if let Some(g) = Cgroup::named(&slot.addrs.netns) {
                g.remove();
            }
            let mut slot = slot;
            slot.release().await;
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
    };
    let info: Info = Arc::new(RwLock::new(rec));
    let envd = EnvdClient::new(envd_addr(&slot), None);
    let mut capsule = Capsule {
        dir,
        info: info.clone(),
        vm,
        slot,
        envd,
    };
    let started = async {
        capsule.transition(Transition::Start)?;
        capsule.start_vm(&snap.state()).await?;
        capsule
            .init_envd(true, resolved.envd_token.as_deref())
            .await?;
        let token = capsule
            .info
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .access_token
            .clone();
        capsule.envd = EnvdClient::new(envd_addr(&capsule.slot), Some(token));
        capsule.enable_discard().await;
        if disk_bytes > resolved.disk_bytes {
            capsule.grow_disk(disk_bytes).await?;
        }
        capsule.set_dns().await;
        capsule.transition(Transition::Ready)
    }
    .await;
    if let Err(e) = started {
        capsule.teardown().await;
        return Err(e);
    }
    let envd = capsule.envd.clone();
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(run(capsule, rx));
    Ok(Handle::new(info, tx, envd))
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

/// Takes over a capsule a previous agent left running or paused.
pub async fn adopt(
    dir: PathBuf,
    images_dir: &std::path::Path,
    qemu: PathBuf,
    upstreams: Arc<Vec<SocketAddr>>,
) -> Result<Handle> {
    let rec = record::load(&dir)?;
    let snap = snapshot::Snapshot {
        template_dir: rec
            .snapshot_dir
            .clone()
            .unwrap_or_else(|| images_dir.join(&rec.template)),
    };
    let egress = Egress {
        on: rec.egress,
        policy: rec.egress_policy.clone(),
    };
    let slot = Slot::adopt(rec.slot, egress, Some(upstreams)).await?;
    let mut config = snapshot::capsule_config(
        &snap,
        &dir,
        Net::Tap {
            netns: slot.addrs.netns.clone(),
            tap: netslot::TAP.into(),
        },
        qemu,
    )?;
    config.cgroup = Cgroup::named(&slot.addrs.netns).filter(|g| g.dirs.iter().all(|d| d.is_dir()));
    let vm = match (rec.state, rec.vmm_pid) {
        (CapsuleStatus::Running, Some(pid)) => QemuVm::adopt(config, pid).await?,
        (CapsuleStatus::Paused, _) => QemuVm::saved(config)?,
        (state, _) => {
            return Err(AgentError::FailedPrecondition(format!(
                "a {state} capsule cannot be adopted"
            )))
        }
    };
    let envd = EnvdClient::new(envd_addr(&slot), Some(rec.access_token.clone()));
    let info: Info = Arc::new(RwLock::new(rec));
    let capsule = Capsule {
        dir,
        info: info.clone(),
        vm,
        slot,
        envd: envd.clone(),
    };
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(run(capsule, rx));
    Ok(Handle::new(info, tx, envd))
}

/// The capsule's task: one operation at a time, until destroyed. A VMM that dies turns the
/// capsule to `error` and releases what it held.
async fn run(mut capsule: Capsule, mut rx: mpsc::Receiver<Op>) {
    while capsule.state() != CapsuleStatus::Error {
        let death = capsule.vm.death_watch();
        let op = tokio::select! {
            op = rx.recv() => op,
            _ = async {
                match death {
                    Some(mut d) => { let _ = d.wait_for(|x| x.is_some()).await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                let why = capsule.vm.status().to_string();
                capsule.fail(format!("the VMM died: {why}")).await;
                continue;
            }
        };
        let Some(op) = op else {
            // Every handle is gone: the agent is shutting down; leave the VM running.
            return;
        };
        match op {
            Op::Pause(reply) => {
                let _ = reply.send(capsule.pause(false).await);
            }
            Op::PauseForRestart(reply) => {
                let _ = reply.send(capsule.pause(true).await);
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
            Op::SetNetwork(egress, reply) => {
                let _ = reply.send(capsule.set_network(egress).await);
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
                let err = || AgentError::FailedPrecondition(format!("capsule is in error: {why}"));
                match other {
                    Op::Pause(r) | Op::PauseForRestart(r) | Op::Resume(r) => {
                        let _ = r.send(Err(err()));
                    }
                    Op::Snapshot { reply, .. } => {
                        let _ = reply.send(Err(err()));
                    }
                    Op::SetNetwork(_, r) => {
                        let _ = r.send(Err(err()));
                    }
                    Op::Destroy(_) => {}
                }
            }
        }
    }
}
