//! Checkpoints: a VM's whole state (device state, RAM, disk) copied into a folder while its
//! VMM keeps going (the building block of a live fork).
//!
//! A checkpoint folder reads like a saved VM's folder: `state` (the device state stream),
//! RAM in the VM's own layout ([`crate::memory::MemoryLayout`]: `memory.base`, a hard link to
//! the file the VM maps privately, plus `memory.delta`, its own pages; or a copy of its own
//! `memory`) and `disk.qcow2` (a copy of its copy-on-write disk, on the same backing file).
//! [`crate::memory::flatten`] then turns its RAM into one file.
//!
//! A running VM is checkpointed in two halves ([`crate::Vmm::checkpoint`], then
//! [`Captured::finish`]): while its guest is stopped only what changes once it runs is taken
//! (the device state, and its own pages and disk data read into the agent's memory); the
//! files are written from those copies after it runs again.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    capture::{FileData, OwnPages},
    error::Result,
    files,
    memory::{self, MemoryLayout},
};

/// The disk in a checkpoint folder: a copy of the VM's qcow2 overlay.
pub const DISK: &str = "disk.qcow2";
/// The device state in a checkpoint folder.
pub const STATE: &str = "state";

/// How long each step of a checkpoint took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Times {
    /// QMP `stop` (zero for a VM paused already).
    pub stop: Duration,
    /// QMP `xen-save-devices-state` (guest stopped).
    pub devices: Duration,
    /// The VM's own pages taken (guest stopped).
    pub memory: Duration,
    /// The disk overlay taken (guest stopped).
    pub disk: Duration,
    /// The files written from what was taken (guest running again).
    pub write: Duration,
    /// The VM's own pages.
    pub pages: u64,
    /// The disk overlay's data, bytes.
    pub disk_bytes: u64,
}

/// A running VM's state taken while its guest was stopped: [`Captured::finish`] writes the
/// checkpoint folder from it (the guest may run meanwhile).
#[derive(Debug, Default)]
pub struct Captured {
    /// The device state file QEMU wrote, to make loadable for this machine type.
    pub(crate) state: Option<(PathBuf, &'static str)>,
    /// The VM's own pages, for this `memory.delta`.
    pub(crate) memory: Option<(PathBuf, OwnPages)>,
    /// The disk overlay's data, for this copy.
    pub(crate) disk: Option<(PathBuf, FileData)>,
    /// When the guest was stopped (none: it was paused already).
    pub stopped_at: Option<std::time::Instant>,
    /// The steps so far.
    pub times: Times,
}

impl Captured {
    /// Writes the rest of the checkpoint folder (blocking). Returns every step's time.
    pub fn finish(self) -> Result<Times> {
        let t = std::time::Instant::now();
        if let Some((state, machine)) = &self.state {
            memory::device_state_stream(state, machine)?;
        }
        if let Some((delta, pages)) = &self.memory {
            pages.write_delta(delta)?;
        }
        if let Some((dest, data)) = &self.disk {
            data.write(dest)?;
        }
        let mut times = self.times;
        times.write = t.elapsed();
        Ok(times)
    }
}

/// The most disk overlay data a checkpoint copies into memory while the guest is stopped; a
/// larger overlay is copied file to file then (the guest waits for it).
pub const DISK_IN_MEMORY_MAX: u64 = 256 << 20;

/// Takes what a checkpoint of the stopped VM `pid` (folder `vm_dir`, disk overlay `disk`)
/// needs before its guest runs again: a link to its template memory, its own pages and its
/// disk overlay's data copied into memory (an own-layout VM's memory file, and an overlay
/// over [`DISK_IN_MEMORY_MAX`], are copied into `dest` at once). `devices`: the time the
/// device state took.
pub(crate) fn take(
    pid: u32,
    vm_dir: &Path,
    disk: &Path,
    dest: &Path,
    buffer: Vec<u8>,
    devices: Duration,
) -> Result<Captured> {
    let _urgent = Urgent::now();
    let mut taken = Captured::default();
    taken.times.devices = devices;
    let t = std::time::Instant::now();
    if let MemoryLayout::Template { base, .. } = link_memory(vm_dir, dest)? {
        let pages = OwnPages::read_into(pid, &base, buffer)?;
        taken.times.pages = pages.len();
        taken.memory = Some((dest.join(memory::DELTA_FILE), pages));
    }
    taken.times.memory = t.elapsed();
    let t = std::time::Instant::now();
    // `stop` drained and flushed the disk (qcow2 metadata included).
    let copy = dest.join(DISK);
    match FileData::read(disk, DISK_IN_MEMORY_MAX)? {
        Some(data) => {
            taken.times.disk_bytes = data.bytes();
            taken.disk = Some((copy, data));
        }
        None => files::copy_sparse(disk, &copy)?,
    }
    taken.times.disk = t.elapsed();
    Ok(taken)
}

/// A buffer for the own pages of the *running* VM `pid` (folder `vm_dir`), as many as it owns
/// now, faulted in (empty for the own layout).
pub(crate) fn warm_buffer(pid: u32, vm_dir: &Path) -> Result<Vec<u8>> {
    match MemoryLayout::of(vm_dir) {
        MemoryLayout::Template { base, .. } => {
            Ok(OwnPages::buffer_for(memory::own_pages(pid, &base)?.len()))
        }
        MemoryLayout::Own(_) => Ok(Vec::new()),
    }
}

/// The calling thread at the highest CPU priority (nice -20) until dropped, then back at its
/// own: the copies a stopped guest waits for are not queued behind other work on a busy host.
/// Without the privilege it stays as it was.
struct Urgent(Option<libc::c_int>);

impl Urgent {
    fn now() -> Urgent {
        // SAFETY: gettid(2) has no preconditions.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        // SAFETY: get/setpriority(2) on this thread; a failure changes nothing.
        let was = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        // SAFETY: as above.
        let raised = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, -20) } == 0;
        Urgent(raised.then_some(was))
    }
}

impl Drop for Urgent {
    fn drop(&mut self) {
        if let Some(was) = self.0 {
            // SAFETY: gettid(2) and setpriority(2) on this thread.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, was);
            }
        }
    }
}

/// Copies the RAM of the VM in `vm_dir` into `dest` as far as a file holds it: for the
/// template layout a link to its base (or a copy across filesystems; its own pages are the
/// caller's), else a copy of its own file. The VM must not run (paused, or saved).
pub(crate) fn link_memory(vm_dir: &Path, dest: &Path) -> Result<MemoryLayout> {
    let layout = MemoryLayout::of(vm_dir);
    match &layout {
        MemoryLayout::Template { base, .. } => memory::link_template(base, dest)?,
        MemoryLayout::Own(own) => files::copy_sparse(own, &dest.join(memory::OWN_FILE))?,
    }
    Ok(layout)
}

/// Checkpoints a *saved* VM (no VMM process): its folder `vm_dir` (state file `state`,
/// RAM in either layout) and disk `disk` are copied into `dest` (a new private folder).
pub fn of_saved(vm_dir: &Path, state: &Path, disk: &Path, dest: &Path) -> Result<()> {
    files::private_dir(dest)?;
    if let MemoryLayout::Template { delta, .. } = link_memory(vm_dir, dest)? {
        if delta.is_file() {
            files::copy_sparse(&delta, &dest.join(memory::DELTA_FILE))?;
        }
    }
    files::copy_sparse(state, &dest.join(STATE))?;
    files::copy_sparse(disk, &dest.join(DISK))
}
