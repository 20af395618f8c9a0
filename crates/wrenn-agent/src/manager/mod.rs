//! The capsules of this host: ids, slots, folders, and the tasks that own them.
//!
//! `capacity` decides whether a create fits (memory, disk, shapes), `admission` how many
//! creates run at once, `load` what the host reports to its control plane (specs and load),
//! `recovery` what a start takes over or removes, `tasks` the reaper and the sampler.

mod admission;
mod capacity;
mod detach;
mod fork;
mod kept;
mod load;
mod pool;
mod recovery;
mod tasks;
mod transfer;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use wrenn_types::{CapsuleStatus, Id, IdKind};

pub use admission::default_create_parallelism;
use capacity::{host_memory_bytes, validate_shape};
pub use kept::DEFAULT_KEPT_FOR;
pub use load::host_specs;
use recovery::{cleanup_cgroups, kill_if_qemu_of, kill_stray_qemus};

pub use fork::{ForkPhases, Forked, MAX_FORK_CHILDREN};
pub use transfer::{Chunks, Imported};

use crate::{
    capsule::{self, CreateSpec, Handle},
    envd_client::{ExecOutput, ExecRequest},
    error::{AgentError, Result},
    netslot::{self, SlotPool},
    record::{self, CapsuleRecord},
    templates::{ShapePolicy, TemplateInfo, TemplateKind, Templates},
};

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
    /// The static envd binary: a base template this build of Wrenn knows (`minimal`, `python`)
    /// is built here the first time a create needs it. `None`: only templates already here.
    pub envd: Option<PathBuf>,
    /// How each capsule's VMM is sized (TCG translation cache, transparent huge pages).
    pub vmm: wrenn_vmm::Tuning,
}

impl AgentConfig {
    /// The VM backend capsules run on: QEMU, whose binary is [`AgentConfig::qemu`] (the one
    /// place a backend is chosen).
    pub fn backend(&self) -> wrenn_vmm::Backend {
        wrenn_vmm::Backend::Qemu
    }
}

/// The slots of a host's agent; the top of the range is left to template builds.
pub const DEFAULT_SLOTS: std::ops::RangeInclusive<u32> = 1..=16_000;

/// All capsules of this host.
pub struct Manager {
    config: AgentConfig,
    capsules: Mutex<HashMap<String, Handle>>,
    slots: SlotPool,
    templates: Arc<Templates>,
    runtime: capsule::Runtime,
    pool: Arc<pool::WarmPool>,
    /// Creates' turns: how many do their work at once.
    admission: admission::Admission,
    /// Paused capsules that keep their stopped VMM.
    kept: kept::Kept,
    /// The memory capsules may commit.
    memory: capacity::MemoryBudget,
    /// Fork images (`WRENN_DIR/forks`), kept while a capsule or another image needs them.
    forks: crate::forks::Forks,
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
        let runtime = capsule::Runtime {
            backend: config.backend(),
            program: config.qemu.clone(),
            upstreams,
            tuning: config.vmm,
        };
        let templates = Arc::new(
            Templates::new(
                config.images_dir.clone(),
                config.qemu.clone(),
                config.shapes.clone(),
            )
            .with_envd(config.envd.clone()),
        );
        templates.clean_leftovers();
        templates.make_private();
        let mut capsules = HashMap::new();
        let mut slots = Vec::new();
        for entry in std::fs::read_dir(&capsules_dir)
            .map_err(|e| AgentError::io("listing capsules", e))?
            .flatten()
        {
            let dir = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                // An import a crash cut short (`transfer`): never a capsule.
                tracing::info!(dir = %dir.display(), "removing a half-received capsule");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            // Folders an earlier version left 0755 with 0644 files: private before anything.
            if let Err(e) = wrenn_vmm::files::private_tree(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "making a capsule folder private");
            }
            let rec = record::load(&dir).ok();
            let adopted = match &rec {
                Some(r) if matches!(r.state, CapsuleStatus::Running | CapsuleStatus::Paused) => {
                    capsule::adopt(dir.clone(), &config.images_dir, &runtime).await
                }
                _ => Err(AgentError::NothingToAdopt),
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
        kill_stray_qemus(config.backend(), &capsules_dir, &capsules);
        cleanup_cgroups(&slots, &config.slots);
        if wrenn_vmm::cgroup::bases().is_none() {
            tracing::warn!("no usable cgroups on this host: VMMs run without CPU and memory caps");
        }
        let forks = crate::forks::Forks::open(config.data_dir.join("forks"))?;
        let manager = Manager {
            slots: SlotPool::new(config.slots.clone(), slots),
            config,
            capsules: Mutex::new(capsules),
            templates,
            runtime,
            pool: Arc::default(),
            kept: kept::Kept::default(),
            memory: capacity::MemoryBudget::default(),
            admission: admission::Admission::new(default_create_parallelism()),
            forks,
        };
        manager.collect_forks();
        Ok(manager)
    }

