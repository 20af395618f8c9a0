//! The backend factory: which VMM runs the VMs, chosen by configuration.
//!
//! A backend makes a [`Vm`] three ways: [`Backend::create`] (a new VM from a [`VmConfig`], to
//! boot or to restore), [`Backend::adopt`] (take over the VMM process a previous agent left
//! running, by pid) and [`Backend::saved`] (a VM whose state is saved to a file, no process).
//! [`Backend::processes_under`] finds the backend's processes under a folder (cleanup after a
//! crash, leak checks).
//!
//! Adding a backend (say Firecracker on KVM hosts) is adding a module: a type implementing
//! [`Vmm`] (boot, wait for envd, pause, save device state to a file with guest RAM kept in
//! [`VmConfig::memory_path`], restore from it, resume, stop, status, pid, death watch, disk
//! growth) that passes `tests/conformance.rs`, a [`Backend`] variant with its three
//! constructors and its process finder, and a [`Vm`] variant. The host agent only ever holds a
//! [`Backend`] and [`Vm`]s.

use std::{net::SocketAddr, path::Path, str::FromStr, time::Duration};

use tokio::sync::watch;

use crate::{config::VmConfig, error::Result, qemu::QemuVm, VmStatus, Vmm, VmmError};

/// Which VMM runs the VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// QEMU `-M microvm` ([`crate::qemu`]); [`VmConfig::qemu`] names its binary.
    #[default]
    Qemu,
}

impl Backend {
    /// The backend's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Qemu => "qemu",
        }
    }

    /// A new VM (not started): boot it, or restore a saved state into it.
    pub fn create(self, config: VmConfig) -> Result<Vm> {
        match self {
            Backend::Qemu => QemuVm::new(config).map(Vm::Qemu),
        }
    }

    /// Takes over the VMM process `pid` that a previous agent started for `config`.
    pub async fn adopt(self, config: VmConfig, pid: u32) -> Result<Vm> {
        match self {
            Backend::Qemu => QemuVm::adopt(config, pid).await.map(Vm::Qemu),
        }
    }

    /// A VM whose state is saved (no process): restore it to run it again.
    pub fn saved(self, config: VmConfig) -> Result<Vm> {
        match self {
            Backend::Qemu => QemuVm::saved(config).map(Vm::Qemu),
        }
    }

    /// This backend's VMM processes whose command line mentions `dir`, with their command
    /// lines.
    pub fn processes_under(self, dir: &Path) -> Vec<(u32, String)> {
        match self {
            Backend::Qemu => crate::qemu::processes_under(dir),
        }
    }
}

impl FromStr for Backend {
    type Err = VmmError;
    fn from_str(s: &str) -> Result<Backend> {
        match s {
            "qemu" => Ok(Backend::Qemu),
            other => Err(VmmError::Config(format!(
                "unknown VM backend {other:?} (known: qemu)"
            ))),
        }
    }
}

/// One VM, whichever backend made it.
#[derive(Debug)]
pub enum Vm {
    Qemu(QemuVm),
}

/// `$vm.$call` on whichever backend's VM this is.
macro_rules! each {
    ($self:expr, $vm:ident => $call:expr) => {
        match $self {
            Vm::Qemu($vm) => $call,
        }
    };
}

impl Vmm for Vm {
    async fn boot(&mut self) -> Result<()> {
        each!(self, vm => vm.boot().await)
    }
    async fn wait_ready(&mut self, addr: SocketAddr, timeout: Duration) -> Result<Duration> {
        each!(self, vm => vm.wait_ready(addr, timeout).await)
    }
    async fn pause(&mut self) -> Result<()> {
        each!(self, vm => vm.pause().await)
    }
    async fn save(&mut self, state: &Path) -> Result<()> {
        each!(self, vm => vm.save(state).await)
    }
    async fn save_keeping(&mut self, state: &Path) -> Result<()> {
        each!(self, vm => vm.save_keeping(state).await)
    }
    async fn release(&mut self) {
        each!(self, vm => vm.release().await)
    }
    async fn checkpoint(&mut self, dest: &Path) -> Result<crate::checkpoint::Captured> {
        each!(self, vm => vm.checkpoint(dest).await)
    }
    async fn start_waiting(&mut self) -> Result<()> {
        each!(self, vm => vm.start_waiting().await)
    }
    async fn restore(&mut self, state: &Path) -> Result<()> {
        each!(self, vm => vm.restore(state).await)
    }
    async fn resume(&mut self) -> Result<()> {
        each!(self, vm => vm.resume().await)
    }
    async fn stop(&mut self) -> Result<()> {
        each!(self, vm => vm.stop().await)
    }
    fn status(&self) -> VmStatus {
        each!(self, vm => vm.status())
    }
    fn config(&self) -> &VmConfig {
        each!(self, vm => vm.config())
    }
    fn pid(&self) -> Option<u32> {
        each!(self, vm => vm.pid())
    }
    fn death_watch(&self) -> Option<watch::Receiver<Option<String>>> {
        each!(self, vm => vm.death_watch())
    }
    async fn grow_disk(&mut self, bytes: u64) -> Result<()> {
        each!(self, vm => vm.grow_disk(bytes).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_by_name() {
        assert_eq!("qemu".parse::<Backend>().unwrap(), Backend::Qemu);
        assert_eq!(Backend::default().as_str(), "qemu");
        assert!(matches!(
            "firecracker".parse::<Backend>(),
            Err(VmmError::Config(m)) if m.contains("firecracker")
        ));
    }
}
