//! Moving a snapshot template or a paused capsule between hosts as a stream of
//! [`TransferChunk`]s: one header (what, and each file's path and length), data chunks
//! (≤ [`CHUNK`] bytes of one file at an offset; holes and zero blocks are never sent), one
//! trailer (per file, SHA-256 over its chunks in order, each as offset, length and bytes).
//!
//! [`send`] reads files into a stream; [`receive`] writes one into a fresh folder, checking
//! paths against a fixed list, lengths, offsets and hashes. What to send and where a received
//! folder goes (atomically, by `rename`) is the manager's (`manager/transfer.rs`). The
//! control plane relays streams from host to host; hosts never connect to each other.

mod receive;

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use wrenn_proto::agent::v1::{
    transfer_chunk::{Data, Header, Part, Trailer},
    TransferChunk, TransferFile, TransferKind,
};

pub use receive::{header, receive};

use crate::error::{AgentError, Result};

/// Most bytes in one data chunk.
pub const CHUNK: usize = 1 << 20;

/// The files of a snapshot template, relative to its folder.
pub const TEMPLATE_FILES: &[&str] = &[
    "template.json",
    "vmlinuz",
    "initrd.img",
    "snapshot/vm.json",
    "snapshot/state",
    "snapshot/memory",
    "snapshot/disk.img",
];

/// Where a moved capsule keeps what its template gave it (kernel, initrd, the raw disk its
/// overlay rests on, the machine shape): a template folder of its own inside the capsule's.
pub const ORIGIN: &str = "origin";

/// The files of a paused capsule, relative to its folder (`capsule.json` first: the receiver
/// learns early what it gets).
pub const CAPSULE_FILES: &[&str] = &[
    "capsule.json",
    "state",
    "memory",
    "disk.qcow2",
    "origin/vmlinuz",
    "origin/initrd.img",
    "origin/snapshot/vm.json",
    "origin/snapshot/disk.img",
];

/// The list of files a kind of transfer carries.
pub fn files_of(kind: TransferKind) -> &'static [&'static str] {
    match kind {
        TransferKind::Template => TEMPLATE_FILES,
        TransferKind::Capsule => CAPSULE_FILES,
        TransferKind::Unspecified => &[],
    }
}

/// The running hash of one file's chunks.
#[derive(Default, Clone)]
pub(crate) struct ChunkHash(Sha256);

impl ChunkHash {
    pub(crate) fn add(&mut self, offset: u64, bytes: &[u8]) {
        self.0.update(offset.to_le_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

/// Where `fd`'s next data at or after `from` starts (`None`: only a hole is left).
fn next_data(file: &File, from: u64) -> Option<u64> {
    // SAFETY: lseek on an open descriptor; only the return value is used.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, libc::SEEK_DATA) };
    (at >= 0).then_some(at as u64)
}

/// Where the data run starting at `from` ends.
fn hole_after(file: &File, from: u64, len: u64) -> u64 {
    // SAFETY: as above.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, libc::SEEK_HOLE) };
    if at < 0 {
        len
    } else {
        (at as u64).min(len)
    }
}

/// One file's data chunks, in order: runs between holes read in blocks of [`CHUNK`], blocks
/// of zeros left out. `each(offset, bytes)` sees every chunk; its error stops the walk.
pub(crate) fn each_chunk(
    path: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let ctx = || format!("reading {}", path.display());
    let file = File::open(path).map_err(|e| AgentError::io(ctx(), e))?;
    let len = file.metadata().map_err(|e| AgentError::io(ctx(), e))?.len();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let Some(start) = next_data(&file, pos) else {
            break;
        };
        let end = hole_after(&file, start, len);
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            file.read_exact_at(&mut buf[..n], at)
                .map_err(|e| AgentError::io(ctx(), e))?;
            if buf[..n].iter().any(|b| *b != 0) {
                each(at, &buf[..n])?;
            }
            at += n as u64;
        }
        pos = end.max(start + 1);
    }
    Ok(())
}

/// What one stream carries: its header's kind and name, and each listed file's source.
pub struct Outgoing {
    pub kind: TransferKind,
    pub name: String,
    /// Relative path (one of [`files_of`]`(kind)`, in that order) and where to read it.
    pub files: Vec<(String, PathBuf)>,
}

fn data(file: u32, offset: u64, bytes: &[u8]) -> TransferChunk {
    TransferChunk {
        part: Some(Part::Data(Data {
            file,
            offset,
            bytes: bytes.to_vec(),
        })),
    }
}

/// Sends `out` on `tx` from a blocking thread: header, chunks, trailer; an error (a file
/// that cannot be read) is sent as the stream's last item. A closed receiver stops it.
pub fn send(out: Outgoing, tx: mpsc::Sender<std::result::Result<TransferChunk, tonic::Status>>) {
    tokio::task::spawn_blocking(move || {
        let sent = (|| -> Result<()> {
            let mut files = Vec::new();
            for (rel, path) in &out.files {
                let size = std::fs::metadata(path)
                    .map_err(|e| AgentError::io(format!("reading {}", path.display()), e))?
                    .len();
                files.push(TransferFile {
                    path: rel.clone(),
                    size,
                });
            }
            let header = TransferChunk {
                part: Some(Part::Header(Header {
                    kind: out.kind as i32,
                    name: out.name.clone(),
                    files,
                })),
            };
            let closed = || AgentError::TransferCut("the receiver went away".into());
            tx.blocking_send(Ok(header)).map_err(|_| closed())?;
            let mut hashes = Vec::new();
            for (i, (_, path)) in out.files.iter().enumerate() {
                let mut hash = ChunkHash::default();
                each_chunk(path, |offset, bytes| {
                    hash.add(offset, bytes);
                    tx.blocking_send(Ok(data(i as u32, offset, bytes)))
                        .map_err(|_| closed())
                })?;
                hashes.push(hash.finish());
            }
            let trailer = TransferChunk {
                part: Some(Part::Trailer(Trailer { sha256: hashes })),
            };
            tx.blocking_send(Ok(trailer)).map_err(|_| closed())
        })();
        match sent {
            Ok(()) => {}
            Err(AgentError::TransferCut(why)) => {
                tracing::info!(name = %out.name, %why, "a transfer stopped")
            }
            Err(e) => {
                tracing::warn!(name = %out.name, error = %e, "a transfer failed");
                let _ = tx.blocking_send(Err(e.into()));
            }
        }
    });
}

#[cfg(test)]
mod tests;