    /// Whether a capsule restores from a snapshot in template folder `dir`.
    fn template_in_use(&self, dir: &Path) -> bool {
        let images = self.config.images_dir.clone();
        self.list().iter().any(|r| {
            r.snapshot_dir
                .clone()
                .unwrap_or_else(|| images.join(&r.template))
                .starts_with(dir)
        }) || self.forks.hold(dir)
    }

    fn handle(&self, id: &str) -> Result<Handle> {
        self.capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::CapsuleNotFound { id: id.into() })
    }

    /// [`Manager::create`]'s work, run to its end by a task of its own (`detach`).
    async fn create_now(&self, spec: CreateSpec) -> Result<CapsuleRecord> {
        if wrenn_types::TemplateName::parse(&spec.template).is_err() {
            return Err(AgentError::BadTemplateName(spec.template));
        }
        validate_shape(&spec)?;
        let mut spec = spec;
        spec.egress_policy = wrenn_types::egress::EgressPolicy::new(
            &spec.egress_policy.allow,
            &spec.egress_policy.deny,
        )?;
        if spec.kind == TemplateKind::Base {
            self.templates
                .ensure_base(&spec.template, &self.slots)
                .await?;
        }
        self.templates.require(&spec.template, spec.kind)?;
        let own = self
            .templates
            .check(&spec.template, spec.vcpus, spec.memory_mib)?;
        let memory = if spec.memory_mib == 0 {
            own.memory_mib
        } else {
            spec.memory_mib
        };
        self.check_capacity_without_caches(memory)?;
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
        let _busy = self.pool.busy();
        let _turn = self.admission.turn().await;
        // A warm machine taken out of the pool no longer counts as a cache: checked again
        // (the shape may have taken a while to make, and other creates may have run while
        // this one waited for its turn), the capsule counts once.
        let mut stale = Vec::new();
        let warm = self.pool.take(&resolved, &mut stale);
        for w in stale {
            self.discard_warm(w).await;
        }
        let room = match self.make_room(resolved.spec.memory_mib, 1).await {
            Ok(()) => self.check_disk(disk_bytes, resolved.spec.memory_mib),
            Err(e) => Err(e),
        };
        if let Err(e) = room {
            if let Some(w) = warm {
                self.discard_warm(w).await;
            }
            return Err(e);
        }
        let (id, slot, prepared) = match warm {
            Some(w) => (w.id, w.slot_index, Some(w.prepared)),
            None => {
                let slot = match self.slots.take() {
                    Ok(s) => s,
                    // Warm machines hold slots: a create comes first.
                    Err(e) => match self.pool.pop_any() {
                        Some(w) => {
                            self.discard_warm(w).await;
                            self.slots.take()?
                        }
                        None => return Err(e),
                    },
                };
                (Id::new(IdKind::Capsule).to_string(), slot, None)
            }
        };
        let dir = self.config.data_dir.join("capsules").join(&id);
        let made = capsule::create(
            id.clone(),
            dir,
            resolved,
            slot,
            spec,
            &self.runtime,
            prepared,
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

    /// A user's pause (the VMM may be kept: [`Manager::set_keep_paused`]).
    pub async fn pause(&self, id: &str) -> Result<CapsuleRecord> {
        let h = self.handle(id)?;
        self.pause_keeping(&h).await?;
        Ok(h.record())
    }

    /// Changes a running or paused capsule's egress (validated here).
    pub async fn set_network(
        &self,
        id: &str,
        on: bool,
        policy: &wrenn_types::egress::EgressPolicy,
    ) -> Result<CapsuleRecord> {
        let policy = wrenn_types::egress::EgressPolicy::new(&policy.allow, &policy.deny)?;
        let h = self.handle(id)?;
        h.set_network(netslot::Egress { on, policy }).await?;
        Ok(h.record())
    }

    /// Resumes a paused capsule, if the memory budget has room for it (it counts from now
    /// on; its kept VMM, if any, counted already).
    pub async fn resume(&self, id: &str) -> Result<CapsuleRecord> {
        let h = self.handle(id)?;
        let rec = h.record();
        if rec.state == CapsuleStatus::Paused {
            self.kept.forget(id);
            if let Err(e) = self.make_room_to_resume(rec.memory_mib).await {
                // Its kept VMM is no longer counted: it ends, the capsule stays paused.
                let _ = h.release().await;
                return Err(e);
            }
        }
        h.resume().await?;
        Ok(h.record())
    }

    /// Pauses every running capsule for the host's shutdown: their state goes to disk, and
    /// their records say the shutdown paused them ([`Manager::paused_for_restart`] lists them
    /// at the next start). Returns how many were paused; failures are logged.
    pub async fn pause_all(&self) -> usize {
        // A shutdown: warm machines (no capsule yet) and kept VMMs are stopped.
        self.stop_idle_vmms().await;
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

    /// What an agent's stop ends while its capsules run on (to be re-adopted): the warm
    /// pool's machines and the VMMs paused capsules kept; none of them runs a capsule, and the
    /// paused ones resume from their files.
    pub async fn stop_idle_vmms(&self) {
        self.set_pool_size(0).await;
        self.release_every_kept().await;
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
            return Err(AgentError::NotRunning {
                id: Some(id.into()),
                state: h.record().state,
            });
        }
        h.touch();
        Ok(())
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
        self.kept.forget(id);
        h.destroy().await?;
        self.capsules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.slots.free(slot);
        self.collect_forks();
        Ok(())
    }

    /// Makes template `name` from capsule `id` (paused first if it runs; it stays paused): of
    /// its memory and disk, or with `fresh` of its disk booted afresh with those defaults.
    pub async fn snapshot(
        &self,
        id: &str,
        name: &str,
        overwrite: bool,
        fresh: Option<crate::templates::FreshDefaults>,
    ) -> Result<TemplateInfo> {
        let h = self.handle(id)?;
        self.templates.dir(name)?;
        // Made from its files (the capsule releases a VMM its pause kept).
        self.kept.forget(id);
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
        let Some(defaults) = fresh else {
            return h
                .snapshot(name.into(), overwrite, self.templates.clone(), in_use)
                .await;
        };
        let source = h.source(self.templates.clone()).await?;
        let (templates, slots) = (&self.templates, &self.slots);
        templates
            .publish_fresh(name, overwrite, source, &defaults, slots, in_use)
            .await
    }

    /// `FROM <image>`: the base template of OCI image `reference`, pulled with this host's
    /// OCI settings (`WRENN_DIR/oci.toml` when present; cache `WRENN_DIR/oci`).
    pub async fn import_image(&self, reference: &str) -> Result<crate::templates::ImageTemplate> {
        let config = wrenn_oci::OciConfig::load(
            &self.config.data_dir.join("oci.toml"),
            &self.config.data_dir.join("oci"),
        )?;
        let budget = config.max_cache_bytes;
        let puller = wrenn_oci::Puller::new(config)?;
        let made = self
            .templates
            .from_image(&puller, reference, &self.slots)
            .await?;
        // Templates made from images are kept within the cache's bound too.
        if let Some(budget) = budget {
            let in_use = |d: &Path| self.template_in_use(d);
            self.templates.evict_images(&made.name, budget, &in_use);
        }
        Ok(made)
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
        let (disk, _) = load::disk_of(&self.config);
        let templates = self.templates.list().into_iter().map(|t| t.name).collect();
        let load = self.host_load();
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
            memory_used_bytes: load.memory_mb_used << 20,
            disk_used_bytes: load.disk_mb_used << 20,
            slots: format!("{}-{}", self.config.slots.start(), self.config.slots.end()),
            buildable: self.templates.buildable_templates(),
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
