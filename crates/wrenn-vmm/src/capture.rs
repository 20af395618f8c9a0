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
    /// The pages, in the order of `index` (the buffer may be longer).
    data: Vec<u8>,
}

impl OwnPages {
    /// Copies the pages process `pid` (stopped) owns in its private mapping of `base`
    /// ([`memory::save_delta`]'s pages) with `process_vm_readv`, up to 1024 runs a call.
    pub fn read(pid: u32, base: &Path) -> Result<OwnPages> {
        OwnPages::read_into(pid, base, Vec::new())
    }

    /// [`OwnPages::read`] into `buf` when it is large enough (its pages then already
    /// faulted in: [`OwnPages::buffer_for`], or a buffer from an earlier copy,
    /// [`OwnPages::into_buffer`]), else into a new buffer.
    pub fn read_into(pid: u32, base: &Path, mut buf: Vec<u8>) -> Result<OwnPages> {
        let pages = memory::own_pages(pid, base)?;
        let need = pages.len() * PAGE as usize;
        if buf.len() < need {
            buf = Self::room(need);
        }
        let runs = memory::runs(&pages);
        copy_runs(pid, &runs, &mut buf[..need])?;
        Ok(OwnPages {
            index: pages.into_iter().map(|(i, _)| i).collect(),
            data: buf,
        })
    }

    /// A buffer for a later [`OwnPages::read_into`] of about `pages` pages, every page of it
    /// faulted in now (so the copy into it does not wait for the kernel to find memory).
    pub fn buffer_for(pages: usize) -> Vec<u8> {
        let need = pages * PAGE as usize;
        let mut buf = Self::room(need);
        for byte in buf[..need + need / 8].iter_mut().step_by(PAGE as usize) {
            *byte = 1;
        }
        buf
    }

    /// A new buffer for `need` bytes, with room to grow (a VM that runs on owns more pages at
    /// its next copy); not touched, so not resident until written.
    fn room(need: usize) -> Vec<u8> {
        vec![0u8; need + need / 8 + (1 << 20)]
    }

    /// The buffer, for a later [`OwnPages::read_into`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.data
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
        out.write_all(&self.data[..self.index.len() * PAGE as usize])
            .map_err(|e| VmmError::io(ctx(), e))
    }
}

/// Copies `runs` (page index, address) of process `pid` into `out`, one after the other, with
/// `process_vm_readv` (up to [`IOV_BATCH`] runs a call).
fn copy_runs(pid: u32, runs: &[&[(u64, u64)]], out: &mut [u8]) -> Result<()> {
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
            iov_base: out[at..at + len].as_mut_ptr().cast(),
            iov_len: len,
        };
        // SAFETY: `local` points at `len` bytes of `out`, owned and writable; the remote
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
            return Err(VmmError::io(
                format!("copying the memory of pid {pid}"),
                err,
            ));
        }
        at += len;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{PrivateMap, BASE_FILE, DELTA_FILE};

    /// The pages this process wrote in its private mapping of a file, copied out and written
    /// as a delta, flatten to exactly what the mapping held; later writes to the mapping are
    /// not in it.
    #[test]
    fn own_pages_copied_out_are_the_mapping_at_the_copy() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let base = dir.path().join(BASE_FILE);
        let data: Vec<u8> = (0..96 * PAGE as usize)
            .map(|i| (i / PAGE as usize) as u8 ^ 0x5A)
            .collect();
        std::fs::write(&base, &data).unwrap();
        let mut map = PrivateMap::new(&base);
        let m = map.bytes();
        let mut want = data.clone();
        for (page, byte) in [(1usize, 0x11u8), (2, 0x22), (3, 0x33), (60, 0x60)] {
            m[page * PAGE as usize + 7] = byte;
            want[page * PAGE as usize + 7] = byte;
        }
        // A buffer for the pages owned now, faulted in (as while the VM runs), then more
        // writes, then the copy that counts into that buffer.
        let owned = memory::own_pages(std::process::id(), &base).unwrap().len();
        assert_eq!(owned, 4);
        let buffer = OwnPages::buffer_for(owned);
        let (resident, spanned) = resident_pages(&buffer[..owned * PAGE as usize]);
        assert_eq!(resident, spanned, "the buffer is faulted in");
        m[95 * PAGE as usize + 7] = 0x95;
        want[95 * PAGE as usize + 7] = 0x95;
        m[PAGE as usize + 7] = 0x10;
        want[PAGE as usize + 7] = 0x10;
        let pages = OwnPages::read_into(std::process::id(), &base, buffer).unwrap();
        assert_eq!(pages.len(), 5);
        // Written after the copy: in no checkpoint.
        m[2 * PAGE as usize + 7] = 0xEE;
        m[10 * PAGE as usize] = 0xEE;
        pages.write_delta(&dir.path().join(DELTA_FILE)).unwrap();
        let flat = dir.path().join("flat");
        memory::flatten(dir.path(), &flat).unwrap();
        assert_eq!(std::fs::read(&flat).unwrap(), want);
        assert_eq!(
            std::fs::read(&base).unwrap(),
            data,
            "the base never changes"
        );
        drop(map);
    }

    /// How many of the pages `bytes` spans are in memory now, and how many it spans.
    fn resident_pages(bytes: &[u8]) -> (usize, usize) {
        let first = bytes.as_ptr() as u64 / PAGE;
        let last = (bytes.as_ptr() as u64 + bytes.len() as u64 - 1) / PAGE;
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let mut raw = vec![0u8; ((last - first + 1) * 8) as usize];
        pagemap.read_exact_at(&mut raw, first * 8).unwrap();
        let resident = raw
            .chunks_exact(8)
            .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1)
            .count();
        (resident, raw.len() / 8)
    }

    /// A sparse file's data copied out is written back with the same bytes and holes; over
    /// the limit nothing is copied.
    #[test]
    fn file_data_round_trips_with_its_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let src = dir.path().join("disk");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
        f.write_all_at(&[9u8; 4096], 40 << 20).unwrap();
        drop(f);
        let taken = FileData::read(&src, 1 << 20).unwrap().unwrap();
        assert_eq!(taken.bytes(), 12288);
        // Later writes to the source are not in the copy.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&src)
            .unwrap()
            .write_all_at(&[1u8; 4096], 1 << 20)
            .unwrap();
        let copy = dir.path().join("copy");
        taken.write(&copy).unwrap();
        let got = std::fs::read(&copy).unwrap();
        assert_eq!(got.len(), 64 << 20);
        assert!(got[(1 << 20)..(1 << 20) + 8192].iter().all(|b| *b == 7));
        assert!(got[(40 << 20)..(40 << 20) + 4096].iter().all(|b| *b == 9));
        assert_eq!(
            got.iter().map(|b| u64::from(*b)).sum::<u64>(),
            7 * 8192 + 9 * 4096
        );
        assert_eq!(std::fs::metadata(&copy).unwrap().blocks() * 512, 12288);
        assert_eq!(std::fs::metadata(&copy).unwrap().mode() & 0o777, 0o600);
        assert!(FileData::read(&src, 8192).unwrap().is_none());
    }
}
