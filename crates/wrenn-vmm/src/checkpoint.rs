//! Checkpoints: a VM's whole state (device state, RAM, disk) copied into a folder while its
//! VMM keeps going (the building block of a live fork).
//!
//! A checkpoint folder reads like a saved VM's folder: `state` (the device state stream),
//! RAM in the VM's own layout ([`crate::memory::MemoryLayout`]: `memory.base`, a hard link to
//! the file the VM maps privately, plus `memory.delta`, its own pages; or a copy of its own
//! `memory`) and `disk.qcow2` (a copy of its copy-on-write disk, on the same backing file).
//! [`crate::memory::flatten`] then turns its RAM into one file.

use std::path::Path;

use crate::{
    error::Result,
    files,
    memory::{self, MemoryLayout},
};

/// The disk in a checkpoint folder: a copy of the VM's qcow2 overlay.
pub const DISK: &str = "disk.qcow2";
/// The device state in a checkpoint folder.
pub const STATE: &str = "state";

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
