//! Copies of a stopped VM's changing state in the agent's own memory, taken in a few large
//! system calls and written to files later (when the VM runs again): its own guest pages
//! ([`OwnPages`]) and its disk overlay's data ([`FileData`]). A live fork's checkpoint uses
//! them so the source's guest is stopped only for the copies, not for the file writes.
//!
//! Memory cost: a copy lives only from the capture until its file is written; [`OwnPages`]
//! is at most the VM's guest RAM (only pages the VM wrote itself), [`FileData`] at most the
//! limit its caller gives (larger overlays are copied file to file instead).

use std::{
    fs::File,
    io::{self, Write},
    os::unix::fs::FileExt,
    path::Path,
};

use crate::{
    error::{Result, VmmError},
    files,
    memory::{self, PAGE},
};

/// Remote ranges per `process_vm_readv` call (the kernel's `IOV_MAX`).
const IOV_BATCH: usize = 1024;

/// The pages a VM owns in its private mapping of its template's memory, copied out.
#[derive(Debug, Default)]
pub struct OwnPages {
    /// Each page's index in the mapped file, ascending.
    index: Vec<u64>,
    /// The pages, in the order of `index`.
    data: Vec<u8>,
}

impl OwnPages {
    /// Copies the pages process `pid` (stopped) owns in its private mapping of `base`
    /// ([`memory::save_delta`]'s pages) with `process_vm_readv`, up to 1024 runs a call.
    pub fn read(pid: u32, base: &Path) -> Result<OwnPages> {
        let pages = memory::own_pages(pid, base)?;
        let mut data = vec![0u8; pages.len() * PAGE as usize];
        let runs = memory::runs(&pages);
        let mut at = 0usize;
        for batch in runs.chunks(IOV_BATCH) {
            let len: usize = batch.iter().map(|r| r.len() * PAGE as usize).sum();
            let remote: Vec<libc::iovec> = batch
                .iter()
                .map(|r| libc::iovec {
                    iov_base: r[0].1 as *mut libc::c_void,
                    iov_len: r.len() * PAGE as usize,
                })
                .collect();
            let local = libc::iovec {
                iov_base: data[at..at + len].as_mut_ptr().cast(),
                iov_len: len,
            };
            // SAFETY: `local` points at `len` bytes of `data`, owned and writable; the remote
            // ranges are read from the other process (the kernel checks them).
            let n = unsafe {
                libc::process_vm_readv(
                    pid as libc::pid_t,
                    &local,
                    1,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            if n < 0 || n as usize != len {
                let err = if n < 0 {
                    io::Error::last_os_error()
                } else {
                    io::Error::other(format!("read {n} of {len} bytes"))
                };
                return Err(VmmError::io(format!("copying the memory of pid {pid}"), err));
            }
            at += len;
        }
        Ok(OwnPages {
            index: pages.into_iter().map(|(i, _)| i).collect(),
            data,
        })
    }

    /// How many pages.
    pub fn len(&self) -> u64 {
        self.index.len() as u64
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Writes them as the delta file `delta` (new, 0600; not synced: a checkpoint's delta is
    /// flattened into a fork image at once).
    pub fn write_delta(&self, delta: &Path) -> Result<()> {
        let ctx = || format!("writing {}", delta.display());
        let mut head = Vec::with_capacity(16 + self.index.len() * 8);
        head.extend_from_slice(memory::DELTA_MAGIC);
        head.extend_from_slice(&(self.index.len() as u64).to_le_bytes());
        for i in &self.index {
            head.extend_from_slice(&i.to_le_bytes());
        }
        let mut out = files::open_private(delta, true)?;
        out.write_all(&head).map_err(|e| VmmError::io(ctx(), e))?;
        out.write_all(&self.data)
            .map_err(|e| VmmError::io(ctx(), e))
    }
}

/// A file's data extents, copied out (its holes stay holes when it is written again).
#[derive(Debug, Default)]
pub struct FileData {
    len: u64,
    extents: Vec<(u64, Vec<u8>)>,
}

impl FileData {
    /// Copies the data of `path` when it holds at most `limit` bytes of data; `None` when it
    /// holds more.
    pub fn read(path: &Path, limit: u64) -> Result<Option<FileData>> {
        let ctx = || format!("reading {}", path.display());
        let f = File::open(path).map_err(|e| VmmError::io(ctx(), e))?;
        let len = f.metadata().map_err(|e| VmmError::io(ctx(), e))?.len();
        let spans = files::data_extents(&f).map_err(|e| VmmError::io(ctx(), e))?;
        if spans.iter().map(|(a, b)| b - a).sum::<u64>() > limit {
            return Ok(None);
        }
        let mut extents = Vec::with_capacity(spans.len());
        for (from, to) in spans {
            let mut buf = vec![0u8; (to - from) as usize];
            f.read_exact_at(&mut buf, from)
                .map_err(|e| VmmError::io(ctx(), e))?;
            extents.push((from, buf));
        }
        Ok(Some(FileData { len, extents }))
    }

    /// Bytes of data held.
    pub fn bytes(&self) -> u64 {
        self.extents.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Writes it as the new file `dest` (0600), holes where the original had them.
    pub fn write(&self, dest: &Path) -> Result<()> {
        let ctx = || format!("writing {}", dest.display());
        let out = files::open_private(dest, true)?;
        out.set_len(self.len).map_err(|e| VmmError::io(ctx(), e))?;
        for (at, data) in &self.extents {
            out.write_all_at(data, *at)
                .map_err(|e| VmmError::io(ctx(), e))?;
        }
        Ok(())
    }
}
