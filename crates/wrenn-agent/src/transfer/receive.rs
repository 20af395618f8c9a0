//! Writing a transfer stream into a folder: the header's paths must be exactly the kind's
//! list; each chunk must fall inside its file, after the previous one; the trailer's hashes
//! must match. Writes happen on a blocking thread fed through a small queue.

use std::{
    collections::HashSet,
    fs::File,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use futures_util::{Stream, StreamExt};
use wrenn_proto::agent::v1::{
    transfer_chunk::{Data, Header, Part},
    TransferChunk, TransferKind,
};

use super::{files_of, ChunkHash, CHUNK};
use crate::error::{AgentError, Result};

fn bad(msg: impl Into<String>) -> AgentError {
    AgentError::BadTransfer(msg.into())
}

fn cut(status: tonic::Status) -> AgentError {
    AgentError::TransferCut(format!("the stream broke off: {}", status.message()))
}

/// Reads the stream's header and checks it is a `kind` transfer of exactly its files.
pub async fn header<S>(stream: &mut S, kind: TransferKind) -> Result<Header>
where
    S: Stream<Item = std::result::Result<TransferChunk, tonic::Status>> + Unpin,
{
    let first = stream
        .next()
        .await
        .ok_or_else(|| AgentError::TransferCut("the stream was empty".into()))?
        .map_err(cut)?;
    let Some(Part::Header(h)) = first.part else {
        return Err(bad("the stream must start with a header"));
    };
    if h.kind != kind as i32 {
        return Err(bad(format!(
            "a {} stream was sent where a {} was expected",
            TransferKind::try_from(h.kind)
                .map(|k| k.as_str_name())
                .unwrap_or("unknown"),
            kind.as_str_name()
        )));
    }
    let want: HashSet<&str> = files_of(kind).iter().copied().collect();
    let got: HashSet<&str> = h.files.iter().map(|f| f.path.as_str()).collect();
    if got != want || h.files.len() != want.len() {
        return Err(bad(format!(
            "the header lists files {:?}; expected {:?}",
            h.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            files_of(kind)
        )));
    }
    Ok(h)
}

/// One file being written.
struct Target {
    file: File,
    size: u64,
    /// Chunks must start at or after this.
    next: u64,
    hash: ChunkHash,
}

fn open_targets(dir: &Path, header: &Header) -> Result<Vec<Target>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = Vec::new();
    for f in &header.files {
        let path: PathBuf = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            wrenn_vmm::files::private_dir(parent)?;
        }
        let ctx = || format!("writing {}", path.display());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(wrenn_vmm::files::PRIVATE_FILE)
            .open(&path)
            .map_err(|e| AgentError::io(ctx(), e))?;
        file.set_len(f.size).map_err(|e| AgentError::io(ctx(), e))?;
        out.push(Target {
            file,
            size: f.size,
            next: 0,
            hash: ChunkHash::default(),
        });
    }
    Ok(out)
}

/// Writes one chunk after checking where it goes.
fn write(targets: &mut [Target], header: &Header, d: &Data) -> Result<u64> {
    let t = targets.get_mut(d.file as usize).ok_or_else(|| {
        bad(format!(
            "a chunk names file {} of {}",
            d.file,
            header.files.len()
        ))
    })?;
    let path = &header.files[d.file as usize].path;
    let len = d.bytes.len() as u64;
    if d.bytes.len() > CHUNK || d.offset < t.next || d.offset.saturating_add(len) > t.size {
        return Err(bad(format!(
            "a chunk of {path} at {} ({len} bytes) is out of order, too large or past its end ({} bytes)",
            d.offset, t.size
        )));
    }
    t.file
        .write_all_at(&d.bytes, d.offset)
        .map_err(|e| AgentError::io(format!("writing {path}"), e))?;
    t.hash.add(d.offset, &d.bytes);
    t.next = d.offset + len;
    Ok(len)
}

/// Writes the rest of a stream (after [`header`]) into `dir` (an empty folder): every file
/// with its length, its chunks, then the trailer's check and an fsync of each file. Returns
/// the bytes of data received. On an error the caller removes `dir`.
pub async fn receive<S>(stream: &mut S, header: &Header, dir: &Path) -> Result<u64>
where
    S: Stream<Item = std::result::Result<TransferChunk, tonic::Status>> + Unpin,
{
    let mut targets = open_targets(dir, header)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Data>(8);
    let h = header.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<(Vec<Target>, u64)> {
        let mut total = 0;
        while let Some(d) = rx.blocking_recv() {
            total += write(&mut targets, &h, &d)?;
        }
        Ok((targets, total))
    });
    let mut trailer = None;
    let mut broke = None;
    while let Some(msg) = stream.next().await {
        match msg.map(|m| m.part) {
            Err(status) => {
                broke = Some(cut(status));
                break;
            }
            Ok(Some(Part::Data(d))) if trailer.is_none() => {
                if tx.send(d).await.is_err() {
                    break; // the writer stopped on an error: it says which
                }
            }
            Ok(Some(Part::Trailer(t))) if trailer.is_none() => trailer = Some(t),
            Ok(_) => {
                broke = Some(bad(
                    "only data chunks and one trailer may follow the header",
                ));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| AgentError::io("writing a transfer", std::io::Error::other(e)))?;
    let (targets, total) = written?;
    if let Some(e) = broke {
        return Err(e);
    }
    let trailer = trailer
        .ok_or_else(|| AgentError::TransferCut("the stream ended before its trailer".into()))?;
    if trailer.sha256.len() != targets.len() {
        return Err(bad("the trailer's hashes do not match the header's files"));
    }
    for ((t, want), f) in targets.into_iter().zip(&trailer.sha256).zip(&header.files) {
        if &t.hash.finish() != want {
            return Err(AgentError::TransferCorrupt {
                path: f.path.clone(),
            });
        }
        t.file
            .sync_all()
            .map_err(|e| AgentError::io(format!("writing {}", f.path), e))?;
    }
    Ok(total)
}
