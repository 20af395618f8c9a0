//! Transfers between two hosts (two `Manager`s in one process, each with its own data folder,
//! images folder and slots 3400–3409 / 3410–3419): a snapshot template made on A runs on B
//! with its files and processes; a paused capsule moved from A to B resumes with its files and
//! processes; a corrupted or cut stream leaves nothing on B. Needs root, QEMU and the
//! `minimal` image; run under the VM lock.

use std::{path::PathBuf, sync::Arc};

use futures_util::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_agent::{
    capsule::CreateSpec,
    envd_client::ExecRequest,
    manager::{AgentConfig, Imported, Manager},
    netslot,
    templates::TemplateKind,
    AgentError,
};
use wrenn_proto::agent::v1::{transfer_chunk::Part, TransferChunk};
use wrenn_types::CapsuleStatus;

fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        cmd: "/bin/bash".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

async fn host(
    data: &std::path::Path,
    images: PathBuf,
    slots: std::ops::RangeInclusive<u32>,
) -> Arc<Manager> {
    Arc::new(
        Manager::start(AgentConfig {
            data_dir: data.to_path_buf(),
            images_dir: images,
            qemu: wrenn_vmm::qemu::default_qemu(),
            max_capsules: 4,
            slots,
            shapes: Default::default(),
            dns_upstreams: Vec::new(),
            egress_allow_private: Vec::new(),
            envd: None,
            vmm: Default::default(),
        })
        .await
        .unwrap(),
    )
}

