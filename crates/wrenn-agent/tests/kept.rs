//! Paused capsules that keep their stopped VMM (`Manager::set_keep_paused`): a resume runs the
//! same QEMU on; the oldest beyond the limit, a VMM that dies, a snapshot, an export, the
//! host's shutdown and a destroy end one, and the capsule resumes from its files (a new
//! agent's start after a crash: `crates/wrenn/tests/recovery.rs`); kept VMMs count in the
//! memory budget and give their memory up to work.
//! Needs root, nftables, QEMU and `make images`.

use std::{collections::HashMap, path::Path, path::PathBuf};

use wrenn_agent::{
    capsule::CreateSpec,
    envd_client::ExecRequest,
    manager::{AgentConfig, Manager},
};
use wrenn_types::CapsuleStatus;

fn config(data: &Path) -> AgentConfig {
    AgentConfig {
        data_dir: data.to_path_buf(),
        images_dir: std::env::var_os("WRENN_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images")),
        qemu: wrenn_vmm::qemu::default_qemu(),
        max_capsules: 3,
        slots: 7400..=7409,
        shapes: Default::default(),
        dns_upstreams: Vec::new(),
        egress_allow_private: Vec::new(),
        envd: None,
        vmm: Default::default(),
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        cmd: "/bin/bash".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

async fn out(mgr: &Manager, id: &str, script: &str) -> String {
    let o = mgr.exec(id, sh(script)).await.unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The pids of the QEMUs of capsule `id`.
fn qemus(data: &Path, id: &str) -> Vec<u32> {
    wrenn_vmm::qemu::processes_under(&data.join("capsules").join(id))
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// A folder removed when this drops.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An agent on slots of the test's own (the tests of this file run side by side).
async fn agent_on(data: &Path, slots: std::ops::RangeInclusive<u32>) -> std::sync::Arc<Manager> {
    let config = AgentConfig {
        slots,
        ..config(data)
    };
    std::sync::Arc::new(Manager::start(config).await.unwrap())
}

async fn create(mgr: &std::sync::Arc<Manager>) -> String {
    mgr.create(CreateSpec {
        template: "minimal".into(),
        metadata: HashMap::new(),
        ..Default::default()
    })
    .await
    .expect("create")
    .id
}

#[tokio::test]
async fn a_kept_vmm_resumes_in_place_and_every_end_of_it_leaves_the_capsule_resumable() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let d = data.path();
    let mgr = std::sync::Arc::new(Manager::start(config(d)).await.unwrap());
    mgr.set_keep_paused(1).await;
    let a = create(&mgr).await;
    let b = create(&mgr).await;
    out(&mgr, &a, "echo a > /dev/shm/m; (sleep 100000 &)").await;
    out(&mgr, &b, "echo b > /dev/shm/m").await;

    // Kept: the same QEMU, stopped, and not in the record (a new agent would not adopt it).
    let before = qemus(d, &a);
    assert_eq!(before.len(), 1);
    let paused = mgr.pause(&a).await.unwrap();
    assert_eq!(paused.state, CapsuleStatus::Paused);
    assert_eq!(paused.vmm_pid, None);
    assert_eq!(qemus(d, &a), before, "kept while paused");
    assert_eq!(mgr.kept_count(), 1);
    let resumed = mgr.resume(&a).await.unwrap();
    assert_eq!(resumed.state, CapsuleStatus::Running);
    assert_eq!(resumed.vmm_pid, before.first().copied());
    assert_eq!(qemus(d, &a), before, "resumed in the same QEMU");
    assert_eq!(mgr.kept_count(), 0);
    assert_eq!(
        out(
            &mgr,
            &a,
            "cat /dev/shm/m; pgrep -x sleep >/dev/null && echo sleeping"
        )
        .await,
        "a\nsleeping\n"
    );

    // The oldest pause goes beyond the limit (1): a's VMM ends, b's is kept.
    mgr.pause(&a).await.unwrap();
    mgr.pause(&b).await.unwrap();
    assert!(qemus(d, &a).is_empty(), "released");
    assert_eq!(qemus(d, &b).len(), 1);
    assert_eq!(mgr.kept_count(), 1);
    // a resumes from its files.
    mgr.resume(&a).await.unwrap();
    assert_eq!(out(&mgr, &a, "cat /dev/shm/m").await, "a\n");

    // A kept VMM killed from outside: the capsule stays paused and resumes from its files.
    let pid = qemus(d, &b)[0];
    // SAFETY: plain kill(2) of this test's own QEMU.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    for _ in 0..100 {
        if qemus(d, &b).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(mgr.get(&b).unwrap().state, CapsuleStatus::Paused);
    mgr.resume(&b).await.unwrap();
    assert_eq!(out(&mgr, &b, "cat /dev/shm/m").await, "b\n");
    assert_ne!(qemus(d, &b), vec![pid]);

    // A snapshot of a kept capsule is made from its files: the VMM ends first.
    mgr.pause(&b).await.unwrap();
    assert_eq!(qemus(d, &b).len(), 1);
    let snap = format!("kept-test-{}", std::process::id());
    // Removed from the shared images folder even if the test fails after this.
    let _gone = RemovedOnDrop(config(d).images_dir.join(&snap));
    mgr.snapshot(&b, &snap, false, None).await.unwrap();
    assert!(qemus(d, &b).is_empty());
    assert_eq!(mgr.kept_count(), 0);
    mgr.resume(&b).await.unwrap();
    assert_eq!(out(&mgr, &b, "cat /dev/shm/m").await, "b\n");

    // An export (a move) changes its files: the VMM ends first; it still resumes here.
    mgr.pause(&b).await.unwrap();
    assert_eq!(qemus(d, &b).len(), 1);
    drop(mgr.export_capsule(&b).await.unwrap());
    assert!(qemus(d, &b).is_empty());
    assert_eq!(mgr.kept_count(), 0);
    mgr.resume(&b).await.unwrap();
    assert_eq!(out(&mgr, &b, "cat /dev/shm/m").await, "b\n");

    // Turning it off releases what is kept.
    mgr.pause(&b).await.unwrap();
    mgr.set_keep_paused(0).await;
    assert!(qemus(d, &b).is_empty());
    mgr.set_keep_paused(1).await;

    // The host's shutdown: running ones paused, kept ones ended: no QEMU left.
    mgr.resume(&b).await.unwrap();
    mgr.pause(&b).await.unwrap();
    assert_eq!(qemus(d, &b).len(), 1);
    assert_eq!(mgr.pause_all().await, 1);
    assert!(wrenn_vmm::qemu::processes_under(d).is_empty());

    // Destroying a kept capsule ends its VMM with it.
    mgr.resume(&a).await.unwrap();
    mgr.pause(&a).await.unwrap();
    assert_eq!(qemus(d, &a).len(), 1);
    mgr.destroy(&a).await.unwrap();
    mgr.destroy(&b).await.unwrap();
    assert_eq!(mgr.kept_count(), 0);
    mgr.delete_template(&snap).unwrap();
    assert!(wrenn_vmm::qemu::processes_under(d).is_empty());
}

/// A kept VMM counts in the host's memory budget like a running capsule and gives its memory
/// up when work needs it: a create, a resume or a fork that does not fit otherwise ends the
/// oldest kept VMM (its capsule resumes from its files), a resume beyond the budget even
/// without them is refused with the capsule left paused, and lowering the budget ends kept
/// VMMs at once.
#[tokio::test]
async fn kept_vmms_give_their_memory_up_to_work() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let mgr = agent_on(data.path(), 7450..=7459).await;
    mgr.set_keep_paused(2).await;
    let a = create(&mgr).await;
    let memory = u64::from(mgr.get(&a).unwrap().memory_mib);
    let each = memory + wrenn_agent::capsule::VMM_OVERHEAD_MIB;
    // Room for two capsules, not three.
    mgr.set_capsule_memory_mib(2 * each + each / 2).await;
    let b = create(&mgr).await;
    out(&mgr, &a, "echo before > /tmp/mark").await;
    mgr.pause(&a).await.unwrap();
    assert_eq!(mgr.kept_count(), 1);
    assert_eq!(qemus(data.path(), &a).len(), 1, "kept");

    // Two running capsules' worth is committed (b, and a's kept VMM): c needs a's room.
    let c = create(&mgr).await;
    assert_eq!(mgr.kept_count(), 0);
    assert!(qemus(data.path(), &a).is_empty(), "a's kept VMM ended");
    assert_eq!(mgr.get(&a).unwrap().state, CapsuleStatus::Paused);

    let refused = mgr.resume(&a).await.unwrap_err();
    assert!(
        matches!(refused, wrenn_agent::AgentError::MemoryFull { .. }),
        "{refused}"
    );
    assert_eq!(mgr.get(&a).unwrap().state, CapsuleStatus::Paused);
    // A resume that needs a kept VMM's room ends it: c keeps its VMM at its pause, and a's
    // resume takes its place.
    mgr.pause(&c).await.unwrap();
    assert_eq!(mgr.kept_count(), 1);
    mgr.resume(&a).await.unwrap();
    assert_eq!(mgr.kept_count(), 0);
    assert!(qemus(data.path(), &c).is_empty(), "c's kept VMM ended");
    assert_eq!(out(&mgr, &a, "cat /tmp/mark").await.trim(), "before");
    mgr.destroy(&c).await.unwrap();

    // So does a fork: b's kept VMM makes way for a's child.
    mgr.pause(&b).await.unwrap();
    assert_eq!(mgr.kept_count(), 1);
    let child = mgr.fork(&a, 1).await.unwrap().children[0].id.clone();
    assert_eq!(mgr.kept_count(), 0);
    assert!(qemus(data.path(), &b).is_empty(), "b's kept VMM ended");
    assert_eq!(out(&mgr, &child, "cat /tmp/mark").await.trim(), "before");
    mgr.destroy(&child).await.unwrap();

    // A lower budget ends what it no longer has room for.
    mgr.resume(&b).await.unwrap();
    mgr.pause(&b).await.unwrap();
    assert_eq!(mgr.kept_count(), 1);
    mgr.set_capsule_memory_mib(each).await;
    assert_eq!(mgr.kept_count(), 0);
    assert!(qemus(data.path(), &b).is_empty(), "b's kept VMM ended");
    for id in [a, b] {
        mgr.destroy(&id).await.unwrap();
    }
    assert!(wrenn_vmm::qemu::processes_under(data.path()).is_empty());
}

/// The reaper ends a VMM kept longer than the host allows (`--keep-paused-secs`), within a
/// second or two of its time; the capsule stays paused and resumes from its files.
#[tokio::test]
async fn the_reaper_ends_a_vmm_kept_too_long() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let mgr = agent_on(data.path(), 7470..=7479).await;
    mgr.spawn_reaper();
    mgr.set_keep_paused(1).await;
    mgr.set_keep_paused_for(std::time::Duration::from_secs(3));
    let a = create(&mgr).await;
    out(&mgr, &a, "echo kept > /tmp/mark").await;
    mgr.pause(&a).await.unwrap();
    let paused_at = std::time::Instant::now();
    assert_eq!(qemus(data.path(), &a).len(), 1, "kept");
    while mgr.kept_count() == 1 && paused_at.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ended = paused_at.elapsed();
    assert_eq!(mgr.kept_count(), 0, "still kept after {ended:?}");
    assert!(
        ended >= std::time::Duration::from_secs(3),
        "ended after {ended:?}"
    );
    assert!(qemus(data.path(), &a).is_empty());
    assert_eq!(mgr.get(&a).unwrap().state, CapsuleStatus::Paused);
    mgr.resume(&a).await.unwrap();
    assert_eq!(out(&mgr, &a, "cat /tmp/mark").await.trim(), "kept");
    mgr.destroy(&a).await.unwrap();
    assert!(wrenn_vmm::qemu::processes_under(data.path()).is_empty());
}
