//! A capsule's egress policy through the manager: set at create, changed while running,
//! kept across pause/resume and an agent restart (the record, the slot's rules and its
//! resolver), with stand-in hosts and a stand-in DNS server in namespaces this test makes.
//! Needs root, nftables, QEMU and the `minimal` template.

mod common;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use common::StandIn;
use wrenn_agent::{
    capsule::CreateSpec,
    envd_client::ExecRequest,
    manager::{AgentConfig, Manager},
    record, AgentError,
};
use wrenn_types::{egress::EgressPolicy, CapsuleStatus};

fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

fn config(data: &std::path::Path, dns: SocketAddr) -> AgentConfig {
    AgentConfig {
        data_dir: data.to_path_buf(),
        images_dir: images_dir(),
        qemu: wrenn_vmm::qemu::default_qemu(),
        max_capsules: 2,
        slots: 3210..=3219,
        dns_upstreams: vec![dns],
        egress_allow_private: Vec::new(),
        envd: None,
        vmm: Default::default(),
        shapes: Default::default(),
    }
}

/// HTTP status the capsule gets from `host:8080`, "fail", or "unresolved".
async fn fetch(mgr: &Manager, id: &str, host: &str) -> String {
    let out = mgr
        .exec(
            id,
            ExecRequest {
                cmd: "/bin/sh".into(),
                args: vec![
                    "-c".into(),
                    format!(
                        "curl -s -m 3 -o /dev/null -w '%{{http_code}}' http://{host}:8080/; echo \" $?\""
                    ),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, exit) = text.trim().rsplit_once(' ').unwrap_or(("", text.trim()));
    match (code, exit) {
        (_, "6") => "unresolved".into(),
        ("000" | "", _) => "fail".into(),
        (code, _) => code.into(),
    }
}

#[tokio::test]
async fn egress_policy_survives_pause_resume_and_agent_restart() {
    let dns_ns = StandIn::net("eg-mdns", "198.51.100.61", "198.51.100.62", 30);
    let names: HashMap<String, Ipv4Addr> = [
        ("allowed.test", "198.51.100.66"),
        ("other.test", "198.51.100.70"),
    ]
    .into_iter()
    .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
    .collect();
    common::dns_server(&dns_ns.ns, Ipv4Addr::new(198, 51, 100, 62), names).await;
    let _a = StandIn::start("eg-ma", "198.51.100.65", "198.51.100.66", 30, 8080);
    let _b = StandIn::start("eg-mb", "198.51.100.69", "198.51.100.70", 30, 8080);
    let dns: SocketAddr = "198.51.100.62:53".parse().unwrap();

    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let mgr = Manager::start(config(data.path(), dns)).await.unwrap();
    let mgr = std::sync::Arc::new(mgr);

    // Bad lists are refused before anything is made.
    let bad = mgr
        .create(CreateSpec {
            template: "minimal".into(),
            egress: true,
            egress_policy: EgressPolicy {
                allow: vec!["not a domain".into()],
                deny: vec![],
            },
            ..Default::default()
        })
        .await;
    assert!(matches!(bad, Err(AgentError::BadEgress(_))), "{bad:?}");
    assert!(mgr.list().is_empty());

    let c = mgr
        .create(CreateSpec {
            template: "minimal".into(),
            egress: true,
            egress_policy: EgressPolicy::new(&["allowed.test".into()], &[]).unwrap(),
            ..Default::default()
        })
        .await
        .expect("create");
    assert_eq!(fetch(&mgr, &c.id, "allowed.test").await, "200");
    assert_eq!(fetch(&mgr, &c.id, "other.test").await, "fail");
    assert_eq!(fetch(&mgr, &c.id, "198.51.100.70").await, "fail");

    // Changed while running.
    let changed = mgr
        .set_network(
            &c.id,
            true,
            &EgressPolicy {
                allow: vec!["OTHER.test.".into()],
                deny: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.egress_policy.allow, ["other.test"], "normalized");
    assert_eq!(fetch(&mgr, &c.id, "other.test").await, "200");
    assert_eq!(fetch(&mgr, &c.id, "allowed.test").await, "fail");
    let bad = mgr
        .set_network(
            &c.id,
            true,
            &EgressPolicy {
                allow: vec!["10.0.0.0/40".into()],
                deny: vec![],
            },
        )
        .await;
    assert!(matches!(bad, Err(AgentError::BadEgress(_))), "{bad:?}");

    // Kept across pause/resume.
    mgr.pause(&c.id).await.unwrap();
    // A paused capsule's network can change too; put it back to other.test after a detour.
    mgr.set_network(&c.id, false, &EgressPolicy::default())
        .await
        .unwrap();
    mgr.set_network(&c.id, true, &changed.egress_policy)
        .await
        .unwrap();
    assert_eq!(
        mgr.resume(&c.id).await.unwrap().state,
        CapsuleStatus::Running
    );
    assert_eq!(fetch(&mgr, &c.id, "other.test").await, "200");
    assert_eq!(fetch(&mgr, &c.id, "allowed.test").await, "fail");

    // Kept across an agent restart: the record says it, the new agent enforces it (its slot
    // rules rewritten, its resolver restarted). In-process, dropping the manager stops the
    // VMMs it started, so the capsule goes through the restart paused.
    mgr.pause(&c.id).await.unwrap();
    let dir = data.path().join("capsules").join(&c.id);
    let rec = record::load(&dir).unwrap();
    assert!(rec.egress);
    assert_eq!(rec.egress_policy.allow, ["other.test"]);
    drop(mgr);
    let mgr = Manager::start(config(data.path(), dns)).await.unwrap();
    let mgr = std::sync::Arc::new(mgr);
    let adopted = mgr.get(&c.id).expect("the capsule was adopted");
    assert_eq!(adopted.egress_policy.allow, ["other.test"]);
    assert_eq!(
        mgr.resume(&c.id).await.unwrap().state,
        CapsuleStatus::Running
    );
    assert_eq!(fetch(&mgr, &c.id, "other.test").await, "200");
    assert_eq!(fetch(&mgr, &c.id, "allowed.test").await, "fail");
    assert_eq!(fetch(&mgr, &c.id, "198.51.100.66").await, "fail");

    mgr.destroy(&c.id).await.unwrap();
    assert!(!wrenn_agent::netslot::existing_slots()
        .await
        .unwrap()
        .contains(&c.slot));

    // From the warm pool: its machine ran the template's guest with egress off; the create's
    // own policy is what the capsule gets.
    mgr.spawn_pool_filler();
    mgr.set_pool_size(1).await;
    let first = mgr.create(minimal(false, &[])).await.unwrap();
    for _ in 0..600 {
        if mgr.pool_count() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(mgr.pool_count(), 1, "a ready machine");
    // Its folder has no record yet.
    let warm: Vec<String> = std::fs::read_dir(data.path().join("capsules"))
        .unwrap()
        .flatten()
        .filter(|e| !e.path().join("capsule.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let pooled = mgr.create(minimal(true, &["allowed.test"])).await.unwrap();
    assert!(warm.contains(&pooled.id), "{} not in {warm:?}", pooled.id);
    assert_eq!(fetch(&mgr, &pooled.id, "allowed.test").await, "200");
    assert_eq!(fetch(&mgr, &pooled.id, "other.test").await, "fail");
    // Egress off: its slot resolver answers no name.
    assert_eq!(fetch(&mgr, &first.id, "allowed.test").await, "unresolved");
    mgr.set_pool_size(0).await;
    mgr.destroy(&first.id).await.unwrap();
    mgr.destroy(&pooled.id).await.unwrap();
    assert!(wrenn_vmm::qemu::processes_under(data.path()).is_empty());
}

fn minimal(egress: bool, allow: &[&str]) -> CreateSpec {
    let allow: Vec<String> = allow.iter().map(|a| a.to_string()).collect();
    CreateSpec {
        template: "minimal".into(),
        egress,
        egress_policy: EgressPolicy::new(&allow, &[]).unwrap(),
        ..Default::default()
    }
}