async fn out(m: &Manager, id: &str, script: &str) -> String {
    let o = m.exec(id, sh(script)).await.unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Writes a file and starts a background process that outlives the exec.
async fn leave_traces(m: &Manager, id: &str) {
    out(m, id, "echo travelled > /home/user/trace").await;
    out(
        m,
        id,
        "setsid sleep 4242 </dev/null >/dev/null 2>&1 & echo started",
    )
    .await;
}

async fn traces_are_there(m: &Manager, id: &str) {
    assert_eq!(out(m, id, "cat /home/user/trace").await, "travelled");
    assert_eq!(
        out(m, id, "pgrep -x sleep -a | grep -c 4242").await,
        "1",
        "the background process is gone"
    );
}

type Item = Result<TransferChunk, tonic::Status>;

async fn collect(rx: wrenn_agent::manager::Chunks) -> Vec<Item> {
    ReceiverStream::new(rx).collect().await
}

fn corrupt_one(items: &mut [Item]) {
    let d = items
        .iter_mut()
        .rev()
        .find_map(|i| match i {
            Ok(TransferChunk {
                part: Some(Part::Data(d)),
            }) if d.bytes.len() > 10 => Some(d),
            _ => None,
        })
        .expect("a data chunk");
    d.bytes[7] ^= 0x55;
}

fn hidden_left(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn templates_and_paused_capsules_travel_between_hosts() {
    let data_a = tempfile::tempdir_in("/var/tmp").unwrap();
    let data_b = tempfile::tempdir_in("/var/tmp").unwrap();
    let images_b = data_b.path().join("images");
    std::fs::create_dir(&images_b).unwrap();
    let a = host(data_a.path(), images_dir(), 3400..=3409).await;
    let b = host(data_b.path(), images_b.clone(), 3410..=3419).await;

    // A snapshot template made on A, imported on B, runs there with A's files and processes.
    let src = a
        .create(CreateSpec {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .expect("create on A");
    leave_traces(&a, &src.id).await;
    let name = format!("xfer-{}", std::process::id());
    let made = a
        .snapshot(&src.id, &name, false, None)
        .await
        .expect("snapshot");
    let items = collect(a.export_template(&name).unwrap()).await;
    let sent: usize = items
        .iter()
        .filter_map(|i| match &i.as_ref().unwrap().part {
            Some(Part::Data(d)) => Some(d.bytes.len()),
            _ => None,
        })
        .sum();
    println!(
        "FIGURE template data sent: {} MiB (size on A {} MiB)",
        sent >> 20,
        made.size_bytes >> 20
    );

    // A corrupted chunk, then a cut stream: refused, and nothing is left on B.
    let mut bad = items.clone();
    corrupt_one(&mut bad);
    let got = b.import_template(tokio_stream::iter(bad)).await;
    assert!(
        matches!(got, Err(AgentError::TransferCorrupt { .. })),
        "{got:?}"
    );
    let mut cut = items.clone();
    cut.truncate(cut.len() / 2);
    let got = b.import_template(tokio_stream::iter(cut)).await;
    assert!(matches!(got, Err(AgentError::TransferCut(_))), "{got:?}");
    assert!(b.templates().is_empty(), "a broken import left a template");
    assert!(
        hidden_left(&images_b).is_empty(),
        "{:?}",
        hidden_left(&images_b)
    );

    let got = b
        .import_template(tokio_stream::iter(items.clone()))
        .await
        .expect("import on B");
    let Imported::New(info, bytes) = got else {
        panic!("a first import is new: {got:?}")
    };
    assert_eq!(bytes as usize, sent);
    assert_eq!(info.kind, TemplateKind::Snapshot);
    assert_eq!((info.vcpus, info.memory_mib), (made.vcpus, made.memory_mib));
    // Disk accounting: holes stay holes (A's size counts the same files).
    assert!(
        info.size_bytes <= made.size_bytes + (16 << 20),
        "B holds {} bytes for A's {}",
        info.size_bytes,
        made.size_bytes
    );
    let again = b.import_template(tokio_stream::iter(items)).await.unwrap();
    assert!(matches!(again, Imported::AlreadyPresent(_)), "{again:?}");

    let copy = b
        .create(CreateSpec {
            template: name.clone(),
            kind: TemplateKind::Snapshot,
            ..Default::default()
        })
        .await
        .expect("create from the imported template on B");
    traces_are_there(&b, &copy.id).await;
    b.destroy(&copy.id).await.unwrap();

    // A paused capsule moves from A to B: a broken stream first leaves nothing.
    let moving = a
        .create(CreateSpec {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .expect("create on A");
    leave_traces(&a, &moving.id).await;
    let running = a.export_capsule(&moving.id).await;
    assert!(
        matches!(running, Err(AgentError::NotPaused { .. })),
        "a running capsule was exported"
    );
    a.pause(&moving.id).await.unwrap();
    let items = collect(a.export_capsule(&moving.id).await.unwrap()).await;
    let mut bad = items.clone();
    corrupt_one(&mut bad);
    let got = b.import_capsule(tokio_stream::iter(bad)).await;
    assert!(
        matches!(got, Err(AgentError::TransferCorrupt { .. })),
        "{got:?}"
    );
    let capsules_b = data_b.path().join("capsules");
    assert_eq!(std::fs::read_dir(&capsules_b).unwrap().count(), 0);
    assert!(b.list().is_empty());

    // B's memory budget has room for one capsule, which a kept VMM holds: the import ends it.
    let each =
        u64::from(moving.memory_mib.max(src.memory_mib)) + wrenn_agent::capsule::VMM_OVERHEAD_MIB;
    b.set_keep_paused(1).await;
    b.set_capsule_memory_mib(each + each / 2).await;
    let held = b
        .create(CreateSpec {
            template: name.clone(),
            kind: TemplateKind::Snapshot,
            ..Default::default()
        })
        .await
        .expect("create on B");
    b.pause(&held.id).await.unwrap();
    assert_eq!(b.kept_count(), 1);
    let landed = b
        .import_capsule(tokio_stream::iter(items.clone()))
        .await
        .expect("import the capsule on B");
    assert_eq!(landed.id, moving.id);
    assert_eq!(landed.state, CapsuleStatus::Paused);
    assert_eq!(b.kept_count(), 0, "the import ended the kept VMM");
    b.destroy(&held.id).await.unwrap();
    b.set_capsule_memory_mib(0).await;
    b.set_keep_paused(0).await;
    assert!((3410..=3419).contains(&landed.slot));
    let twice = b.import_capsule(tokio_stream::iter(items)).await;
    assert!(
        matches!(twice, Err(AgentError::CapsuleExists { .. })),
        "{twice:?}"
    );
    a.destroy(&moving.id).await.unwrap();
    let resumed = b.resume(&moving.id).await.expect("resume on B");
    assert_eq!(resumed.state, CapsuleStatus::Running);
    traces_are_there(&b, &moving.id).await;
    // It pauses and resumes again on its new host.
    b.pause(&moving.id).await.unwrap();
    b.resume(&moving.id).await.unwrap();
    assert_eq!(
        out(&b, &moving.id, "cat /home/user/trace").await,
        "travelled"
    );
    b.destroy(&moving.id).await.unwrap();

    // Cleanup: both hosts hold nothing of this test.
    a.destroy(&src.id).await.unwrap();
    a.delete_template(&name).unwrap();
    b.delete_template(&name).unwrap();
    assert!(b.list().is_empty() && a.list().is_empty());
    assert_eq!(std::fs::read_dir(&capsules_b).unwrap().count(), 0);
    let slots: Vec<u32> = netslot::existing_slots()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| (3400..=3419).contains(n))
        .collect();
    assert!(slots.is_empty(), "network slots left: {slots:?}");
    assert!(wrenn_vmm::qemu::processes_under(data_b.path()).is_empty());
}
