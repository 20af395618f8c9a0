//! Creates and forks whose caller goes away: the future dropped at a timeout (through the
//! manager), or the gRPC request cancelled (through the service). Each is cut off at several
//! points of its work (fractions of how long a whole one took just before); every time, what
//! it made ends up recorded (listed, then destroyed like any capsule) and nothing is left
//! that the manager does not list: no QEMU, network slot or capsule folder, and the slots are
//! free again (a range of exactly the slots needed: one leaked slot fails the next create).
//! Needs root, nftables, QEMU and the `minimal` image. Slots 6600–6619, folders
//! /var/tmp/cancel-*.

mod support;

use std::{path::Path, sync::Arc, time::Instant};

use support::{data_dir, entries, manager, slots_in, spec, wait_for};
use wrenn_agent::manager::Manager;
use wrenn_proto::agent::v1::{CapsuleRef, CreateCapsuleRequest, ListCapsulesRequest};

/// Where a cut lands: these fractions of a whole create's (or fork's) time.
const CUTS: [f64; 4] = [0.05, 0.3, 0.6, 0.9];

/// Everything on the host under `data` and in `range` is a capsule `mgr` lists: its folders,
/// its QEMUs (one per running capsule, its recorded pid) and its network slots.
async fn all_recorded(mgr: &Manager, data: &Path, range: &std::ops::RangeInclusive<u32>) {
    let list = mgr.list();
    let mut ids: Vec<String> = list.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    assert_eq!(
        entries(&data.join("capsules")),
        ids,
        "capsule folders vs the list"
    );
    let mut pids: Vec<u32> = wrenn_vmm::qemu::processes_under(data)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    pids.sort();
    let mut listed: Vec<u32> = list.iter().filter_map(|r| r.vmm_pid).collect();
    listed.sort();
    assert_eq!(pids, listed, "QEMU processes vs the list");
    let mut slots: Vec<u32> = list.iter().map(|r| r.slot).collect();
    slots.sort();
    assert_eq!(slots_in(range).await, slots, "network slots vs the list");
}

/// Destroys every listed capsule and checks that nothing is left.
async fn destroy_all(mgr: &Manager, data: &Path, range: &std::ops::RangeInclusive<u32>) {
    for r in mgr.list() {
        mgr.destroy(&r.id).await.unwrap();
    }
    all_recorded(mgr, data, range).await;
    assert!(mgr.list().is_empty());
    assert!(entries(&data.join("forks")).is_empty(), "fork images left");
}

/// Waits until `n` capsules are listed, all running.
async fn running(mgr: &Manager, n: usize) {
    wait_for(&format!("{n} running capsules"), || {
        let l = mgr.list();
        l.len() == n
            && l.iter()
                .all(|r| r.state == wrenn_types::CapsuleStatus::Running)
    })
    .await;
}

#[tokio::test]
async fn a_create_whose_caller_stops_waiting_is_recorded_or_undone() {
    let data = data_dir("cancel-create");
    // One slot: a create that leaked it would leave the next one none.
    let range = 6600..=6600;
    let mgr = manager(data.path(), range.clone(), 2).await;
    let t = Instant::now();
    mgr.create(spec("minimal")).await.unwrap();
    let whole = t.elapsed();
    println!("FIGURE cancel: a whole create took {whole:?}");
    destroy_all(&mgr, data.path(), &range).await;
    for cut in CUTS {
        let after = whole.mul_f64(cut);
        let done = tokio::time::timeout(after, mgr.create(spec("minimal"))).await;
        println!("cut after {after:?}: finished in time: {}", done.is_ok());
        // The create goes on without its caller, to the end: recorded and running.
        running(&mgr, 1).await;
        all_recorded(&mgr, data.path(), &range).await;
        destroy_all(&mgr, data.path(), &range).await;
    }
    // The slot is free: a create after all that succeeds.
    mgr.create(spec("minimal")).await.unwrap();
    destroy_all(&mgr, data.path(), &range).await;
}

#[tokio::test]
async fn a_fork_whose_caller_stops_waiting_is_recorded_or_undone() {
    let data = data_dir("cancel-fork");
    // The source and two children, exactly.
    let range = 6601..=6603;
    let mgr = manager(data.path(), range.clone(), 3).await;
    let src = mgr.create(spec("minimal")).await.unwrap();
    let t = Instant::now();
    let forked = mgr.fork(&src.id, 2).await.unwrap();
    let whole = t.elapsed();
    println!("FIGURE cancel: a whole fork of 2 took {whole:?}");
    for c in forked.children {
        mgr.destroy(&c.id).await.unwrap();
    }
    all_recorded(&mgr, data.path(), &range).await;
    for cut in CUTS {
        let after = whole.mul_f64(cut);
        let done = tokio::time::timeout(after, mgr.fork(&src.id, 2)).await;
        println!("cut after {after:?}: finished in time: {}", done.is_ok());
        running(&mgr, 3).await;
        all_recorded(&mgr, data.path(), &range).await;
        for r in mgr.list().into_iter().filter(|r| r.id != src.id) {
            mgr.destroy(&r.id).await.unwrap();
        }
        all_recorded(&mgr, data.path(), &range).await;
    }
    // Both children's slots are free: the next fork takes them.
    assert_eq!(mgr.fork(&src.id, 2).await.unwrap().children.len(), 2);
    destroy_all(&mgr, data.path(), &range).await;
}

/// A real agent's gRPC service on loopback; the caller is a tonic client whose call is
/// dropped (the HTTP/2 stream reset), as when the control plane's request goes away.
#[tokio::test]
async fn a_create_whose_grpc_request_is_cancelled_is_recorded() {
    let data = data_dir("cancel-grpc");
    let range = 6610..=6610;
    let mgr: Arc<Manager> = manager(data.path(), range.clone(), 2).await;
    let (mut client, server) = support::serve(mgr.clone()).await;
    let req = || CreateCapsuleRequest {
        template: "minimal".into(),
        ..Default::default()
    };
    let t = Instant::now();
    let c = client.create_capsule(req()).await.unwrap().into_inner();
    let whole = t.elapsed();
    client
        .destroy_capsule(CapsuleRef { id: c.id })
        .await
        .unwrap();
    // Past the request's arrival (a cut before it is a request the agent never saw).
    for cut in &CUTS[1..] {
        let after = whole.mul_f64(*cut);
        let mut caller = client.clone();
        let call = tokio::spawn(async move { caller.create_capsule(req()).await });
        tokio::time::sleep(after).await;
        call.abort();
        let _ = call.await;
        running(&mgr, 1).await;
        all_recorded(&mgr, data.path(), &range).await;
        // The service lists it like any capsule, and destroys it.
        let listed = client
            .list_capsules(ListCapsulesRequest {})
            .await
            .unwrap()
            .into_inner()
            .capsules;
        assert_eq!(listed.len(), 1);
        client
            .destroy_capsule(CapsuleRef {
                id: listed[0].id.clone(),
            })
            .await
            .unwrap();
        all_recorded(&mgr, data.path(), &range).await;
        assert!(mgr.list().is_empty());
    }
    drop(client);
    server.stop().await;
}
