//! Making a capsule (from a template snapshot, rolled back on any failure) and taking over one
//! a previous agent left running or paused.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use tokio::sync::mpsc;
use wrenn_types::{CapsuleStatus, Transition};
use wrenn_vmm::{
    cgroup::{Cgroup, Limits},
    snapshot, Backend, Net, Vmm,
};

use super::{
    machine::{enable_discard, envd_addr, new_token, set_dns, Capsule},
    run, CreateSpec, Handle, Info, VMM_OVERHEAD_MIB,
};
use crate::{
    envd_client::EnvdClient,
    error::{AgentError, Result},
    netslot::{self, Egress, Slot},
    record::{self, CapsuleRecord},
    templates::Resolved,
};

/// What every capsule of this host runs with.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The VM backend ([`crate::manager::AgentConfig::backend`]).
    pub backend: Backend,
    /// The backend's program (QEMU's binary).
    pub program: PathBuf,
    /// Name servers the slot resolvers forward to.
    pub upstreams: Arc<Vec<SocketAddr>>,
    /// How each VMM is sized.
    pub tuning: wrenn_vmm::Tuning,
}

/// Creates a capsule from the template snapshot in `template_dir`, inside `dir`, on `slot`
/// (or on `warm`: a slot and VMM made ahead for `dir`, from the warm pool). On any failure
/// everything made so far is removed.
pub async fn create(
    id: String,
    dir: PathBuf,
    resolved: Resolved,
    slot_index: u32,
    spec: CreateSpec,
    runtime: &Runtime,
    warm: Option<Prepared>,
) -> Result<Handle> {
    let disk_bytes = if spec.disk_mib == 0 {
        resolved.disk_bytes
    } else {
        u64::from(spec.disk_mib) << 20
    };
    let early = if disk_bytes < resolved.disk_bytes {
        Err(AgentError::DiskBelowTemplate {
            template_mib: resolved.disk_bytes >> 20,
        })
    } else {
        // Memory, disk, device state, logs and the envd token: a 0700 folder of 0600 files.
        wrenn_vmm::files::private_dir(&dir).map_err(AgentError::from)
    };
    if let Err(e) = early {
        if let Some(w) = warm {
            w.discard().await;
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(e);
    }
    let t0 = std::time::Instant::now();
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
        if let Some(w) = warm {
            w.discard().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    let egress = Egress {
        on: spec.egress,
        policy: spec.egress_policy.clone(),
    };
    let prepared = match warm {
        // A warm machine: its slot was made with egress off; this capsule's own egress
        // replaces that before its guest runs again.
        Some(w) => match w.slot.set_egress(egress).await {
            Ok(()) => Ok(w),
            Err(e) => {
                w.discard().await;
                Err(e)
            }
        },
        None => prepare(&dir, &snap, &shape, slot_index, egress, runtime).await,
    };
    let prepared_in = t0.elapsed();
    let Prepared { slot, vm } = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    // A ready machine of the pool ran the template's guest up to envd and stopped there.
    let ready = vm.status() == wrenn_vmm::VmStatus::Paused;
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
        if ready {
            capsule.vm.resume().await?;
        } else {
            capsule.start_vm(&snap.state()).await?;
        }
        let started_in = t0.elapsed();
        capsule
            .init_envd(true, resolved.envd_token.as_deref())
            .await?;
        tracing::debug!(
            %id,
            ready,
            prepare_ms = prepared_in.as_millis() as u64,
            start_ms = (started_in - prepared_in).as_millis() as u64,
            init_ms = (t0.elapsed() - started_in).as_millis() as u64,
            "capsule started"
        );
        let token = capsule
            .info
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .access_token
            .clone();
        // The same client: the connection `/init` used carries on (a guest under TCG pays
        // for each accept).
        capsule.envd.token = Some(token);
        // Two guest commands fewer for a capsule's snapshot (forks above all) and a ready
        // machine: its guest already has both.
        let set_up = resolved.of_capsule() || ready;
        if !set_up {
            enable_discard(&capsule.envd).await;
        }
        if disk_bytes > resolved.disk_bytes {
            capsule.grow_disk(disk_bytes).await?;
        }
        if !set_up {
            set_dns(&capsule.envd).await;
        }
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

/// Takes over a capsule a previous agent left running or paused.
pub async fn adopt(
    dir: PathBuf,
    images_dir: &std::path::Path,
    runtime: &Runtime,
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
    let slot = Slot::adopt(rec.slot, egress, Some(runtime.upstreams.clone())).await?;
    let mut config = snapshot::capsule_config(
        &snap,
        &dir,
        Net::Tap {
            netns: slot.addrs.netns.clone(),
            tap: netslot::TAP.into(),
        },
        runtime.program.clone(),
    )?;
    config.cgroup = Cgroup::named(&slot.addrs.netns).filter(|g| g.dirs.iter().all(|d| d.is_dir()));
    config.tuning = runtime.tuning;
    let vm = match (rec.state, rec.vmm_pid) {
        (CapsuleStatus::Running, Some(pid)) => runtime.backend.adopt(config, pid).await?,
        (CapsuleStatus::Paused, _) => runtime.backend.saved(config)?,
        (state, _) => return Err(AgentError::NotAdoptable { state }),
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

/// A capsule's network slot and VM, made before its guest runs: the VM's files in the capsule
/// folder, its cgroup, and (once [`Prepared::start_waiting`] ran) its VMM waiting for the
/// state. What the warm pool keeps, and the first half of every create.
pub struct Prepared {
    pub slot: Slot,
    pub vm: wrenn_vmm::Vm,
}

impl Prepared {
    /// Starts the VMM ahead, waiting for the state (a warm machine).
    pub async fn start_waiting(&mut self) -> Result<()> {
        Ok(self.vm.start_waiting().await?)
    }

    /// Runs the template's guest (the snapshot `snap`, whose envd has `envd_token`) in the
    /// VMM until its envd answers, sets it up as every capsule of a base template is (root
    /// mounted with discard, the slot resolver), and stops it there: a ready machine, which a
    /// create only runs on (no state load, and the guest's code already translated under
    /// TCG). Its guest runs nothing but the template's own; the create gives it its identity
    /// (envd token, environment, clock) and its own egress before it runs again.
    pub async fn run_ready(
        &mut self,
        snap: &snapshot::Snapshot,
        envd_token: Option<&str>,
    ) -> Result<()> {
        let addr = envd_addr(&self.slot);
        self.vm.restore(&snap.state()).await?;
        self.vm.resume().await?;
        self.vm
            .wait_ready(addr, std::time::Duration::from_secs(60))
            .await?;
        if envd_token.is_none() {
            let envd = EnvdClient::new(addr, None);
            enable_discard(&envd).await;
            set_dns(&envd).await;
        }
        Ok(self.vm.pause().await?)
    }

    /// Stops the VMM and releases the cgroup and the slot (the folder is the caller's).
    pub async fn discard(mut self) {
        let _ = self.vm.stop().await;
        if let Some(g) = Cgroup::named(&self.slot.addrs.netns) {
            g.remove();
        }
        self.slot.release().await;
    }
}

/// Makes slot `slot_index` (with `egress`), the VMM's cgroup for `shape`, and the VM's files
/// in `dir` from `snap`: everything a capsule needs before its VMM starts. On failure nothing
/// is left but `dir`.
pub async fn prepare(
    dir: &std::path::Path,
    snap: &snapshot::Snapshot,
    shape: &snapshot::SnapshotSpec,
    slot_index: u32,
    egress: Egress,
    runtime: &Runtime,
) -> Result<Prepared> {
    let t = std::time::Instant::now();
    let slot = Slot::create_with(slot_index, egress, Some(runtime.upstreams.clone())).await?;
    let slot_made = t.elapsed();
    let limits = Limits {
        cpus: shape.vcpus,
        memory_bytes: (u64::from(shape.memory_mib) + VMM_OVERHEAD_MIB) << 20,
    };
    // The memory link and `qemu-img` block: off the async workers.
    let (netns, snap_c, dir_c) = (slot.addrs.netns.clone(), snap.clone(), dir.to_path_buf());
    let (backend, program, tuning) = (runtime.backend, runtime.program.clone(), runtime.tuning);
    let built = tokio::task::spawn_blocking(move || {
        let cgroup = Cgroup::create(&netns, limits)?;
        let mut config = snapshot::prepare_capsule(
            &snap_c,
            &dir_c,
            Net::Tap {
                netns,
                tap: netslot::TAP.into(),
            },
            program,
        )?;
        config.cgroup = cgroup;
        config.tuning = tuning;
        backend.create(config)
    })
    .await
    .unwrap_or_else(|e| {
        Err(wrenn_vmm::VmmError::io(
            "preparing the capsule",
            std::io::Error::other(e),
        ))
    });
    tracing::debug!(
        slot_index,
        slot_ms = slot_made.as_millis() as u64,
        files_ms = (t.elapsed() - slot_made).as_millis() as u64,
        "capsule prepared"
    );
    match built {
        Ok(vm) => Ok(Prepared { slot, vm }),
        Err(e) => {
            if let Some(g) = Cgroup::named(&slot.addrs.netns) {
                g.remove();
            }
            let mut slot = slot;
            slot.release().await;
            Err(e.into())
        }
    }
}
