//! Capsules through the manager: create from the `minimal` snapshot in a real network slot,
//! exec, pause/resume keeping a file, destroy; bad requests get typed errors; nothing is left.
//! Needs root, nftables, QEMU and `make images`.

mod support;

use std::collections::HashMap;

use support::sh;

use wrenn_agent::{capsule::CreateSpec, netslot, AgentError};
use wrenn_types::CapsuleStatus;

fn spec(env: &[(&str, &str)]) -> CreateSpec {
    CreateSpec {
        template: "minimal".into(),
        env_vars: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        metadata: HashMap::new(),
        egress: false,
        ..Default::default()
    }
}

#[tokio::test]
async fn capsule_lifecycle_through_the_manager() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let mgr = support::manager(data.path(), 200..=299, 3).await;

    let a = mgr
        .create(spec(&[("GREETING", "hello")]))
        .await
        .expect("create");
    assert_eq!(a.state, CapsuleStatus::Running);
    assert!(data
        .path()
        .join("capsules")
        .join(&a.id)
        .join("capsule.json")
        .is_file());
    let out = mgr
        .exec(&a.id, sh("echo $GREETING from $(id -un)"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from user\n");
    let out = mgr.exec(&a.id, sh("echo oops >&2; exit 7")).await.unwrap();
    assert_eq!((out.exit_code, out.stderr.as_slice()), (7, &b"oops\n"[..]));

    // envd now wants the capsule's token.
    assert_eq!(support::envd_status_without_token(&mgr, &a.id).await, 401);
    assert!(!mgr.envd_of(&a.id).unwrap().1.is_empty());

    mgr.exec(&a.id, sh("echo kept > /home/user/f"))
        .await
        .unwrap();
    let paused = mgr.pause(&a.id).await.unwrap();
    assert_eq!(paused.state, CapsuleStatus::Paused);
    assert!(matches!(
        mgr.exec(&a.id, sh("true")).await,
        Err(AgentError::NotRunning { .. })
    ));
    assert!(matches!(
        mgr.pause(&a.id).await,
        Err(AgentError::NotRunning { .. })
    ));
    let resumed = mgr.resume(&a.id).await.unwrap();
    assert_eq!(resumed.state, CapsuleStatus::Running);
    let out = mgr.exec(&a.id, sh("cat /home/user/f")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");

    // Bad requests.
    assert!(matches!(
        mgr.get("cl-nope"),
        Err(AgentError::CapsuleNotFound { .. })
    ));
    assert!(matches!(
        mgr.destroy("cl-nope").await,
        Err(AgentError::CapsuleNotFound { .. })
    ));
    let mut bad = spec(&[]);
    bad.template = "../../etc".into();
    assert!(matches!(
        mgr.create(bad).await,
        Err(AgentError::BadTemplateName(_))
    ));
    let mut missing = spec(&[]);
    missing.template = "no-such-template".into();
    assert!(matches!(
        mgr.create(missing).await,
        Err(AgentError::TemplateNotFound { .. })
    ));
    assert_eq!(mgr.list().len(), 1, "failed creates leave nothing");

    let slot = a.slot;
    mgr.destroy(&a.id).await.unwrap();
    assert!(mgr.list().is_empty());
    assert!(!data.path().join("capsules").join(&a.id).exists());
    assert!(!netslot::existing_slots().await.unwrap().contains(&slot));
}

/// 20 capsules created and destroyed concurrently leave no netns, veth/TAP, nft table,
/// process or file behind.
#[tokio::test]
async fn twenty_concurrent_creates_and_destroys_leave_nothing() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let range = 300..=399;
    let mgr = support::manager(data.path(), range.clone(), 20).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mgr = mgr.clone();
        tasks.push(tokio::spawn(async move {
            let c = mgr.create(spec(&[])).await.expect("create");
            let out = mgr.exec(&c.id, sh(&format!("echo {i}"))).await.unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{i}\n"));
            mgr.destroy(&c.id).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(mgr.list().is_empty());
    let slots: Vec<u32> = netslot::existing_slots()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| range.contains(n))
        .collect();
    assert!(slots.is_empty(), "network slots left: {slots:?}");
    let groups: Vec<String> = wrenn_vmm::cgroup::existing()
        .into_iter()
        .filter(|g| {
            g.strip_prefix("wrenn-")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| range.contains(&n))
        })
        .collect();
    assert!(groups.is_empty(), "VMM cgroups left: {groups:?}");
    assert_eq!(
        wrenn_vmm::qemu::processes_under(data.path()).len(),
        0,
        "QEMU processes left"
    );
    assert_eq!(
        std::fs::read_dir(data.path().join("capsules"))
            .unwrap()
            .count(),
        0,
        "capsule folders left"
    );
}

/// A VMM that dies turns its capsule to `error` with the reason, and its slot and VM are
/// released at once; destroy then removes the folder.
#[tokio::test]
async fn a_dead_vmm_marks_the_capsule_error_and_frees_it() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let mgr = support::manager(data.path(), 700..=799, 1).await;
    let c = mgr.create(spec(&[])).await.unwrap();
    let pid = c.vmm_pid.expect("a running capsule has a VMM");
    // SAFETY: plain kill(2) of the capsule's QEMU, as a crash would.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let mut rec = mgr.get(&c.id).unwrap();
    for _ in 0..50 {
        if rec.state == CapsuleStatus::Error {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        rec = mgr.get(&c.id).unwrap();
    }
    assert_eq!(rec.state, CapsuleStatus::Error);
    assert!(
        rec.error.as_deref().unwrap_or("").contains("exited"),
        "{:?}",
        rec.error
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !netslot::existing_slots().await.unwrap().contains(&c.slot),
        "slot released"
    );
    assert!(matches!(
        mgr.exec(&c.id, sh("true")).await,
        Err(AgentError::NotRunning { .. })
    ));
    mgr.destroy(&c.id).await.unwrap();
    assert!(!data.path().join("capsules").join(&c.id).exists());
    assert_eq!(wrenn_vmm::qemu::processes_under(data.path()).len(), 0);
}

/// A resume that cannot work (its saved state is damaged) leaves the capsule in `error` with
/// its VMM and slot released, never a half-running VM.
#[tokio::test]
async fn a_failed_resume_releases_everything() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let mgr = support::manager(data.path(), 800..=899, 1).await;
    let c = mgr.create(spec(&[])).await.unwrap();
    mgr.pause(&c.id).await.unwrap();
    let dir = data.path().join("capsules").join(&c.id);
    std::fs::write(dir.join("state"), b"damaged").unwrap();
    assert!(mgr.resume(&c.id).await.is_err());
    let rec = mgr.get(&c.id).unwrap();
    assert_eq!(rec.state, CapsuleStatus::Error);
    assert!(
        rec.error
            .as_deref()
            .unwrap_or("")
            .contains("resuming failed"),
        "{:?}",
        rec.error
    );
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&dir).len(),
        0,
        "no QEMU left running"
    );
    assert!(
        !netslot::existing_slots().await.unwrap().contains(&c.slot),
        "slot released"
    );
    assert!(matches!(
        mgr.resume(&c.id).await,
        Err(AgentError::InError { .. })
    ));
    mgr.destroy(&c.id).await.unwrap();
    assert!(!dir.exists());
}

