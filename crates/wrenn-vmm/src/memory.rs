//! How a VM's guest RAM is laid out on the host, and the page-level work a shared layout needs.
//!
//! Two layouts ([`MemoryLayout`]):
//!
//! * **Own** (`memory`): the VM's own file, mapped shared (`share=on`). Pause writes nothing:
//!   RAM already is the file. Every capsule holds a whole copy in the page cache.
//! * **Template** (`memory.base` + `memory.delta`): `memory.base` is a hard link to the
//!   template's memory file (same inode, so the same page-cache pages), mapped *privately*
//!   (`share=off`, `MAP_PRIVATE`). Pages the guest only reads stay the template's page-cache
//!   pages, shared by every capsule of that template; the first write to a page gives that VM
//!   its own anonymous copy (copy-on-write in the kernel). No VM can see another's writes, and
//!   no write ever reaches the file. Pause saves the device state and the VM's own pages
//!   (found in `/proc/PID/pagemap`: present and not file-backed, or swapped) to
//!   `memory.delta`; restore maps the template again, writes those pages back into QEMU's RAM
//!   through `/proc/PID/mem` *before* the device state loads (virtio checks its rings against
//!   RAM while loading), then loads the device state.
//!
//! A template-layout VM's device state is saved with QMP `xen-save-devices-state` (every
//! device, no RAM). QEMU's loader wants the stream's configuration section first, which that
//! command leaves out; [`device_state_stream`] puts it in (machine name and the
//! `x-ignore-shared` capability, as `migrate` writes them) so the file loads with the same
//! `migrate-incoming` as a template's state.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Read, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use crate::error::{Result, VmmError};

/// Guest page size the delta is kept in.
pub const PAGE: u64 = 4096;
/// First bytes of a `memory.delta` file.
pub(crate) const DELTA_MAGIC: &[u8; 8] = b"WRNMEMD1";
/// Pages read or written with one system call, at most.
const RUN_PAGES: usize = 256;

/// Where a VM's guest RAM lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryLayout {
    /// Its own file, mapped shared.
    Own(PathBuf),
    /// A template's file mapped privately (`base`), plus the VM's own pages saved at pause
    /// (`delta`, absent until the first pause).
    Template { base: PathBuf, delta: PathBuf },
}

impl MemoryLayout {
    /// The layout of the VM whose folder is `dir`: the template layout when `memory.base` is
    /// there, else its own `memory` file.
    pub fn of(dir: &Path) -> MemoryLayout {
        let base = dir.join(BASE_FILE);
        if base.is_file() {
            MemoryLayout::Template {
                base,
                delta: dir.join(DELTA_FILE),
            }
        } else {
            MemoryLayout::Own(dir.join(OWN_FILE))
        }
    }

    /// The file QEMU maps as guest RAM.
    pub fn mapped_file(&self) -> &Path {
        match self {
            MemoryLayout::Own(p) => p,
            MemoryLayout::Template { base, .. } => base,
        }
    }
}

/// A VM's own memory file (own layout).
pub const OWN_FILE: &str = "memory";
/// The hard link to the template's memory file (template layout).
pub const BASE_FILE: &str = "memory.base";
/// The VM's own pages saved at pause (template layout).
pub const DELTA_FILE: &str = "memory.delta";

/// Gives `dir` the template layout on `template_memory`: a hard link (the template's pages
/// are then shared in the page cache); a sparse copy when the two are on different
/// filesystems (correct, but nothing shared).
pub fn link_template(template_memory: &Path, dir: &Path) -> Result<()> {
    let base = dir.join(BASE_FILE);
    match std::fs::hard_link(template_memory, &base) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            tracing::warn!(
                template = %template_memory.display(),
                "template memory is on another filesystem: copied, not shared"
            );
            crate::files::copy_sparse(template_memory, &base)
        }
        Err(e) => Err(VmmError::io(
            format!(
                "linking {} into {}",
                template_memory.display(),
                dir.display()
            ),
            e,
        )),
    }
}

