//! A capsule's resources (VM, network slot, envd client), owned by its task, and what the task
//! does with them: every transition is written to `capsule.json`.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf};

use wrenn_types::{CapsuleStatus, Transition};
use wrenn_vmm::{snapshot, Vm, Vmm};

use super::{Checkpointed, Info};
use crate::{
    envd_client::{EnvdClient, ExecRequest, InitRequest},
    error::{AgentError, Result},
    netslot::{Egress, Slot},
    record,
    templates::{SnapshotSource, TemplateInfo, Templates},
};

/// A capsule's resources, owned by its task.
pub(super) struct Capsule {
    pub(super) dir: PathBuf,
    pub(super) info: Info,
    pub(super) vm: Vm,
    pub(super) slot: Slot,
    pub(super) envd: EnvdClient,
}

pub(super) fn envd_addr(slot: &Slot) -> SocketAddr {
    SocketAddr::new(slot.addrs.capsule_ip.into(), wrenn_vmm::config::ENVD_PORT)
}

pub(super) fn new_token() -> Result<String> {
    Ok(wrenn_types::secret::hex(24)?)
}

impl Capsule {
    pub(super) fn transition(&self, t: Transition) -> Result<()> {
        let mut rec = self.info.write().unwrap_or_else(|e| e.into_inner());
        rec.state = rec.state.apply(t)?;
        // A paused capsule's kept VMM is not recorded: an agent that restarts finds the
        // capsule's state in its files and removes that VMM like any it does not own.
        rec.vmm_pid = match rec.state {
            CapsuleStatus::Paused => None,
            _ => self.vm.pid(),
        };
        record::save(&self.dir, &rec)
    }

    pub(super) fn state(&self) -> CapsuleStatus {
        self.info.read().unwrap_or_else(|e| e.into_inner()).state
    }