/// A VMM that dies while a shutdown pauses its capsule (the ^C that reaches QEMU too):
/// by the time the shutdown's pause answers, the capsule is `error` and its network slot is
/// gone, since nothing runs after a shutdown to release it later. The QEMU is stopped
/// (SIGSTOP) so the pause is waiting on it when it is killed.
#[tokio::test]
async fn a_vmm_that_dies_during_a_shutdown_pause_leaves_no_slot() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let mgr = support::manager(data.path(), 7410..=7419, 1).await;
    let c = mgr.create(spec(&[])).await.unwrap();
    let pid = c.vmm_pid.expect("a running capsule has a VMM") as i32;
    // SAFETY: plain kill(2) of the capsule's QEMU.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let shutdown = tokio::spawn({
        let mgr = mgr.clone();
        async move { mgr.pause_all().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !shutdown.is_finished(),
        "the pause waits on the stopped VMM"
    );
    // SAFETY: as above; the kill a crash or a signal to its group would be.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(shutdown.await.unwrap(), 0, "nothing was paused");
    let rec = mgr.get(&c.id).unwrap();
    assert_eq!(rec.state, CapsuleStatus::Error, "{:?}", rec.error);
    assert!(!rec.resume_after_restart);
    assert!(
        !netslot::existing_slots().await.unwrap().contains(&c.slot),
        "slot released before the shutdown's pause answered"
    );
    mgr.destroy(&c.id).await.unwrap();
    assert_eq!(wrenn_vmm::qemu::processes_under(data.path()).len(), 0);
}
