//! The capsules of this host: ids, slots, folders, and the tasks that own them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use wrenn_types::{CapsuleStatus, Id, IdKind};

use crate::{
    capsule::{self, CreateSpec, Handle},
    envd_client::{ExecOutput, ExecRequest},
    error::{AgentError, Result},
    netslot::{self, SlotPool},
    record::{self, CapsuleRecord},
    templates::{ShapePolicy, TemplateInfo, Templates},
};

fn kill_if_qemu_of(pid: u32, dir: &std::path::Path) {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmd).contains(&dir.display().to_string()) {
        // SAFETY: plain kill(2) of a QEMU that belongs to this capsule folder.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Kills QEMUs under `capsules_dir` that no adopted capsule owns.
fn kill_stray_qemus(capsules_dir: &std::path::Path, adopted: &HashMap<String, Handle>) {
    let owned: Vec<u32> = adopted
        .values()
        .filter_map(|h| h.record().vmm_pid)
        .collect();
    for (pid, cmd) in wrenn_vmm::qemu::processes_under(capsules_dir) {
        if !owned.contains(&pid) {
            tracing::info!(pid, %cmd, "killing a stray QEMU");
            // SAFETY: plain kill(2) of a QEMU started for a capsule folder nobody owns.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Where the agent keeps things and what it runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `WRENN_DIR`: `capsules/<id>/` live here.
    pub data_dir: PathBuf,
    /// Built templates (`<template>/snapshot/`).
    pub images_dir: PathBuf,
    pub qemu: PathBuf,
    /// Most capsules this host runs at once.
    pub max_capsules: usize,
    /// The network slots this agent owns (and cleans up); one agent per host normally owns
    /// [`DEFAULT_SLOTS`].
    pub slots: std::ops::RangeInclusive<u32>,
    /// The machine shapes offered besides each template's own, and the disk budget of their
    /// snapshots.
    pub shapes: ShapePolicy,
    /// Name servers the slot resolvers forward to (empty: the host's `/etc/resolv.conf`).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Private IPv4 ranges capsules may reach (`--egress-allow-private`); by default none.
    pub egress_allow_private: Vec<String>,
}

/// The slots of a host's agent; the top of the range is left to template builds.
pub const DEFAULT_SLOTS: std::ops::RangeInclusive<u32> = 1..=16_000;

/// Memory the host keeps for itself: creates that would leave less are refused.
const HOST_RESERVE_MIB: u64 = 512;
/// Free disk a create needs beyond the capsule's memory file: its disk overlay's first
/// writes, its records and logs.
const CREATE_DISK_MARGIN_MIB: u64 = 64;

/// Disk the host keeps free under the capsules folder: 5% of the filesystem, at most 2 GiB.
fn disk_reserve(total: u64) -> u64 {
    (total / 20).min(2 << 30)
}

/// Bytes a file takes on disk (0 when missing).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// Removes the VMM groups of slots in `range` that no adopted capsule holds, killing what
/// still runs in them.
fn cleanup_cgroups(keep: &[u32], range: &std::ops::RangeInclusive<u32>) {
    for name in wrenn_vmm::cgroup::existing() {
        let Some(n) = name
            .strip_prefix(netslot::NETNS_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !range.contains(&n) || keep.contains(&n) {
            continue;
        }
        if let Some(group) = wrenn_vmm::cgroup::Cgroup::named(&name) {
            for pid in group.pids() {
                // SAFETY: plain kill(2) of a process left in an orphaned VMM group.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            tracing::info!(%name, "removing an orphaned VMM cgroup");
            group.remove();
        }
    }
}

/// All capsules of this host.
pub struct Manager {
    config: AgentConfig,
    capsules: Mutex<HashMap<String, Handle>>,
    slots: SlotPool,
    templates: Arc<Templates>,
    upstreams: Arc<Vec<std::net::SocketAddr>>,
}

impl Manager {
    /// Prepares the host (firewall rules, folders), re-adopts the running and paused capsules
    /// a previous agent left (from `capsule.json` and their live QEMU), and removes whatever
    /// nothing owns: other capsule folders, network slots and QEMU processes.
    pub async fn start(config: AgentConfig) -> Result<Manager> {
        let capsules_dir = config.data_dir.join("capsules");
        wrenn_vmm::files::private_dir(&capsules_dir)?;
        let allow_private = netslot::parse_private_allow(&config.egress_allow_private)?;
        netslot::set_host_rules(&allow_private).await?;
        let upstreams = Arc::new(crate::dns::upstreams(&config.dns_upstreams));
        if upstreams.is_empty() {
            tracing::warn!("no upstream name servers: capsules cannot resolve names");
        }
        let templates = Arc::new(Templates::new(
            config.images_dir.clone(),
            config.qemu.clone(),
            config.shapes.clone(),
        ));
        templates.clean_leftovers();
        templates.make_private();
        let mut capsules = HashMap::new();
        let mut slots = Vec::new();
        for entry in std::fs::read_dir(&capsules_dir)
            .map_err(|e| AgentError::io("listing capsules", e))?
            .flatten()
        {
            let dir = entry.path();
            // Folders an earlier version left 0755 with 0644 files: private before anything.
            if let Err(e) = wrenn_vmm::files::private_tree(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "making a capsule folder private");
            }
            let rec = record::load(&dir).ok();
            let adopted = match &rec {
                Some(r) if matches!(r.state, CapsuleStatus::Running | CapsuleStatus::Paused) => {
                    capsule::adopt(
                        dir.clone(),
                        &config.images_dir,
                        config.qemu.clone(),
                        upstreams.clone(),
                    )
                    .await
                }
                _ => Err(AgentError::FailedPrecondition("nothing to adopt".into())),
            };
            match adopted {
                Ok(handle) => {
                    let r = handle.record();
                    tracing::info!(id = %r.id, state = %r.state, "re-adopted a capsule");
                    slots.push(r.slot);
                    capsules.insert(r.id.clone(), handle);
                }
                Err(e) => {
                    tracing::info!(dir = %dir.display(), reason = %e, "removing a capsule that cannot be adopted");
                    if let Some(pid) = rec.as_ref().and_then(|r| r.vmm_pid) {
                        kill_if_qemu_of(pid, &dir);
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        let removed = netslot::cleanup_orphans(&slots, &config.slots).await?;
        if !removed.is_empty() {
            tracing::info!(?removed, "removed orphaned network slots");
        }
        kill_stray_qemus(&capsules_dir, &capsules);
        cleanup_cgroups(&slots, &config.slots);
        if wrenn_vmm::cgroup::bases().is_none() {
            tracing::warn!("no usable cgroups on this host: VMMs run without CPU and memory caps");
        }
        Ok(Manager {
            slots: SlotPool::new(config.slots.clone(), slots),
            config,
            capsules: Mutex::new(capsules),
            templates,
            upstreams,
        })
    }

    /// Whether a capsule restores from a snapshot in template folder `dir`.
    fn template_in_use(&self, dir: &Path) -> bool {
        let images = self.config.images_dir.clone();
        self.list().iter().any(|r| {
            r.snapshot_dir
                .clone()
                .unwrap_or_else(|| images.join(&r.template))
                .starts_with(dir)
        })
    }

    /// Refuses a create that would take more memory than the host has: running capsules'
    /// RAM plus their VMMs' overhead, plus the new one, plus a reserve for the host.
    fn check_capacity(&self, memory_mib: u32) -> Result<()> {
        let list = self.list();
        if list.len() >= self.config.max_capsules {
            return Err(AgentError::ResourceExhausted(format!(
                "this host already runs {} capsules (its limit)",
                list.len()
            )));
        }
        let committed: u64 = list
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    CapsuleStatus::Running | CapsuleStatus::Starting | CapsuleStatus::Pending
                )
            })
            .map(|r| u64::from(r.memory_mib) + capsule::VMM_OVERHEAD_MIB)
            .sum();
        let total = host_memory_bytes() >> 20;
        let wanted = u64::from(memory_mib) + capsule::VMM_OVERHEAD_MIB;
        if wanted + HOST_RESERVE_MIB > total {
            // Never, whatever else runs: the request's fault, not the host's state.
            return Err(AgentError::InvalidArgument(format!(
                "{memory_mib} MiB of memory can never fit on this host ({total} MiB in all, \
                 {HOST_RESERVE_MIB} MiB kept for the host)"
            )));
        }
        if committed + wanted + HOST_RESERVE_MIB > total {
            return Err(AgentError::ResourceExhausted(format!(
                "not enough memory on this host: {wanted} MiB asked, {} MiB free of {total} MiB",
                total.saturating_sub(committed + HOST_RESERVE_MIB)
            )));
        }
        Ok(())
    }

    /// Refuses a create whose disk and memory file (allocated in full at create, so a full disk
    /// can never fault a running guest's RAM) could not be written in full on the
    /// filesystem that holds capsule folders (`statvfs` of it, so what anything else on the
    /// host uses counts too). Every live capsule may still grow its overlay to its disk size
    /// and its memory file to its RAM: that promised growth counts as used. A request larger
    /// than the whole filesystem is `invalid_argument` (it can never fit); one that does not
    /// fit now is `insufficient_storage` (507; it may fit once capsules go).
    fn check_disk(&self, disk_bytes: u64, memory_mib: u32) -> Result<()> {
        let dir = self.config.data_dir.join("capsules");
        let st = nix::sys::statvfs::statvfs(&dir)
            .map_err(|e| AgentError::io("reading the free disk space", std::io::Error::from(e)))?;
        let total = st.blocks() * st.fragment_size();
        let free = st.blocks_available() * st.fragment_size();
        let reserve = disk_reserve(total);
        let wanted = disk_bytes + ((u64::from(memory_mib) + CREATE_DISK_MARGIN_MIB) << 20);
        let mib = |b: u64| b >> 20;
        if wanted + reserve > total {
            return Err(AgentError::InvalidArgument(format!(
                "a {} MiB disk (with {memory_mib} MiB of memory) can never fit on this host: \
                 its capsule storage holds {} MiB in all",
                mib(disk_bytes),
                mib(total.saturating_sub(reserve))
            )));
        }
        let promised: u64 = self
            .list()
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    CapsuleStatus::Running
                        | CapsuleStatus::Paused
                        | CapsuleStatus::Starting
                        | CapsuleStatus::Pending
                )
            })
            .map(|r| {
                let d = dir.join(&r.id);
                (u64::from(r.disk_mib) << 20).saturating_sub(allocated(&d.join("disk.qcow2")))
                    + (u64::from(r.memory_mib) << 20).saturating_sub(allocated(&d.join("memory")))
            })
            .sum();
        if promised + wanted + reserve > free {
            return Err(AgentError::InsufficientStorage(format!(
                "the host is out of disk space now: {} MiB asked, {} MiB free once running \
                 capsules' disks and memory may fill; try again later or ask for a smaller disk",
                mib(wanted),
                mib(free.saturating_sub(promised + reserve))
            )));
        }
        Ok(())
    }

    fn handle(&self, id: &str) -> Result<Handle> {
        self.capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("capsule {id} not found")))
    }

    /// Creates a capsule from a template's snapshot (of the asked shape, made on first use).
    pub async fn create(&self, spec: CreateSpec) -> Result<CapsuleRecord> {
        if wrenn_types::TemplateName::parse(&spec.template).is_err() {
            return Err(AgentError::BadTemplateName(spec.template));
        }
        validate_shape(&spec)?;
        self.templates.require(&spec.template, spec.kind)?;
        let mut spec = spec;
        spec.egress_policy = wrenn_types::egress::EgressPolicy::new(
            &spec.egress_policy.allow,
            &spec.egress_policy.deny,
        )
        .map_err(|e| AgentError::InvalidArgument(e.to_string()))?;
        let own = self
            .templates
            .check(&spec.template, spec.vcpus, spec.memory_mib)?;
        let memory = if spec.memory_mib == 0 {
            own.memory_mib
        } else {
            spec.memory_mib
        };
        self.check_capacity(memory)?;
        let disk_bytes = match spec.disk_mib {
            0 => self.templates.disk_bytes(&spec.template)?,
            d => u64::from(d) << 20,
        };
        self.check_disk(disk_bytes, memory)?;
        let in_use = |d: &Path| self.template_in_use(d);
        let resolved = self
            .templates
            .resolve(
                &spec.template,
                spec.vcpus,
                spec.memory_mib,
                &self.slots,
                &in_use,
            )
            .await?;
        // Checked again: the shape may have taken a while to make.
        self.check_capacity(resolved.spec.memory_mib)?;
        self.check_disk(disk_bytes, resolved.spec.memory_mib)?;
        let id = Id::new(IdKind::Capsule).to_string();
        let slot = self.slots.take()?;
        let dir = self.config.data_dir.join("capsules").join(&id);
        let made = capsule::create(
            id.clone(),
            dir,
            resolved,
            slot,
            spec,
            self.config.qemu.clone(),
            self.upstreams.clone(),
        )
        .await;
        match made {
            Ok(handle) => {
                let rec = handle.record();
                self.capsules
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, handle);
                Ok(rec)
            }
            Err(e) => {
                self.slots.free(slot);
                Err(e)
            }
        }
    }

    pub fn get(&self, id: &str) -> Result<CapsuleRecord> {
        Ok(self.handle(id)?.record())
    }

    pub fn list(&self) -> Vec<CapsuleRecord> {
        let mut v: Vec<_> = self
            .capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Handle::record)
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub async fn pause(&self, id: &str) -> Result<CapsuleRecord> {
        let h = self.handle(id)?;
        h.pause().await?;
        Ok(h.record())
    }

    /// Changes a running or paused capsule's egress (validated here).
    pub async fn set_network(
        &self,
        id: &str,
        on: bool,
        policy: &wrenn_types::egress::EgressPolicy,
    ) -> Result<CapsuleRecord> {
        let policy = wrenn_types::egress::EgressPolicy::new(&policy.allow, &policy.deny)
            .map_err(|e| AgentError::InvalidArgument(e.to_string()))?;
        let h = self.handle(id)?;
        h.set_network(netslot::Egress { on, policy }).await?;
        Ok(h.record())
    }

    pub async fn resume(&self, id: &str) -> Result<CapsuleRecord> {
        let h = self.handle(id)?;
        h.resume().await?;
        Ok(h.record())
    }

    /// Pauses every running capsule for the host's shutdown: their state goes to disk, and
    /// their records say the shutdown paused them ([`Manager::paused_for_restart`] lists them
    /// at the next start). Returns how many were paused; failures are logged.
    pub async fn pause_all(&self) -> usize {
        let running: Vec<String> = self
            .list()
            .into_iter()
            .filter(|r| r.state == CapsuleStatus::Running)
            .map(|r| r.id)
            .collect();
        let mut paused = 0;
        for id in running {
            let done = match self.handle(&id) {
                Ok(h) => h.pause_for_restart().await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => paused += 1,
                Err(e) => tracing::warn!(%id, error = %e, "pausing at shutdown"),
            }
        }
        paused
    }

    /// The capsules the last shutdown paused and nothing has resumed since (oldest first):
    /// those to resume after a start. A capsule its user paused is never among them.
    pub fn paused_for_restart(&self) -> Vec<String> {
        let mut v: Vec<CapsuleRecord> = self
            .list()
            .into_iter()
            .filter(|r| r.state == CapsuleStatus::Paused && r.resume_after_restart)
            .collect();
        v.sort_by_key(|r| r.created_at_unix);
        v.into_iter().map(|r| r.id).collect()
    }

    /// Marks a capsule active (resets its timeout).
    pub fn ping(&self, id: &str) -> Result<()> {
        let h = self.handle(id)?;
        if h.record().state != CapsuleStatus::Running {
            return Err(AgentError::FailedPrecondition(format!(
                "capsule {id} is {}, not running",
                h.record().state
            )));
        }
        h.touch();
        Ok(())
    }

    /// Starts the reaper: every second, running capsules idle for longer than their timeout
    /// are paused or destroyed, as each asks.
    pub fn spawn_reaper(self: &std::sync::Arc<Self>) {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(mgr) = weak.upgrade() else { return };
                let expired: Vec<(String, record::TimeoutAction)> = mgr
                    .capsules
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .filter_map(|h| {
                        let r = h.record();
                        (r.state == CapsuleStatus::Running
                            && r.timeout_secs > 0
                            && h.idle_secs() >= i64::from(r.timeout_secs))
                        .then_some((r.id, r.on_timeout))
                    })
                    .collect();
                for (id, action) in expired {
                    tracing::info!(%id, ?action, "capsule timed out");
                    let result = match action {
                        record::TimeoutAction::Pause => mgr.pause(&id).await.map(|_| ()),
                        record::TimeoutAction::Destroy => mgr.destroy(&id).await,
                    };
                    if let Err(e) = result {
                        tracing::warn!(%id, error = %e, "timeout action failed; destroying");
                        let _ = mgr.destroy(&id).await;
                    }
                }
            }
        });
    }

    /// Starts the sampler: every second, each running capsule's VMM CPU, memory and disk use.
    pub fn spawn_sampler(self: &std::sync::Arc<Self>) {
        let weak = std::sync::Arc::downgrade(self);
        let data_dir = self.config.data_dir.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(mgr) = weak.upgrade() else { return };
                let handles: Vec<Handle> = mgr
                    .capsules
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect();
                drop(mgr);
                for h in handles {
                    let r = h.record();
                    let (Some(pid), CapsuleStatus::Running) = (r.vmm_pid, r.state) else {
                        continue;
                    };
                    let disk = data_dir.join("capsules").join(&r.id).join("disk.qcow2");
                    let mut m = h.metrics.lock().unwrap_or_else(|e| e.into_inner());
                    let (history, clock) = &mut *m;
                    if let Some(p) = crate::metrics::sample(pid, r.vcpus, &disk, clock) {
                        history.record(p);
                    }
                }
            }
        });
    }

    /// A capsule's resource use over the last `range_secs`.
    pub fn metrics(&self, id: &str, range_secs: i64) -> Result<Vec<crate::metrics::Point>> {
        let h = self.handle(id)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let m = h.metrics.lock().unwrap_or_else(|e| e.into_inner());
        Ok(m.0.range(range_secs, now))
    }

    /// The envd client of a running capsule.
    pub fn envd(&self, id: &str) -> Result<crate::envd_client::EnvdClient> {
        self.handle(id)?.envd()
    }

    pub async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecOutput> {
        self.handle(id)?.exec(req).await
    }

    pub async fn destroy(&self, id: &str) -> Result<()> {
        let h = self.handle(id)?;
        let slot = h.record().slot;
        h.destroy().await?;
        self.capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.slots.free(slot);
        Ok(())
    }

    /// Makes template `name` from capsule `id` (paused first if it runs; it stays paused).
    pub async fn snapshot(&self, id: &str, name: &str, overwrite: bool) -> Result<TemplateInfo> {
        let h = self.handle(id)?;
        self.templates.dir(name)?;
        let others: Vec<CapsuleRecord> = self.list().into_iter().filter(|r| r.id != id).collect();
        let images = self.config.images_dir.clone();
        let in_use = Box::new(move |dir: &Path| {
            others.iter().any(|r| {
                r.snapshot_dir
                    .clone()
                    .unwrap_or_else(|| images.join(&r.template))
                    .starts_with(dir)
            })
        });
        h.snapshot(name.into(), overwrite, self.templates.clone(), in_use)
            .await
    }

    pub fn templates(&self) -> Vec<TemplateInfo> {
        self.templates.list()
    }

    /// Deletes a snapshot template no capsule uses.
    pub fn delete_template(&self, name: &str) -> Result<()> {
        self.templates.delete(name, |d| self.template_in_use(d))
    }

    /// What this host is and how full it is.
    pub fn host_info(&self) -> wrenn_proto::agent::v1::HostInfoResponse {
        let (accel, reason) = wrenn_vmm::accel::detect();
        let disk = nix::sys::statvfs::statvfs(&self.config.data_dir)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        let templates = self.templates.list().into_iter().map(|t| t.name).collect();
        wrenn_proto::agent::v1::HostInfoResponse {
            arch: std::env::consts::ARCH.into(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_bytes: host_memory_bytes(),
            disk_bytes: disk,
            accel: accel.as_str().into(),
            accel_reason: reason,
            capsules: self.list().len() as u32,
            max_capsules: self.config.max_capsules as u32,
            templates,
        }
    }

    /// The envd address and token of a capsule (for tests and the proxy).
    pub fn envd_of(&self, id: &str) -> Result<(std::net::SocketAddr, String)> {
        let rec = self.get(id)?;
        let addrs = netslot::SlotAddrs::new(rec.slot)?;
        Ok((
            std::net::SocketAddr::new(addrs.capsule_ip.into(), wrenn_vmm::config::ENVD_PORT),
            rec.access_token,
        ))
    }
}

fn host_memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The shapes a capsule may ask for (0 everywhere: the template's).
fn validate_shape(spec: &CreateSpec) -> Result<()> {
    let bad = |m: String| Err(AgentError::InvalidArgument(m));
    if spec.vcpus > 32 {
        return bad(format!("vcpus must be 1..=32, not {}", spec.vcpus));
    }
    if spec.memory_mib != 0 && !(128..=65_536).contains(&spec.memory_mib) {
        return bad(format!(
            "memory_mib must be 128..=65536, not {}",
            spec.memory_mib
        ));
    }
    if !spec.memory_mib.is_multiple_of(2) {
        return bad(format!("memory_mib must be even, not {}", spec.memory_mib));
    }
    if spec.disk_mib > 1 << 20 {
        return bad(format!(
            "disk_mib must be at most 1 TiB, not {}",
            spec.disk_mib
        ));
    }
    Ok(())
}
