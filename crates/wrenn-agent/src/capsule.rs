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
use wrenn_types::{CapsuleState, Transition};
use wrenn_vmm::{snapshot, Net, QemuVm, Vmm};

use crate::{
    envd_client::{EnvdClient, ExecOutput, ExecRequest, InitRequest},
    error::{AgentError, Result},
    netslot::{self, Slot},
    record::{self, CapsuleRecord},
};

/// What a create needs.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub template: String,
    pub env_vars: HashMap<String, String>,
    pub metadata: HashMap<String, String>,
    pub egress: bool,
    pub timeout_secs: u32,
    pub on_timeout: crate::record::TimeoutAction,
}

/// Operations a capsule task performs.
pub enum Op {
    Pause(oneshot::Sender<Result<()>>),
    Resume(oneshot::Sender<Result<()>>),
    Destroy(oneshot::Sender<Result<()>>),
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
    pub async fn destroy(&self) -> Result<()> {
        self.call(Op::Destroy).await
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
        if state != CapsuleState::Running {
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

fn new_token() -> String {
    let mut b = [0u8; 24];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
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

    fn state(&self) -> CapsuleState {
        self.info.read().unwrap_or_else(|e| e.into_inner()).state
    }

    async fn init_envd(&self, first: bool) -> Result<()> {
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
        // The snapshot's envd has no token yet on first start; afterwards it needs the token.
        let previous = (!first).then_some(rec.access_token.as_str());
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

    async fn pause(&mut self) -> Result<()> {
        if self.state() != CapsuleState::Running {
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
        self.transition(Transition::Pause)
    }

    async fn resume(&mut self) -> Result<()> {
        if self.state() != CapsuleState::Paused {
            return Err(AgentError::FailedPrecondition(format!(
                "capsule is {}, not paused",
                self.state()
            )));
        }
        let resumed = async {
            self.start_vm(&self.dir.join("state")).await?;
            self.init_envd(false).await
        }
        .await;
        if let Err(e) = resumed {
            self.fail(format!("resuming failed: {e}")).await;
            return Err(e);
        }
        self.transition(Transition::Resume)
    }

    /// Turns the capsule to `error` with `why`, stops its VMM and releases its slot at once;
    /// the folder stays (for the console log) until destroy.
    async fn fail(&mut self, why: String) {
        tracing::warn!(id = %self.info.read().unwrap_or_else(|e| e.into_inner()).id, %why, "capsule failed");
        let _ = self.vm.stop().await;
        self.slot.release().await;
        let mut rec = self.info.write().unwrap_or_else(|e| e.into_inner());
        rec.state = rec
            .state
            .apply(Transition::Fail)
            .unwrap_or(CapsuleState::Error);
        rec.error = Some(why);
        rec.vmm_pid = None;
        let _ = record::save(&self.dir, &rec);
    }

    /// Marks the capsule stopped and removes everything it owns.
    async fn destroy(&mut self) {
        {
            let mut rec = self.info.write().unwrap_or_else(|e| e.into_inner());
            rec.state = rec
                .state
                .apply(Transition::Stop)
                .unwrap_or(CapsuleState::Stopped);
        }
        self.teardown().await;
    }

    /// Stops the VM and removes everything the capsule owns; the folder goes last.
    async fn teardown(&mut self) {
        let _ = self.vm.stop().await;
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
    template_dir: PathBuf,
    slot_index: u32,
    spec: CreateSpec,
    qemu: PathBuf,
) -> Result<Handle> {
    std::fs::create_dir_all(&dir).map_err(|e| AgentError::io("creating the capsule folder", e))?;
    let snap = snapshot::Snapshot {
        template_dir: template_dir.clone(),
    };
    let Some(shape) = snap.spec() else {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(AgentError::NotFound(format!(
            "template {} has no ready snapshot",
            spec.template
        )));
    };
    let rec = CapsuleRecord {
        id: id.clone(),
        template: spec.template.clone(),
        vcpus: shape.vcpus,
        memory_mib: shape.memory_mib,
        slot: slot_index,
        egress: spec.egress,
        state: CapsuleState::Pending,
        created_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        env_vars: spec.env_vars,
        metadata: spec.metadata,
        access_token: new_token(),
        vmm_pid: None,
        error: None,
        timeout_secs: spec.timeout_secs,
        on_timeout: spec.on_timeout,
    };
    if let Err(e) = record::save(&dir, &rec) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    let slot = match Slot::create(slot_index, spec.egress).await {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let built = snapshot::prepare_capsule(
        &snap,
        &dir,
        Net::Tap {
            netns: slot.addrs.netns.clone(),
            tap: netslot::TAP.into(),
        },
        qemu,
    )
    .and_then(QemuVm::new);
    let vm = match built {
        Ok(vm) => vm,
        Err(e) => {
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
        capsule.init_envd(true).await?;
        let token = capsule
            .info
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .access_token
            .clone();
        capsule.envd = EnvdClient::new(envd_addr(&capsule.slot), Some(token));
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
pub async fn adopt(dir: PathBuf, template_dir: PathBuf, qemu: PathBuf) -> Result<Handle> {
    let rec = record::load(&dir)?;
    let snap = snapshot::Snapshot { template_dir };
    let slot = Slot::adopt(rec.slot, rec.egress).await?;
    let config = snapshot::capsule_config(
        &snap,
        &dir,
        Net::Tap {
            netns: slot.addrs.netns.clone(),
            tap: netslot::TAP.into(),
        },
        qemu,
    )?;
    let vm = match (rec.state, rec.vmm_pid) {
        (CapsuleState::Running, Some(pid)) => QemuVm::adopt(config, pid).await?,
        (CapsuleState::Paused, _) => QemuVm::saved(config)?,
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
    while capsule.state() != CapsuleState::Error {
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
                let _ = reply.send(capsule.pause().await);
            }
            Op::Resume(reply) => {
                let _ = reply.send(capsule.resume().await);
            }
            Op::Destroy(reply) => {
                capsule.destroy().await;
                let _ = reply.send(Ok(()));
                return;
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
            Op::Pause(r) | Op::Resume(r) => {
                let why = capsule
                    .info
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .error
                    .clone();
                let _ = r.send(Err(AgentError::FailedPrecondition(format!(
                    "capsule is in error: {}",
                    why.unwrap_or_default()
                ))));
            }
        }
    }
}