    /// Grows the disk to `bytes` and the guest's root filesystem with it (online).
    pub(super) async fn grow_disk(&mut self, bytes: u64) -> Result<()> {
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

    /// Whether the network may change now (the slot exists).
    pub(super) fn set_network_allowed(&self) -> Result<()> {
        match self.state() {
            CapsuleStatus::Running | CapsuleStatus::Paused => Ok(()),
            state => Err(AgentError::NotRunningOrPaused {
                state,
                rule: "only a running or paused capsule's network can change",
            }),
        }
    }

    /// Changes the slot's egress rules and the record.
    pub(super) async fn set_network(&mut self, egress: Egress) -> Result<()> {
        self.set_network_allowed()?;
        self.slot.set_egress(egress.clone()).await?;
        let mut rec = self.info.write().unwrap_or_else(|e| e.into_inner());
        rec.egress = egress.on;
        rec.egress_policy = egress.policy;
        record::save(&self.dir, &rec)
    }

    pub(super) async fn init_envd(&self, first: bool, snapshot_token: Option<&str>) -> Result<()> {
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

    pub(super) async fn start_vm(&mut self, state: &std::path::Path) -> Result<()> {
        let t = std::time::Instant::now();
        self.vm.restore(state).await?;
        let restored = t.elapsed();
        self.vm.resume().await?;
        let ready = self
            .vm
            .wait_ready(envd_addr(&self.slot), std::time::Duration::from_secs(60))
            .await?;
        tracing::debug!(
            restore_ms = restored.as_millis() as u64,
            ready_ms = ready.as_millis() as u64,
            "VM started"
        );
        Ok(())
    }

    /// Pauses: the state goes to the capsule's files; with `keep` the stopped VMM stays too,
    /// so a resume only runs it on (its translations and caches warm).
    pub(super) async fn pause(&mut self, for_restart: bool, keep: bool) -> Result<()> {
        if self.state() != CapsuleStatus::Running {
            return Err(AgentError::NotRunning {
                id: None,
                state: self.state(),
            });
        }
        if let Err(e) = self.vm.pause().await {
            self.fail_if_vm_died().await;
            return Err(e.into());
        }
        let state = self.dir.join("state");
        let saved = if keep {
            self.vm.save_keeping(&state).await
        } else {
            self.vm.save(&state).await
        };
        if let Err(e) = saved {
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

    pub(super) async fn resume(&mut self) -> Result<()> {
        if self.state() != CapsuleStatus::Paused {
            return Err(AgentError::NotPaused {
                state: self.state(),
            });
        }
        let resumed = async {
            let kept = self.vm.status() == wrenn_vmm::VmStatus::Paused;
            // Kept at its pause, alive: it runs on from where it stopped. If it will not run
            // on, its guest has not run since the save, so the files are still its state.
            let ran_on = kept && {
                match self.vm.resume().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "a kept VMM would not run on; restoring");
                        false
                    }
                }
            };
            if ran_on {
                self.vm
                    .wait_ready(envd_addr(&self.slot), std::time::Duration::from_secs(60))
                    .await?;
            } else {
                self.vm.release().await;
                self.start_vm(&self.dir.join("state")).await?;
            }
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

    pub(super) fn release_cgroup(&self) {
        if let Some(g) = &self.vm.config().cgroup {
            g.remove();
        }
    }

    /// Pauses the capsule if it runs, then makes template `name` of its files.
    pub(super) async fn snapshot(
        &mut self,
        name: String,
        overwrite: bool,
        templates: &Templates,
        in_use: &(dyn Fn(&std::path::Path) -> bool + Send + Sync),
    ) -> Result<TemplateInfo> {
        let source = self.source(templates).await?;
        templates.publish(&name, overwrite, source, in_use).await
    }

    /// Pauses the capsule if it runs: its saved files, to make a template of.
    pub(super) async fn source(&mut self, templates: &Templates) -> Result<SnapshotSource> {
        match self.state() {
            CapsuleStatus::Running => self.pause(false, false).await?,
            // Made from its files alone.
            CapsuleStatus::Paused => self.vm.release().await,
            state => {
                return Err(AgentError::NotRunningOrPaused {
                    state,
                    rule: "only running or paused capsules can be snapshotted",
                })
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
            memory_dir: self.dir.clone(),
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
        Ok(source)
    }

    /// Copies the capsule's whole state into the new folder `dest`: a running capsule is
    /// stopped for the copy of its device state, own pages and disk, then runs on; a paused
    /// one is copied from its saved files.
    pub(super) async fn checkpoint(&mut self, dest: &std::path::Path) -> Result<Checkpointed> {
        use super::PauseSteps;
        let mut pause = PauseSteps::default();
        match self.state() {
            CapsuleStatus::Running => {
                // The VMM stops the guest itself, once it has copied what it can while the
                // guest runs.
                let taken = self.vm.checkpoint(dest).await;
                if self.vm.status() == wrenn_vmm::VmStatus::Running {
                    // Never stopped.
                    taken?;
                    return Err(AgentError::NotRunningOrPaused {
                        state: CapsuleStatus::Running,
                        rule: "the VM ran on through its checkpoint",
                    });
                }
                let t1 = std::time::Instant::now();
                let resumed = self.vm.resume().await;
                pause.cont = t1.elapsed();
                if let Ok(taken) = &taken {
                    pause.total = taken.times.stop
                        + taken.stopped_at.map(|t| t.elapsed()).unwrap_or_default();
                }
                if let Err(e) = resumed {
                    self.fail(format!("resuming after a checkpoint failed: {e}"))
                        .await;
                    return Err(e.into());
                }
                // The guest runs again; the files are written from what was taken.
                let taken = taken?;
                pause.checkpoint = tokio::task::spawn_blocking(move || taken.finish())
                    .await
                    .map_err(|e| AgentError::io("checkpointing", std::io::Error::other(e)))??;
                tracing::info!(dest = %dest.display(), ?pause, "capsule checkpointed");
            }
            CapsuleStatus::Paused => {
                let (dir, disk, dest) = (
                    self.dir.clone(),
                    self.vm.config().disk.clone(),
                    dest.to_path_buf(),
                );
                tokio::task::spawn_blocking(move || {
                    wrenn_vmm::checkpoint::of_saved(&dir, &dir.join("state"), &disk, &dest)
                })
                .await
                .map_err(|e| AgentError::io("checkpointing", std::io::Error::other(e)))??;
            }
            state => {
                return Err(AgentError::NotRunningOrPaused {
                    state,
                    rule: "only running or paused capsules can be forked",
                })
            }
        }
        let record = self.info.read().unwrap_or_else(|e| e.into_inner()).clone();
        let config = self.vm.config();
        Ok(Checkpointed {
            restored_from: config
                .kernel
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
            spec: snapshot::SnapshotSpec {
                format: snapshot::SNAPSHOT_FORMAT,
                vcpus: config.vcpus,
                memory_mib: config.memory_mib,
                accel: config.accel.as_str().into(),
            },
            record,
            pause,
        })
    }

    /// After a VMM call failed: if the VMM has exited, or exits within a moment (QMP's end
    /// can come before the exit is seen), the capsule fails now rather than when its task
    /// next sees the death: at a shutdown there is no next time, and its slot would stay.
    async fn fail_if_vm_died(&mut self) {
        let Some(mut death) = self.vm.death_watch() else {
            return;
        };
        let died = matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                death.wait_for(|x| x.is_some()),
            )
            .await,
            Ok(Ok(_))
        );
        if died {
            let why = self.vm.status().to_string();
            self.fail(format!("the VMM died: {why}")).await;
        }
    }

    /// Turns the capsule to `error` with `why`, stops its VMM and releases its slot at once;
    /// the folder stays (for the console log) until destroy.
    pub(super) async fn fail(&mut self, why: String) {
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
    pub(super) async fn destroy(&mut self) {
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
    pub(super) async fn teardown(&mut self) {
        let _ = self.vm.stop().await;
        self.release_cgroup();
        self.slot.release().await;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing the capsule folder");
        }
    }
}

/// Has the guest's root filesystem discard what it frees (online discard), so space freed
/// in the guest is given back to the host: the disk is attached with `discard=unmap`, and
/// a discarded cluster of the qcow2 overlay is punched out of the host file. Templates'
/// snapshots were taken with the image's mount options, so it is set here, at create.
/// Best effort: a guest that cannot remount still runs (it only keeps its freed space).
pub(super) async fn enable_discard(envd: &EnvdClient) {
    let out = envd
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
pub(super) async fn set_dns(envd: &EnvdClient) {
    let text = format!("nameserver {}\n", crate::dns::SLOT_RESOLVER);
    if let Err(e) = envd
        .write_file("/etc/resolv.conf", Some("root"), text.into())
        .await
    {
        tracing::warn!(error = %e, "setting the guest's name server");
    }
}