/// The address ranges of process `pid` that map `file`, each with the file offset it starts
/// at, from `/proc/PID/maps`.
fn mappings_of(pid: u32, file: &Path) -> Result<Vec<(u64, u64, u64)>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| VmmError::io(format!("reading the mappings of pid {pid}"), e))?;
    let want = file.display().to_string();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut parts = line.splitn(6, ' ');
        let (Some(range), _, Some(offset), _, _, Some(path)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        if path.trim_start() != want {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let parse = |s: &str| u64::from_str_radix(s, 16).ok();
        if let (Some(a), Some(b), Some(off)) = (parse(a), parse(b), parse(offset)) {
            out.push((a, b, off));
        }
    }
    if out.is_empty() {
        return Err(VmmError::Config(format!(
            "pid {pid} does not map {}",
            file.display()
        )));
    }
    Ok(out)
}

/// The VM's own pages: for each, its page index in the file and its address in `pid`.
pub(crate) fn own_pages(pid: u32, file: &Path) -> Result<Vec<(u64, u64)>> {
    let ranges = mappings_of(pid, file)?;
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| VmmError::io(format!("opening the page map of pid {pid}"), e))?;
    let mut out = Vec::new();
    for (start, end, offset) in ranges {
        let pages = ((end - start) / PAGE) as usize;
        let mut raw = vec![0u8; pages * 8];
        pagemap
            .read_exact_at(&mut raw, start / PAGE * 8)
            .map_err(|e| VmmError::io(format!("reading the page map of pid {pid}"), e))?;
        for (i, entry) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(entry.try_into().unwrap_or_default());
            let present = e >> 63 & 1 == 1;
            let swapped = e >> 62 & 1 == 1;
            let file_backed = e >> 61 & 1 == 1;
            if swapped || (present && !file_backed) {
                out.push((offset / PAGE + i as u64, start + i as u64 * PAGE));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Consecutive runs (by page index and address both) of at most [`RUN_PAGES`] pages.
pub(crate) fn runs(pages: &[(u64, u64)]) -> Vec<&[(u64, u64)]> {
    let mut out = Vec::new();
    let mut from = 0;
    for i in 1..=pages.len() {
        let split = i == pages.len()
            || i - from == RUN_PAGES
            || pages[i].0 != pages[i - 1].0 + 1
            || pages[i].1 != pages[i - 1].1 + PAGE;
        if split {
            out.push(&pages[from..i]);
            from = i;
        }
    }
    out
}

/// Writes the pages process `pid` (stopped) owns in its private mapping of `base` to
/// `delta` (0600; replaced whole, through a temporary file). Returns the number of pages.
/// `durable`: synced to disk before it replaces the old delta (a pause, whose delta is the
/// VM's only copy of those pages); a checkpoint's delta is flattened into a fork image at
/// once and a crash removes half-made images, so it skips the sync (the source waits for it).
pub fn save_delta(pid: u32, base: &Path, delta: &Path, durable: bool) -> Result<u64> {
    let pages = own_pages(pid, base)?;
    let mem = File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| VmmError::io(format!("opening the memory of pid {pid}"), e))?;
    let tmp = delta.with_extension("delta-new");
    let ctx = || format!("writing {}", tmp.display());
    let result = (|| -> Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, crate::files::open_private(&tmp, true)?);
        out.write_all(DELTA_MAGIC)
            .map_err(|e| VmmError::io(ctx(), e))?;
        out.write_all(&(pages.len() as u64).to_le_bytes())
            .map_err(|e| VmmError::io(ctx(), e))?;
        for (index, _) in &pages {
            out.write_all(&index.to_le_bytes())
                .map_err(|e| VmmError::io(ctx(), e))?;
        }
        let mut buf = vec![0u8; RUN_PAGES * PAGE as usize];
        for run in runs(&pages) {
            let bytes = &mut buf[..run.len() * PAGE as usize];
            mem.read_exact_at(bytes, run[0].1)
                .map_err(|e| VmmError::io(format!("reading the memory of pid {pid}"), e))?;
            out.write_all(bytes).map_err(|e| VmmError::io(ctx(), e))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| VmmError::io(ctx(), e.into_error()))?;
        if durable {
            file.sync_data().map_err(|e| VmmError::io(ctx(), e))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, delta).map_err(|e| VmmError::io(ctx(), e))?;
    Ok(pages.len() as u64)
}

/// The page indexes of a delta file, with the file positioned at its first page.
fn read_delta_index(delta: &Path) -> Result<(File, Vec<u64>)> {
    let ctx = || format!("reading {}", delta.display());
    let mut f = File::open(delta).map_err(|e| VmmError::io(ctx(), e))?;
    let mut head = [0u8; 16];
    f.read_exact(&mut head)
        .map_err(|e| VmmError::io(ctx(), e))?;
    if &head[..8] != DELTA_MAGIC {
        return Err(VmmError::Config(format!(
            "{} is not a memory delta",
            delta.display()
        )));
    }
    let count = u64::from_le_bytes(head[8..].try_into().unwrap_or_default());
    let len = f.metadata().map_err(|e| VmmError::io(ctx(), e))?.len();
    if count.checked_mul(8 + PAGE).and_then(|n| n.checked_add(16)) != Some(len) {
        return Err(VmmError::Config(format!(
            "{} is truncated or corrupt",
            delta.display()
        )));
    }
    let mut raw = vec![0u8; count as usize * 8];
    f.read_exact(&mut raw).map_err(|e| VmmError::io(ctx(), e))?;
    let index = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    Ok((f, index))
}

/// Calls `put(file_offset, bytes)` for each run of pages of `delta`, in order.
fn each_delta_run(delta: &Path, mut put: impl FnMut(u64, &[u8]) -> io::Result<()>) -> Result<u64> {
    let (f, index) = read_delta_index(delta)?;
    let first = 16 + index.len() as u64 * 8;
    let pairs: Vec<(u64, u64)> = index
        .iter()
        .enumerate()
        .map(|(i, page)| (*page, first + i as u64 * PAGE))
        .collect();
    let mut buf = vec![0u8; RUN_PAGES * PAGE as usize];
    for run in runs(&pairs) {
        let bytes = &mut buf[..run.len() * PAGE as usize];
        f.read_exact_at(bytes, run[0].1)
            .map_err(|e| VmmError::io(format!("reading {}", delta.display()), e))?;
        put(run[0].0 * PAGE, bytes)
            .map_err(|e| VmmError::io(format!("applying {}", delta.display()), e))?;
    }
    Ok(index.len() as u64)
}

/// Writes the pages of `delta` into process `pid`'s mapping of `base` (a VMM that has mapped
/// guest RAM and not yet loaded its device state). Returns the number of pages.
pub fn apply_delta(pid: u32, base: &Path, delta: &Path) -> Result<u64> {
    let ranges = mappings_of(pid, base)?;
    let mem = OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .map_err(|e| VmmError::io(format!("opening the memory of pid {pid}"), e))?;
    each_delta_run(delta, |offset, bytes| {
        let end = offset + bytes.len() as u64;
        let Some((start, _, off)) = ranges
            .iter()
            .find(|(a, b, off)| *off <= offset && end <= off + (b - a))
        else {
            return Err(io::Error::other(format!(
                "page offset {offset} is outside guest RAM"
            )));
        };
        mem.write_all_at(bytes, start + (offset - off))
    })
}

/// Writes the whole guest RAM of a saved VM in folder `dir` to the new file `dest` (sparse):
/// the template's pages with the VM's own on top (its zero pages as holes), or a copy of its
/// own file. For snapshots, fork images and moving a capsule to another host, where the
/// template may not be.
pub fn flatten(dir: &Path, dest: &Path) -> Result<()> {
    match MemoryLayout::of(dir) {
        MemoryLayout::Own(own) => crate::files::copy_sparse(&own, dest),
        MemoryLayout::Template { base, delta } => {
            crate::files::copy_sparse(&base, dest)?;
            if delta.is_file() {
                let out = OpenOptions::new()
                    .write(true)
                    .open(dest)
                    .map_err(|e| VmmError::io(format!("opening {}", dest.display()), e))?;
                each_delta_run(&delta, |offset, bytes| {
                    crate::files::write_sparse_at(&out, offset, bytes)
                })?;
            }
            Ok(())
        }
    }
}

/// Turns a saved template-layout VM in `dir` into the own layout (its RAM flattened into
/// `memory`, `memory.base` and `memory.delta` removed). Nothing to do for the own layout.
pub fn make_own(dir: &Path) -> Result<()> {
    if let MemoryLayout::Template { base, delta } = MemoryLayout::of(dir) {
        let tmp = dir.join("memory.flat-new");
        let _ = std::fs::remove_file(&tmp);
        // The own layout maps its file shared: allocated now, a full disk fails here, never
        // a running guest (SIGBUS).
        if let Err(e) = flatten(dir, &tmp).and_then(|()| crate::files::allocate(&tmp)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, dir.join(OWN_FILE))
            .map_err(|e| VmmError::io("placing the flattened memory", e))?;
        // `memory.base` first: from then on the folder reads as the own layout, whatever is
        // left of the rest.
        std::fs::remove_file(&base).map_err(|e| VmmError::io("removing the memory link", e))?;
        let _ = std::fs::remove_file(&delta);
    }
    Ok(())
}

/// QEMU's migration stream header (magic `QEVM`, version 3).
const STREAM_HEADER: [u8; 8] = *b"QEVM\0\0\0\x03";

/// The configuration section `migrate` writes for machine `machine` with `x-ignore-shared`
/// on: section type 7, the machine name, and the `configuration/capabilities` subsection
/// (version 1) naming that one capability.
pub fn configuration_section(machine: &str) -> Vec<u8> {
    let mut s = vec![0x07];
    s.extend_from_slice(&(machine.len() as u32).to_be_bytes());
    s.extend_from_slice(machine.as_bytes());
    let sub = b"configuration/capabilities";
    s.push(0x05);
    s.push(sub.len() as u8);
    s.extend_from_slice(sub);
    s.extend_from_slice(&1u32.to_be_bytes());
    s.extend_from_slice(&1u32.to_be_bytes());
    let cap = b"x-ignore-shared";
    s.push(cap.len() as u8);
    s.extend_from_slice(cap);
    s
}

/// Rewrites the device state QMP `xen-save-devices-state` left in `path` into a stream
/// `migrate-incoming` loads: header, configuration section, the devices, end, and an empty
/// description section (the loader asks for one).
pub fn device_state_stream(path: &Path, machine: &str) -> Result<()> {
    let ctx = || format!("rewriting {}", path.display());
    let raw = std::fs::read(path).map_err(|e| VmmError::io(ctx(), e))?;
    if raw.len() < 9 || raw[..8] != STREAM_HEADER {
        return Err(VmmError::Config(format!(
            "{} is not a QEMU device state",
            path.display()
        )));
    }
    let mut out = Vec::with_capacity(raw.len() + 64);
    out.extend_from_slice(&STREAM_HEADER);
    out.extend_from_slice(&configuration_section(machine));
    out.extend_from_slice(&raw[8..]);
    out.push(0x06);
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(b"{}");
    crate::files::write_private(path, &out)
}

/// For tests: a file mapped privately into this process, as QEMU maps a template's memory
/// (so this process's own pages in it are what a VM's would be); unmapped when dropped.
#[cfg(test)]
pub(crate) struct PrivateMap {
    addr: *mut libc::c_void,
    len: usize,
}

#[cfg(test)]
impl PrivateMap {
    pub(crate) fn new(file: &Path) -> PrivateMap {
        use std::os::fd::AsRawFd;
        let f = File::open(file).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        // SAFETY: a fresh private mapping of an open file, unmapped on drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        PrivateMap { addr, len }
    }

    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes long and lives as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

#[cfg(test)]
impl Drop for PrivateMap {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping `new` made.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_on_gaps_and_length() {
        let pages: Vec<(u64, u64)> = [0u64, 1, 2, 5, 6, 9]
            .iter()
            .map(|i| (*i, 0x1000_0000 + i * PAGE))
            .collect();
        let r = runs(&pages);
        let lens: Vec<usize> = r.iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![3, 2, 1]);
        let long: Vec<(u64, u64)> = (0..600u64).map(|i| (i, i * PAGE)).collect();
        let lens: Vec<usize> = runs(&long).iter().map(|r| r.len()).collect();
        assert_eq!(lens, vec![256, 256, 88]);
        assert!(runs(&[]).is_empty());
    }

    /// A delta of this process's own private mapping of a file: only the pages written are
    /// saved; flattening puts them over the file; the file itself never changes.
    #[test]
    fn delta_of_a_private_mapping_round_trips() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let base = dir.path().join(BASE_FILE);
        let mut data = vec![0u8; 64 * PAGE as usize];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i / PAGE as usize) as u8 + 1;
        }
        std::fs::write(&base, &data).unwrap();
        let mut map = PrivateMap::new(&base);
        let m = map.bytes();
        let _read: u64 = m.iter().step_by(PAGE as usize).map(|b| u64::from(*b)).sum();
        m[3 * PAGE as usize] = 0xAA;
        m[4 * PAGE as usize + 9] = 0xBB;
        m[40 * PAGE as usize] = 0xCC;
        // A page the guest zeroed (freed): a hole in the flattened file, reading zero.
        m[50 * PAGE as usize..51 * PAGE as usize].fill(0);
        let delta = dir.path().join(DELTA_FILE);
        let n = save_delta(std::process::id(), &base, &delta, true).unwrap();
        assert_eq!(n, 4, "only written pages are the VM's own");
        let mut want = data.clone();
        want[3 * PAGE as usize] = 0xAA;
        want[4 * PAGE as usize + 9] = 0xBB;
        want[40 * PAGE as usize] = 0xCC;
        want[50 * PAGE as usize..51 * PAGE as usize].fill(0);
        let flat = dir.path().join("flat");
        flatten(dir.path(), &flat).unwrap();
        assert_eq!(std::fs::read(&flat).unwrap(), want);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&flat).unwrap().blocks() * 512,
            63 * PAGE,
            "the zero page is a hole"
        );
        assert_eq!(
            std::fs::read(&base).unwrap(),
            data,
            "the base never changes"
        );
        // Applying the delta to a fresh private mapping gives the same RAM.
        m.copy_from_slice(&data);
        apply_delta(std::process::id(), &base, &delta).unwrap();
        assert_eq!(&m[..], &want[..]);
        drop(map);
        // A delta that promises more pages than it holds is refused.
        let mut short = DELTA_MAGIC.to_vec();
        short.extend_from_slice(&5u64.to_le_bytes());
        std::fs::write(&delta, &short).unwrap();
        assert!(matches!(
            flatten(dir.path(), &dir.path().join("f2")),
            Err(VmmError::Config(_))
        ));
    }

    #[test]
    fn layout_follows_the_files() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        assert_eq!(
            MemoryLayout::of(dir.path()),
            MemoryLayout::Own(dir.path().join(OWN_FILE))
        );
        let tmpl = dir.path().join("template-memory");
        std::fs::write(&tmpl, b"x").unwrap();
        let vm = dir.path().join("vm");
        std::fs::create_dir(&vm).unwrap();
        link_template(&tmpl, &vm).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&tmpl).unwrap().ino(),
            std::fs::metadata(vm.join(BASE_FILE)).unwrap().ino(),
            "the same inode: the same page cache"
        );
        assert!(matches!(
            MemoryLayout::of(&vm),
            MemoryLayout::Template { .. }
        ));
        make_own(&vm).unwrap();
        assert_eq!(MemoryLayout::of(&vm), MemoryLayout::Own(vm.join(OWN_FILE)));
        assert_eq!(std::fs::read(vm.join(OWN_FILE)).unwrap(), b"x");
        assert_eq!(std::fs::read(&tmpl).unwrap(), b"x");
    }
}
