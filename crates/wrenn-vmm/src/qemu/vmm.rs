//! [`Vmm`] for QEMU: pause is `stop`; save writes only device state (`x-ignore-shared`: RAM
//! stays in the memory file) through a descriptor passed over QMP, then QEMU exits; restore
//! starts QEMU with `-incoming defer` on the same files and loads that state.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde_json::json;
use tokio::{sync::watch, time::Instant};

use super::{process::health, QemuVm};
use crate::{
    checkpoint,
    config::VmConfig,
    error::{Result, VmmError},
    files,
    memory::{self, MemoryLayout},
    VmStatus, Vmm,
};

impl Vmm for QemuVm {
    async fn boot(&mut self) -> Result<()> {
        if self.status != VmStatus::NotStarted {
            return Err(VmmError::State {
                action: "boot",
                state: self.status.to_string(),
            });
        }
        self.spawn(false).await?;
        self.status = VmStatus::Running;
        Ok(())
    }

    async fn wait_ready(&mut self, addr: SocketAddr, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut exited = self.live("wait for")?.exited.clone();
        loop {
            tokio::select! {
                ok = health(addr) => if ok { return Ok(started.elapsed()) },
                status = exited.wait_for(|e| e.is_some()) => {
                    let status = status.map(|s| s.clone()).unwrap_or(None);
                    let err = self.exited_error(status);
                    self.process = None;
                    self.status = VmStatus::Failed(err.to_string());
                    return Err(err);
                }
            }
            if Instant::now() > deadline {
                return Err(VmmError::Timeout {
                    after: timeout,
                    what: format!("envd at {addr} to answer /health"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn pause(&mut self) -> Result<()> {
        if self.status != VmStatus::Running {
            return Err(VmmError::State {
                action: "pause",
                state: self.status.to_string(),
            });
        }
        self.qmp("pause", "stop", None).await?;
        self.status = VmStatus::Paused;
        Ok(())
    }

    async fn save(&mut self, state: &Path) -> Result<()> {
        self.save_state(state, false).await
    }

    async fn save_keeping(&mut self, state: &Path) -> Result<()> {
        self.save_state(state, true).await
    }

    async fn release(&mut self) {
        if self.status != VmStatus::Paused || !self.kept {
            return;
        }
        // Stopped since its save, nothing left to write: a kill loses nothing.
        if let Some(p) = self.process.take() {
            p.kill().await;
        }
        let _ = std::fs::remove_file(self.config.qmp_path());
        self.kept = false;
        self.status = VmStatus::Saved;
    }

    async fn checkpoint(&mut self, dest: &Path) -> Result<checkpoint::Captured> {
        if !matches!(self.status, VmStatus::Running | VmStatus::Paused) {
            return Err(VmmError::State {
                action: "checkpoint",
                state: self.status.to_string(),
            });
        }
        files::private_dir(dest)?;
        let state = dest.join(checkpoint::STATE);
        // Made 0600 before QEMU opens it (QEMU would create it 0660).
        drop(files::open_private(&state, true)?);
        let pid = self.pid().unwrap_or(0);
        let dir = self.config.dir.clone();
        // A running VM: its own pages copied once while it runs, so the copy that counts
        // (stopped) goes into memory already faulted in.
        let mut stop = std::time::Duration::ZERO;
        let buffer = if self.status == VmStatus::Running {
            let d = dir.clone();
            let buffer = tokio::task::spawn_blocking(move || checkpoint::warm_buffer(pid, &d))
                .await
                .map_err(|e| VmmError::io("checkpointing the VM", std::io::Error::other(e)))??;
            let t = std::time::Instant::now();
            self.pause().await?;
            stop = t.elapsed();
            buffer
        } else {
            Vec::new()
        };
        let stopped_at = std::time::Instant::now();
        // Every device, no RAM; QEMU stays stopped and `cont` runs it again.
        self.qmp(
            "checkpoint",
            "xen-save-devices-state",
            Some(json!({"filename": state.display().to_string(), "live": false})),
        )
        .await?;
        let devices = stopped_at.elapsed();
        let (disk, dest) = (self.config.disk.clone(), dest.to_path_buf());
        tokio::task::spawn_blocking(move || {
            checkpoint::take(pid, &dir, &disk, &dest, buffer, devices)
        })
        .await
        .map_err(|e| VmmError::io("checkpointing the VM", std::io::Error::other(e)))?
        .map(|mut taken| {
            taken.state = Some((state, super::MACHINE));
            taken.stopped_at = (stop > std::time::Duration::ZERO).then_some(stopped_at);
            taken.times.stop = stop;
            taken
        })
    }

    async fn start_waiting(&mut self) -> Result<()> {
        if !matches!(self.status, VmStatus::NotStarted | VmStatus::Saved) {
            return Err(VmmError::State {
                action: "start (waiting for a state)",
                state: self.status.to_string(),
            });
        }
        let layout = MemoryLayout::of(&self.config.dir);
        if !layout.mapped_file().is_file() {
            return Err(VmmError::Config(format!(
                "a restore needs the memory file {}",
                layout.mapped_file().display()
            )));
        }
        self.spawn(true).await?;
        self.status = VmStatus::Waiting;
        Ok(())
    }

    async fn restore(&mut self, state: &Path) -> Result<()> {
        if !matches!(
            self.status,
            VmStatus::NotStarted | VmStatus::Saved | VmStatus::Waiting
        ) {
            return Err(VmmError::State {
                action: "restore",
                state: self.status.to_string(),
            });
        }
        let layout = MemoryLayout::of(&self.config.dir);
        if !layout.mapped_file().is_file() {
            return Err(VmmError::Config(format!(
                "restore needs the memory file {}",
                layout.mapped_file().display()
            )));
        }
        let file = std::fs::File::open(state)
            .map_err(|e| VmmError::io(format!("opening {}", state.display()), e))?;
        if self.status != VmStatus::Waiting {
            self.spawn(true).await?;
        }
        let loaded: Result<VmStatus> = async {
            if let MemoryLayout::Template { base, delta } = &layout {
                // The VM's own pages go into RAM before the devices load (virtio checks its
                // rings against guest memory while loading).
                if delta.is_file() {
                    let pid = self.pid().unwrap_or(0);
                    let (base, delta) = (base.clone(), delta.clone());
                    tokio::task::spawn_blocking(move || memory::apply_delta(pid, &base, &delta))
                        .await
                        .map_err(|e| {
                            VmmError::io("applying the memory delta", std::io::Error::other(e))
                        })??;
                }
            }
            self.ignore_shared().await?;
            self.no_self_announce().await?;
            self.pass_fd("wrenn-restore", &file).await?;
            self.qmp(
                "restore",
                "migrate-incoming",
                Some(json!({"uri": "fd:wrenn-restore"})),
            )
            .await?;
            self.wait_migration("loading VM state").await?;
            match self.run_state().await?.as_str() {
                "running" => Ok(VmStatus::Running),
                _ => Ok(VmStatus::Paused),
            }
        }
        .await;
        match loaded {
            Ok(status) => {
                self.status = status;
                Ok(())
            }
            Err(e) => {
                if let Some(p) = self.process.take() {
                    p.kill().await;
                }
                self.status = VmStatus::Failed(e.to_string());
                Err(e)
            }
        }
    }

    async fn resume(&mut self) -> Result<()> {
        if self.status != VmStatus::Paused {
            return Err(VmmError::State {
                action: "resume",
                state: self.status.to_string(),
            });
        }
        self.qmp("resume", "cont", None).await?;
        self.kept = false;
        self.status = VmStatus::Running;
        Ok(())
    }

    async fn stop(&mut self) -> Result<()> {
        if let Some(p) = self.process.take() {
            p.kill().await;
        }
        let _ = std::fs::remove_file(self.config.qmp_path());
        self.status = VmStatus::Stopped;
        Ok(())
    }

    fn status(&self) -> VmStatus {
        match &self.process {
            Some(p) if p.has_exited().is_some() => VmStatus::Failed(format!(
                "QEMU exited: {}",
                p.has_exited().unwrap_or_default()
            )),
            _ => self.status.clone(),
        }
    }

    fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The pid of the running QEMU, if any.
    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// A receiver that turns `Some(status)` when QEMU exits (for supervisors).
    fn death_watch(&self) -> Option<watch::Receiver<Option<String>>> {
        self.process.as_ref().map(|p| p.exited.clone())
    }

    /// Grows the running VM's disk to `bytes` (the guest sees the new size at once; growing
    /// its filesystem is the guest's business).
    async fn grow_disk(&mut self, bytes: u64) -> Result<()> {
        self.qmp(
            "grow the disk of",
            "block_resize",
            Some(serde_json::json!({ "device": "root", "size": bytes })),
        )
        .await
        .map(|_| ())
    }
}

impl QemuVm {
    /// Saves a paused VM's state to `state` (and a template-layout VM's own pages); then QEMU
    /// exits, or with `keep` stays, stopped ([`Vmm::save_keeping`]).
    async fn save_state(&mut self, state: &Path, keep: bool) -> Result<()> {
        if self.status != VmStatus::Paused {
            return Err(VmmError::State {
                action: "save",
                state: self.status.to_string(),
            });
        }
        if let MemoryLayout::Template { base, delta } = MemoryLayout::of(&self.config.dir) {
            self.save_template_layout(state, &base, &delta).await?;
        } else {
            self.ignore_shared().await?;
            // Device state holds guest secrets too (registers, queues): 0600.
            let file = files::open_private(state, true)?;
            self.pass_fd("wrenn-save", &file).await?;
            drop(file);
            self.qmp("save", "migrate", Some(json!({"uri": "fd:wrenn-save"})))
                .await?;
            self.wait_migration("saving VM state").await?;
        }
        if keep {
            // `cont` runs it on from where it stopped, once a migration's end has left its
            // `finish-migrate` state (QEMU reports the migration completed a moment before).
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.run_state().await? == "finish-migrate" {
                if Instant::now() > deadline {
                    return Err(VmmError::Timeout {
                        after: Duration::from_secs(10),
                        what: "the end of the save".into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            self.kept = true;
            return Ok(());
        }
        // The state is on disk and RAM is in the memory file: QEMU can go.
        let _ = self.qmp("save", "quit", None).await;
        if let Some(p) = self.process.take() {
            p.kill().await;
        }
        let _ = std::fs::remove_file(self.config.qmp_path());
        self.status = VmStatus::Saved;
        Ok(())
    }

    /// Saves a template-layout VM (paused): its device state (QMP `xen-save-devices-state`:
    /// every device, no RAM) made loadable by `migrate-incoming`, and its own pages to
    /// `delta`; then QEMU exits.
    async fn save_template_layout(
        &mut self,
        state: &Path,
        base: &Path,
        delta: &Path,
    ) -> Result<()> {
        // Made 0600 before QEMU opens it (QEMU would create it 0660).
        drop(files::open_private(state, true)?);
        self.qmp(
            "save",
            "xen-save-devices-state",
            Some(json!({"filename": state.display().to_string(), "live": false})),
        )
        .await?;
        let pid = self.pid().unwrap_or(0);
        let (state_c, base, delta) = (state.to_path_buf(), base.to_path_buf(), delta.to_path_buf());
        let pages = tokio::task::spawn_blocking(move || -> Result<u64> {
            memory::device_state_stream(&state_c, super::MACHINE)?;
            memory::save_delta(pid, &base, &delta, true)
        })
        .await
        .map_err(|e| VmmError::io("saving guest memory", std::io::Error::other(e)))??;
        tracing::debug!(pid, pages, "VM state and own pages saved");
        Ok(())
    }
}
