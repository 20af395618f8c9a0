//! Live fork through the manager, on real microVMs: children continue the source's running
//! processes and files (and only what was there at the fork), each on its own; children of
//! children; a paused source; a fork that does not fit leaves nothing; destroying the source
//! leaves its children running, and fork images go once nothing uses them.
//! Needs root, nftables, QEMU and the `python` image. Slots 4340–4399, folders
//! /var/tmp/fork-*.

mod support;

use std::time::Duration;

use support::{data_dir, entries, manager, sh, slots_in};
use wrenn_agent::{manager::Manager, AgentError};

fn spec() -> wrenn_agent::capsule::CreateSpec {
    support::spec("python")
}

async fn run(mgr: &Manager, id: &str, script: &str) -> String {
    let out = mgr.exec(id, sh(script)).await.unwrap();
    assert_eq!(
        out.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A Python process holding a counter in memory: every 50 ms it adds one and writes it to
/// /tmp/count; SIGUSR1 adds a million.
const COUNTER: &str = r#"cat > /tmp/counter.py <<'EOF'
import os, signal, time
open('/tmp/counter.pid', 'w').write(str(os.getpid()))
n = 0
def bump(*_):
    global n
    n += 1000000
signal.signal(signal.SIGUSR1, bump)
while True:
    n += 1
    with open('/tmp/count.new', 'w') as f:
        f.write(str(n))
    os.replace('/tmp/count.new', '/tmp/count')
    time.sleep(0.05)
EOF
setsid nohup python3 /tmp/counter.py </dev/null >/dev/null 2>&1 &
for i in $(seq 100); do [ -s /tmp/count ] && break; sleep 0.1; done
cat /tmp/count"#;

async fn count(mgr: &Manager, id: &str) -> u64 {
    run(mgr, id, "cat /tmp/count").await.parse().unwrap()
}

/// Waits until the counter of capsule `id` has gone past `than`, and returns it.
async fn counts_past(mgr: &Manager, id: &str, than: u64) -> u64 {
    for _ in 0..200 {
        let n = count(mgr, id).await;
        if n > than {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the counter of {id} stays at {than}");
}

#[tokio::test]
async fn children_continue_the_source_and_each_other_never() {
    let data = data_dir("fork-live");
    let range = 4340..=4359;
    let mgr = manager(data.path(), range.clone(), 6).await;
    let src = mgr.create(spec()).await.unwrap();
    run(&mgr, &src.id, "echo before > /home/user/before.txt").await;
    let started: u64 = run(&mgr, &src.id, COUNTER).await.parse().unwrap();
    let at_fork = counts_past(&mgr, &src.id, started).await;

    let forked = mgr.fork(&src.id, 2).await.unwrap();
    println!(
        "FIGURE fork 2 children: source paused {:?}",
        forked.source_paused_for
    );
    assert_eq!(forked.children.len(), 2);
    assert!(forked.source_paused_for > Duration::ZERO);
    run(&mgr, &src.id, "echo after > /home/user/after.txt").await;
    let ids: Vec<String> = forked.children.iter().map(|c| c.id.clone()).collect();
    for c in &forked.children {
        assert_ne!(c.id, src.id);
        assert_ne!(c.slot, src.slot);
        assert_ne!(
            c.access_token, src.access_token,
            "each child has its own token"
        );
        assert_eq!(c.template, "python");
        // The source's process goes on counting in the child, from where it was.
        let n = count(&mgr, &c.id).await;
        assert!(
            n >= at_fork,
            "{} counted {n}, the source had {at_fork}",
            c.id
        );
        counts_past(&mgr, &c.id, n).await;
        assert_eq!(
            run(&mgr, &c.id, "cat /home/user/before.txt").await,
            "before"
        );
        // The guest set-up of the source's create (not redone for a child) is there.
        let setup = run(
            &mgr,
            &c.id,
            "grep -c ' / .*discard' /proc/mounts; grep -c '^nameserver' /etc/resolv.conf",
        )
        .await;
        assert_eq!(setup, "1\n1", "{}: root with discard, a name server", c.id);
        assert_eq!(
            run(
                &mgr,
                &c.id,
                "test -e /home/user/after.txt && echo there || echo absent"
            )
            .await,
            "absent"
        );
    }
    assert_ne!(forked.children[0].slot, forked.children[1].slot);
    // Independent: a bump in one child is in no other capsule.
    run(&mgr, &ids[0], "kill -USR1 $(cat /tmp/counter.pid)").await;
    let bumped = counts_past(&mgr, &ids[0], 1_000_000).await;
    assert!(bumped > 1_000_000);
    assert!(count(&mgr, &ids[1]).await < 1_000_000);
    assert!(count(&mgr, &src.id).await < 1_000_000);
    // Files too.
    run(&mgr, &ids[1], "echo mine > /home/user/child.txt").await;
    for other in [&src.id, &ids[0]] {
        assert_eq!(
            run(
                &mgr,
                other,
                "cat /home/user/child.txt 2>/dev/null || echo absent"
            )
            .await,
            "absent"
        );
    }
    // The source runs on.
    counts_past(&mgr, &src.id, count(&mgr, &src.id).await).await;

    // Children of children: a grandchild of child 1 continues child 1 (with its file).
    let grand = mgr.fork(&ids[1], 1).await.unwrap().children.remove(0);
    assert_eq!(
        run(&mgr, &grand.id, "cat /home/user/child.txt").await,
        "mine"
    );
    counts_past(&mgr, &grand.id, count(&mgr, &grand.id).await).await;
    assert_eq!(entries(&data.path().join("forks")).len(), 2);

    // Destroying the source and child 1 leaves the grandchild and child 0 running.
    mgr.destroy(&src.id).await.unwrap();
    mgr.destroy(&ids[1]).await.unwrap();
    for id in [&ids[0], &grand.id] {
        counts_past(&mgr, id, count(&mgr, id).await).await;
        assert_eq!(run(&mgr, id, "cat /home/user/before.txt").await, "before");
    }
    // Their disks survive a pause and resume (the fork images' backing files are kept).
    mgr.pause(&grand.id).await.unwrap();
    mgr.resume(&grand.id).await.unwrap();
    assert_eq!(
        run(&mgr, &grand.id, "cat /home/user/child.txt").await,
        "mine"
    );
    assert_eq!(
        entries(&data.path().join("forks")).len(),
        2,
        "both images still used"
    );
    mgr.destroy(&ids[0]).await.unwrap();
    assert_eq!(
        entries(&data.path().join("forks")).len(),
        2,
        "the grandchild's image backs on the first one"
    );
    mgr.destroy(&grand.id).await.unwrap();
    assert!(entries(&data.path().join("forks")).is_empty());
    assert!(wrenn_vmm::qemu::processes_under(data.path()).is_empty());
    assert!(slots_in(&range).await.is_empty(), "slots left");
}

#[tokio::test]
async fn a_paused_capsule_forks_from_its_saved_state() {
    let data = data_dir("fork-paused");
    let range = 4360..=4369;
    let mgr = manager(data.path(), range.clone(), 4).await;
    let src = mgr.create(spec()).await.unwrap();
    run(&mgr, &src.id, "echo kept > /home/user/kept.txt").await;
    let started: u64 = run(&mgr, &src.id, COUNTER).await.parse().unwrap();
    counts_past(&mgr, &src.id, started).await;
    mgr.pause(&src.id).await.unwrap();
    let forked = mgr.fork(&src.id, 1).await.unwrap();
    assert_eq!(forked.source_paused_for, Duration::ZERO);
    let child = &forked.children[0];
    assert_eq!(
        run(&mgr, &child.id, "cat /home/user/kept.txt").await,
        "kept"
    );
    let n = count(&mgr, &child.id).await;
    counts_past(&mgr, &child.id, n).await;
    // The source is still paused, and resumes as it was.
    assert_eq!(
        mgr.get(&src.id).unwrap().state,
        wrenn_types::CapsuleStatus::Paused
    );
    mgr.resume(&src.id).await.unwrap();
    assert_eq!(run(&mgr, &src.id, "cat /home/user/kept.txt").await, "kept");
    mgr.destroy(&src.id).await.unwrap();
    mgr.destroy(&child.id).await.unwrap();
    assert!(entries(&data.path().join("forks")).is_empty());
    assert!(slots_in(&range).await.is_empty(), "slots left");
}

#[tokio::test]
async fn a_fork_that_does_not_fit_leaves_nothing() {
    let data = data_dir("fork-full");
    let range = 4370..=4379;
    let mgr = manager(data.path(), range.clone(), 3).await;
    let src = mgr.create(spec()).await.unwrap();
    for bad in [0, 33] {
        assert!(
            matches!(
                mgr.fork(&src.id, bad).await,
                Err(AgentError::ForkCount { .. })
            ),
            "count {bad}"
        );
    }
    // Room for two more capsules, not three.
    let err = mgr.fork(&src.id, 3).await.unwrap_err();
    assert!(
        matches!(err, AgentError::CapsuleLimitReached { .. }),
        "{err}"
    );
    assert!(matches!(
        mgr.fork("cl-nosuchcapsule", 1).await,
        Err(AgentError::CapsuleNotFound { .. })
    ));
    // Nothing was made: one capsule, its folder, its slot, its QEMU; no fork image.
    assert_eq!(mgr.list().len(), 1);
    assert_eq!(entries(&data.path().join("capsules")), vec![src.id.clone()]);
    assert!(entries(&data.path().join("forks")).is_empty());
    assert_eq!(slots_in(&range).await, vec![src.slot]);
    assert_eq!(wrenn_vmm::qemu::processes_under(data.path()).len(), 1);
    // And it still forks within the limit.
    let ok = mgr.fork(&src.id, 2).await.unwrap();
    assert_eq!(ok.children.len(), 2);
    for c in ok.children {
        mgr.destroy(&c.id).await.unwrap();
    }
    mgr.destroy(&src.id).await.unwrap();
    assert!(entries(&data.path().join("forks")).is_empty());
    assert!(slots_in(&range).await.is_empty(), "slots left");
}
