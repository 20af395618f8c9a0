//! Streams between folders, without VMs: sparse files arrive whole with their holes; a
//! corrupted chunk, a cut stream, a wrong file list are refused.

use super::*;
use futures_util::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// A folder with the template file list: small files, and a sparse 64 MiB "disk" with data
/// at 0, 5 MiB and its last byte.
fn source() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("snapshot")).unwrap();
    for (i, f) in TEMPLATE_FILES.iter().enumerate() {
        std::fs::write(dir.path().join(f), format!("file {i}: {f}\n").repeat(i + 1)).unwrap();
    }
    let disk = File::options()
        .write(true)
        .open(dir.path().join("snapshot/disk.img"))
        .unwrap();
    disk.set_len(64 << 20).unwrap();
    disk.write_all_at(&[7u8; 3 << 20], 5 << 20).unwrap();
    disk.write_all_at(b"end", (64 << 20) - 3).unwrap();
    dir
}

fn outgoing(dir: &Path) -> Outgoing {
    Outgoing {
        kind: TransferKind::Template,
        name: "t1".into(),
        files: TEMPLATE_FILES
            .iter()
            .map(|f| (f.to_string(), dir.join(f)))
            .collect(),
    }
}

type Item = std::result::Result<TransferChunk, tonic::Status>;

async fn chunks(dir: &Path) -> Vec<Item> {
    let (tx, rx) = mpsc::channel(4);
    send(outgoing(dir), tx);
    ReceiverStream::new(rx).collect().await
}

async fn land(items: Vec<Item>) -> (tempfile::TempDir, Result<u64>) {
    let to = tempfile::tempdir().unwrap();
    let mut s = tokio_stream::iter(items);
    let got = async {
        let h = header(&mut s, TransferKind::Template).await?;
        receive(&mut s, &h, to.path()).await
    }
    .await;
    (to, got)
}

#[tokio::test]
async fn a_sparse_template_arrives_whole_and_sparse() {
    let src = source();
    let items = chunks(src.path()).await;
    assert!(items.iter().all(|i| i.is_ok()));
    let data: Vec<&Data> = items
        .iter()
        .filter_map(|i| match &i.as_ref().unwrap().part {
            Some(Part::Data(d)) => Some(d),
            _ => None,
        })
        .collect();
    assert!(data.iter().all(|d| d.bytes.len() <= CHUNK));
    let sent: usize = data.iter().map(|d| d.bytes.len()).sum();
    assert!(sent < (4 << 20), "holes were sent: {sent} bytes");
    let (to, got) = land(items).await;
    assert_eq!(got.unwrap() as usize, sent);
    for f in TEMPLATE_FILES {
        let a = std::fs::read(src.path().join(f)).unwrap();
        let b = std::fs::read(to.path().join(f)).unwrap();
        assert!(a == b, "{f} differs");
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(to.path().join("snapshot/disk.img")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(m.blocks() * 512 < (16 << 20), "the copy is not sparse");
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_corrupted_chunk_is_refused() {
    let src = source();
    let mut items = chunks(src.path()).await;
    for i in items.iter_mut() {
        if let Ok(TransferChunk {
            part: Some(Part::Data(d)),
        }) = i
        {
            if d.offset == 5 << 20 {
                d.bytes[100] ^= 1;
            }
        }
    }
    let (_to, got) = land(items).await;
    assert!(
        matches!(&got, Err(AgentError::TransferCorrupt { path }) if path == "snapshot/disk.img"),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_cut_stream_is_refused() {
    let src = source();
    let mut items = chunks(src.path()).await;
    items.truncate(items.len() - 2);
    let (_to, got) = land(items.clone()).await;
    assert!(matches!(got, Err(AgentError::TransferCut(_))), "{got:?}");
    items.push(Err(tonic::Status::unavailable("connection reset")));
    let (_to, got) = land(items).await;
    assert!(
        matches!(&got, Err(AgentError::TransferCut(m)) if m.contains("connection reset")),
        "{got:?}"
    );
}

#[tokio::test]
async fn chunks_out_of_place_and_strange_file_lists_are_refused() {
    let src = source();
    let items = chunks(src.path()).await;
    // A chunk past its file's end.
    let mut past = items.clone();
    if let Some(Ok(TransferChunk {
        part: Some(Part::Data(d)),
    })) = past.get_mut(1)
    {
        d.offset = 1 << 40;
    }
    let (_to, got) = land(past).await;
    assert!(matches!(got, Err(AgentError::BadTransfer(_))), "{got:?}");
    // A header naming a path outside the list.
    let mut odd = items.clone();
    if let Some(Ok(TransferChunk {
        part: Some(Part::Header(h)),
    })) = odd.get_mut(0)
    {
        h.files[1].path = "../../etc/passwd".into();
    }
    let (to, got) = land(odd).await;
    assert!(matches!(got, Err(AgentError::BadTransfer(_))), "{got:?}");
    assert_eq!(std::fs::read_dir(to.path()).unwrap().count(), 0);
    // A capsule stream where a template is expected.
    let mut s = tokio_stream::iter(items);
    let got = header(&mut s, TransferKind::Capsule).await;
    assert!(matches!(got, Err(AgentError::BadTransfer(_))), "{got:?}");
}
