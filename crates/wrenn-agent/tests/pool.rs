//! The warm pool through the manager: machines made ahead after a shape is used, a create
//! served by one (and its own egress applied), the pool refilled, drained at shutdown, off
//! by default; a pool an agent left behind (crash) is swept by the next start.
//! Needs root, nftables, QEMU and `make images`. Slots 4300–4339 and 7460–7469, folders
//! /var/tmp/fast-pool-*.

mod support;

use std::{path::Path, time::Duration};

use support::{config, data_dir, manager, sh, slots_in, wait_for};
use wrenn_agent::manager::Manager;

fn spec() -> wrenn_agent::capsule::CreateSpec {
    support::spec("minimal")
}

/// Capsule folders without a record: warm machines.
fn warm_dirs(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("capsules"))
        .unwrap()
        .flatten()
        .filter(|e| !e.path().join("capsule.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn warm_pool_fills_serves_creates_and_drains() {
    let data = data_dir("fast-pool-serve");
    let range = 4300..=4319;
    let mgr = manager(data.path(), range.clone(), 4).await;
    mgr.spawn_pool_filler();
    mgr.set_pool_size(2).await;
    // Nothing is made ahead before a shape is used.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mgr.pool_count(), 0);
    let a = mgr.create(spec()).await.unwrap();
    wait_for("two warm machines", || mgr.pool_count() == 2).await;
    let warm = warm_dirs(data.path());
    assert_eq!(warm.len(), 2, "{warm:?}");
    assert_eq!(
        wrenn_vmm::qemu::processes_under(data.path()).len(),
        3,
        "one capsule and two waiting QEMUs"
    );
    // The next create is one of them (its guest ran up to envd in the pool), with its own
    // (egress off) network, environment, clock and envd token, and set up as any capsule.
    let mut with_env = spec();
    with_env.env_vars.insert("POOLED".into(), "yes".into());
    let b = mgr.create(with_env).await.unwrap();
    assert!(warm.contains(&b.id), "{} not in {warm:?}", b.id);
    let out = mgr
        .exec(
            &b.id,
            sh("echo $POOLED; grep -c ' / .*discard' /proc/mounts; cat /etc/resolv.conf; date +%s"),
        )
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["yes", "1", "nameserver 169.254.0.22"], "{out}");
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let guest: i64 = lines[3].parse().unwrap();
    assert!(
        (guest - host).abs() <= 3,
        "guest clock {guest} vs host {host}"
    );
    assert!(!mgr.get(&b.id).unwrap().egress);
    assert_eq!(
        support::envd_status_without_token(&mgr, &b.id).await,
        401,
        "envd wants the capsule's token"
    );
    // Pause and resume work on it like on any capsule.
    mgr.exec(&b.id, sh("echo kept > /home/user/k && sync"))
        .await
        .unwrap();
    mgr.pause(&b.id).await.unwrap();
    mgr.resume(&b.id).await.unwrap();
    let out = mgr.exec(&b.id, sh("cat /home/user/k")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    // Refilled.
    wait_for("the pool refilled", || mgr.pool_count() == 2).await;
    // Ready machines whose QEMU died are never handed out: the create is made cold.
    let dead = warm_dirs(data.path());
    for id in &dead {
        for (pid, _) in wrenn_vmm::qemu::processes_under(&data.path().join("capsules").join(id)) {
            // SAFETY: plain kill(2) of this test's own QEMU.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = mgr.create(spec()).await.unwrap();
    assert!(!dead.contains(&c.id), "{} was a dead machine", c.id);
    let out = mgr.exec(&c.id, sh("echo cold")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cold\n");
    mgr.destroy(&c.id).await.unwrap();
    wait_for("the pool refilled", || mgr.pool_count() == 2).await;
    mgr.destroy(&a.id).await.unwrap();
    mgr.destroy(&b.id).await.unwrap();
    // A shutdown drains it: nothing left.
    mgr.pause_all().await;
    assert_eq!(mgr.pool_count(), 0);
    assert!(wrenn_vmm::qemu::processes_under(data.path()).is_empty());
    assert!(warm_dirs(data.path()).is_empty());
    assert!(slots_in(&range).await.is_empty(), "slots left");
}

#[tokio::test]
async fn pool_off_makes_nothing_ahead() {
    let data = data_dir("fast-pool-off");
    let range = 4320..=4329;
    let mgr = manager(data.path(), range.clone(), 4).await;
    mgr.spawn_pool_filler();
    let a = mgr.create(spec()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mgr.pool_count(), 0);
    assert_eq!(wrenn_vmm::qemu::processes_under(data.path()).len(), 1);
    assert!(warm_dirs(data.path()).is_empty());
    mgr.destroy(&a.id).await.unwrap();
    assert!(slots_in(&range).await.is_empty());
}

/// An agent that dies with warm machines leaves QEMUs, folders and slots that no record
/// owns: the next start removes them all.
#[tokio::test]
async fn a_pool_left_by_a_dead_agent_is_swept_at_start() {
    let data = data_dir("fast-pool-crash");
    let range = 4330..=4339;
    let first = manager(data.path(), range.clone(), 4).await;
    first.spawn_pool_filler();
    first.set_pool_size(1).await;
    let a = first.create(spec()).await.unwrap();
    wait_for("a warm machine", || first.pool_count() == 1).await;
    first.destroy(&a.id).await.unwrap();
    assert_eq!(wrenn_vmm::qemu::processes_under(data.path()).len(), 1);
    // The agent "dies": nothing of it runs its cleanup.
    std::mem::forget(first);
    let second = Manager::start(config(data.path(), range.clone(), 4))
        .await
        .unwrap();
    assert!(second.list().is_empty());
    wait_for("the stray QEMU gone", || {
        wrenn_vmm::qemu::processes_under(data.path()).is_empty()
    })
    .await;
    assert!(warm_dirs(data.path()).is_empty());
    assert!(slots_in(&range).await.is_empty(), "slots left");
}

/// Warm machines count in the host's memory budget like capsules: the pool fills only into
/// what is free, a create takes its machine out of the pool before it counts (never counted
/// twice), and a lower budget ends machines at once. Slots 7460–7469.
#[tokio::test]
async fn the_pool_fills_only_into_free_memory() {
    let data = data_dir("fast-pool-memory");
    let range = 7460..=7469;
    let mgr = manager(data.path(), range.clone(), 4).await;
    mgr.spawn_pool_filler();
    let a = mgr.create(spec()).await.unwrap();
    let each = u64::from(a.memory_mib) + wrenn_agent::capsule::VMM_OVERHEAD_MIB;
    // Room for two: `a` and one machine.
    mgr.set_capsule_memory_mib(2 * each + each / 2).await;
    mgr.set_pool_size(2).await;
    wait_for("a warm machine", || mgr.pool_count() == 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mgr.pool_count(), 1, "no room for a second");
    let warm = warm_dirs(data.path());
    let b = mgr.create(spec()).await.unwrap();
    assert!(warm.contains(&b.id), "{} not in {warm:?}", b.id);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mgr.pool_count(), 0, "a and b use the budget");
    mgr.destroy(&b.id).await.unwrap();
    wait_for("the pool refilled", || mgr.pool_count() == 1).await;
    mgr.set_capsule_memory_mib(each).await;
    assert_eq!(mgr.pool_count(), 0, "a lower budget ends it");
    assert_eq!(wrenn_vmm::qemu::processes_under(data.path()).len(), 1);
    mgr.destroy(&a.id).await.unwrap();
    mgr.pause_all().await;
    assert!(wrenn_vmm::qemu::processes_under(data.path()).is_empty());
    assert!(warm_dirs(data.path()).is_empty());
    assert!(slots_in(&range).await.is_empty(), "slots left");
}
