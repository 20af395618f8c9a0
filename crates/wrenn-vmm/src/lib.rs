//! wrenn-vmm: drive one microVM. The [`Vmm`] trait is what the host agent uses; a [`Backend`]
//! (chosen by configuration) makes the VMs: [`Backend::Qemu`] makes a [`QemuVm`] (KVM when it
//! really accelerates, TCG otherwise; see [`accel`]). The agent holds a [`Vm`], whatever
//! backend made it, and never names a backend's own type.
//!
//! Life of a VM: `boot` (cold, only for building a template snapshot) or `restore` (from a
//! saved state plus its memory file), then `pause`/`resume`, `save` (device state to a file;
//! the process exits, RAM stays in the memory file), `stop`.

pub mod accel;
pub mod backend;
pub mod capture;
pub mod cgroup;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod files;
pub mod memory;
pub mod qemu;
pub mod qmp;
pub mod snapshot;

use std::{future::Future, net::SocketAddr, path::Path, time::Duration};

use tokio::sync::watch;

pub use accel::Accel;
pub use backend::{Backend, Vm};
pub use config::{DiskFormat, Net, Tuning, VmConfig};
pub use error::{Result, VmmError};
pub use qemu::QemuVm;

/// Where a VM is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    NotStarted,
    /// The VMM process runs with guest RAM mapped and its devices made, waiting for a state
    /// to load ([`Vmm::start_waiting`]; a warm VMM).
    Waiting,
    Running,
    Paused,
    /// Its state is saved to a file and no VMM process runs.
    Saved,
    Stopped,
    Failed(String),
}

impl std::fmt::Display for VmStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmStatus::NotStarted => f.write_str("not started"),
            VmStatus::Waiting => f.write_str("waiting for a state"),
            VmStatus::Running => f.write_str("running"),
            VmStatus::Paused => f.write_str("paused"),
            VmStatus::Saved => f.write_str("saved"),
            VmStatus::Stopped => f.write_str("stopped"),
            VmStatus::Failed(why) => write!(f, "failed ({why})"),
        }
    }
}

/// One VM, whatever runs it: what a backend implements. Every backend passes the same
/// conformance suite (`tests/conformance.rs`).
pub trait Vmm: Send {
    /// Cold-boots the guest.
    fn boot(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Waits until envd answers `/health` at `addr`; fails at once if the VMM dies.
    fn wait_ready(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = Result<Duration>> + Send;
    /// Stops the vCPUs.
    fn pause(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Saves device state of a paused VM to `state`; the VMM process then exits.
    fn save(&mut self, state: &Path) -> impl Future<Output = Result<()>> + Send;
    /// Saves like [`Vmm::save`], but the VMM process is kept, stopped (the VM stays
    /// [`VmStatus::Paused`]): [`Vmm::resume`] continues it where it stopped, with its
    /// translations and caches warm, and [`Vmm::release`] lets it go. What was saved is whole
    /// either way (the disk was flushed when the guest stopped), so a kept VMM may be killed.
    fn save_keeping(&mut self, state: &Path) -> impl Future<Output = Result<()>> + Send;
    /// Ends the process of a VM kept by [`Vmm::save_keeping`] (alive or not): the VM is then
    /// [`VmStatus::Saved`], to restore from its files. A VM in any other state is left as is.
    fn release(&mut self) -> impl Future<Output = ()> + Send;
    /// Takes a running or paused VM's whole state for the new folder `dest` (see
    /// [`checkpoint`]): device state, RAM, disk. A running VM is stopped for it (after what
    /// can be done while it runs). The VMM keeps running, paused: resume it, then write the
    /// rest of the folder with [`checkpoint::Captured::finish`] (the guest runs meanwhile).
    fn checkpoint(
        &mut self,
        dest: &Path,
    ) -> impl Future<Output = Result<checkpoint::Captured>> + Send;
    /// Starts the VMM process without a state: guest RAM mapped, devices made, network
    /// joined, nothing run. A later [`Vmm::restore`] only loads the state into it (the costly
    /// process start is already done: a warm VMM, for a pool).
    fn start_waiting(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Loads `state` (and the VM's memory) into the VMM, starting it first unless it is
    /// [`VmStatus::Waiting`]; the VM is paused afterwards.
    fn restore(&mut self, state: &Path) -> impl Future<Output = Result<()>> + Send;
    /// Runs the vCPUs again.
    fn resume(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Kills the VMM process, if any.
    fn stop(&mut self) -> impl Future<Output = Result<()>> + Send;
    fn status(&self) -> VmStatus;
    /// The VM's configuration.
    fn config(&self) -> &VmConfig;
    /// The pid of the running VMM process, if any (kept in the capsule's record, for adoption).
    fn pid(&self) -> Option<u32>;
    /// A receiver that turns `Some(status)` when the VMM process exits (for supervisors);
    /// `None` while no process runs.
    fn death_watch(&self) -> Option<watch::Receiver<Option<String>>>;
    /// Grows the running VM's disk to `bytes` (the guest sees the new size at once; growing
    /// its filesystem is the guest's business).
    fn grow_disk(&mut self, bytes: u64) -> impl Future<Output = Result<()>> + Send;
}
