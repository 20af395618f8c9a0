//! Network slots with real capsules: the host reaches envd through the slot; from inside a
//! capsule the host's services, other capsules and a stand-in metadata service are out of
//! reach; a stand-in "outside" host (in a namespace this test makes) is reachable only with
//! egress on. Needs root, nftables, QEMU and the `minimal` template (`make images`).

mod common;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::Duration,
};

use common::StandIn;
use wrenn_agent::{
    envd_client::{EnvdClient, ExecRequest},
    netslot::{self, Egress, Slot},
};
use wrenn_types::egress::EgressPolicy;
use wrenn_vmm::{
    snapshot::{self, Snapshot},
    Net, QemuVm, Vmm,
};

fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

struct TestCapsule {
    vm: QemuVm,
    slot: Slot,
    envd: EnvdClient,
    _dir: tempfile::TempDir,
}

async fn capsule(index: u32, egress: bool) -> TestCapsule {
    let egress = if egress {
        Egress::on()
    } else {
        Egress::default()
    };
    capsule_with(index, egress, None).await
}

/// A capsule whose slot has `egress` and (with `upstreams`) a resolver, which the guest uses.
async fn capsule_with(
    index: u32,
    egress: Egress,
    upstreams: Option<Vec<SocketAddr>>,
) -> TestCapsule {
    let snap = Snapshot {
        template_dir: images_dir().join("minimal"),
    };
    assert!(
        snap.spec().is_some(),
        "the minimal template snapshot is missing: run `make images`"
    );
    let has_resolver = upstreams.is_some();
    let slot = Slot::create_with(index, egress, upstreams.map(Arc::new))
        .await
        .expect("slot");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let config = snapshot::prepare_capsule(
        &snap,
        dir.path(),
        Net::Tap {
            netns: slot.addrs.netns.clone(),
            tap: netslot::TAP.into(),
        },
        wrenn_vmm::qemu::default_qemu(),
    )
    .unwrap();
    let mut vm = QemuVm::new(config).unwrap();
    vm.restore(&snap.state()).await.unwrap();
    vm.resume().await.unwrap();
    let addr = SocketAddr::new(slot.addrs.capsule_ip.into(), 49983);
    vm.wait_ready(addr, Duration::from_secs(120))
        .await
        .expect("envd through the slot");
    let envd = EnvdClient::new(addr, None);
    if has_resolver {
        envd.write_file(
            "/etc/resolv.conf",
            Some("root"),
            format!("nameserver {}\n", wrenn_agent::dns::SLOT_RESOLVER).into(),
        )
        .await
        .expect("pointing the guest at the slot resolver");
    }
    TestCapsule {
        vm,
        slot,
        envd,
        _dir: dir,
    }
}

/// HTTP status the capsule gets from `url`, or "fail", or "unresolved" (curl could not
/// resolve the name).
async fn fetch_from(c: &TestCapsule, url: &str) -> String {
    let out = c
        .envd
        .exec(&ExecRequest {
            cmd: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!("curl -s -m 3 -o /dev/null -w '%{{http_code}}' {url}; echo \" $?\""),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, exit) = text.trim().rsplit_once(' ').unwrap_or(("", text.trim()));
    match (code, exit) {
        (_, "6") => "unresolved".to_string(),
        ("000" | "", _) => "fail".to_string(),
        (code, _) => code.to_string(),
    }
}

#[tokio::test]
async fn capsules_are_isolated_and_egress_is_per_capsule() {
    netslot::ensure_host_rules().await.unwrap();
    // Slots far from the ones other tests use; clear what a crashed earlier run left.
    for n in [901, 902] {
        netslot::remove(n).await.unwrap();
    }
    let mut a = capsule(901, false).await;
    let mut b = capsule(902, true).await;

    // A host service on all addresses (stands in for the agent's port).
    let host_server = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in host_server.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let outside = StandIn::start("wt-out", "198.51.100.1", "198.51.100.2", 30, 8080);
    let metadata = StandIn::start("wt-meta", "169.254.169.1", "169.254.169.254", 24, 80);

    // Sanity: the stand-ins answer the host itself.
    let ok = Command::new("curl")
        .args([
            "-s",
            "-m",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://198.51.100.2:8080/",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "200");

    let host_url = format!("http://{}:{host_port}/", a.slot.addrs.host_ip);
    assert_eq!(
        fetch_from(&a, &host_url).await,
        "fail",
        "host via the slot gateway"
    );
    let host_b = format!("http://{}:{host_port}/", b.slot.addrs.host_ip);
    assert_eq!(fetch_from(&b, &host_b).await, "fail", "host, egress on");
    let other = format!("http://{}:49983/health", b.slot.addrs.capsule_ip);
    assert_eq!(fetch_from(&a, &other).await, "fail", "another capsule");
    let other = format!("http://{}:49983/health", a.slot.addrs.capsule_ip);
    assert_eq!(
        fetch_from(&b, &other).await,
        "fail",
        "another capsule, egress on"
    );
    assert_eq!(
        fetch_from(&b, "http://169.254.169.254/").await,
        "fail",
        "metadata"
    );
    assert_eq!(
        fetch_from(&b, "http://169.254.0.22:49983/").await,
        "fail",
        "the slot itself"
    );
    assert_eq!(
        fetch_from(&a, "http://198.51.100.2:8080/").await,
        "fail",
        "egress off"
    );
    assert_eq!(
        fetch_from(&b, "http://198.51.100.2:8080/").await,
        "200",
        "egress on"
    );

    drop(outside);
    drop(metadata);
    for c in [&mut a, &mut b] {
        c.vm.stop().await.unwrap();
        c.slot.release().await;
    }
    let left = netslot::existing_slots().await.unwrap();
    assert!(!left.contains(&901) && !left.contains(&902), "{left:?}");
}

/// Defect 11: with egress on, private, link-local and CGNAT stand-ins beyond the host are out
/// of reach by default and reachable only as far as the operator allows; a public stand-in
/// stays reachable throughout.
#[tokio::test]
async fn private_ranges_need_the_operators_allowance() {
    netslot::remove(3201).await.unwrap();
    netslot::set_host_rules(&[]).await.unwrap();
    let mut c = capsule(3201, true).await;
    let private = [
        StandIn::start("eg-p192", "192.168.77.1", "192.168.77.2", 30, 8080),
        StandIn::start("eg-p10", "10.77.0.1", "10.77.0.2", 30, 8080),
        StandIn::start("eg-p172", "172.16.77.1", "172.16.77.2", 30, 8080),
        StandIn::start("eg-p100", "100.64.77.1", "100.64.77.2", 30, 8080),
        StandIn::start("eg-p169", "169.254.77.1", "169.254.77.2", 30, 8080),
    ];
    let public = StandIn::start("eg-pub", "198.51.100.33", "198.51.100.34", 30, 8080);
    let url = |ip: &str| format!("http://{ip}:8080/");
    let hosts = [
        "192.168.77.2",
        "10.77.0.2",
        "172.16.77.2",
        "100.64.77.2",
        "169.254.77.2",
    ];
    // Sanity: the host itself reaches every stand-in.
    for ip in hosts.iter().chain(&["198.51.100.34"]) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-m",
                "3",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url(ip),
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "{ip} from the host"
        );
    }
    for ip in hosts {
        assert_eq!(fetch_from(&c, &url(ip)).await, "fail", "{ip} by default");
    }
    assert_eq!(fetch_from(&c, &url("198.51.100.34")).await, "200");

    // The operator allows two private ranges and one link-local one: those, and only those.
    let allowed = netslot::parse_private_allow(&[
        "192.168.77.0/24".into(),
        "10.77.0.0/30".into(),
        "169.254.77.2".into(),
    ])
    .unwrap();
    netslot::set_host_rules(&allowed).await.unwrap();
    for (ip, want) in [
        ("192.168.77.2", "200"),
        ("10.77.0.2", "200"),
        ("169.254.77.2", "200"),
        ("172.16.77.2", "fail"),
        ("100.64.77.2", "fail"),
        ("198.51.100.34", "200"),
    ] {
        assert_eq!(
            fetch_from(&c, &url(ip)).await,
            want,
            "{ip} with some allowed"
        );
    }
    // A capsule's own allow list cannot reach past the operator's denial.
    c.slot
        .set_egress(Egress {
            on: true,
            policy: EgressPolicy::new(&["172.16.0.0/12".into()], &[]).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(fetch_from(&c, &url("172.16.77.2")).await, "fail");

    netslot::set_host_rules(&[]).await.unwrap();
    c.slot.set_egress(Egress::on()).await.unwrap();
    for ip in hosts {
        assert_eq!(fetch_from(&c, &url(ip)).await, "fail", "{ip} denied again");
    }
    drop(private);
    drop(public);
    c.vm.stop().await.unwrap();
    c.slot.release().await;
}

/// Allow/deny lists in a slot, with domain names through the slot resolver and a stand-in DNS
/// server: an allowed name's address is reachable, another name's address is not, direct IP
/// access outside the lists is dropped, a denied name does not resolve, and changes take
/// effect on the running capsule.
#[tokio::test]
async fn egress_lists_with_dns_aware_sets() {
    netslot::remove(3203).await.unwrap();
    netslot::ensure_host_rules().await.unwrap();
    let dns_ns = StandIn::net("eg-dns", "198.51.100.41", "198.51.100.42", 30);
    let names: HashMap<String, Ipv4Addr> = [
        ("allowed.test", "198.51.100.46"),
        ("www.allowed.test", "198.51.100.46"),
        ("bad.allowed.test", "198.51.100.46"),
        ("other.test", "198.51.100.50"),
    ]
    .into_iter()
    .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
    .collect();
    common::dns_server(&dns_ns.ns, Ipv4Addr::new(198, 51, 100, 42), names).await;
    let _a = StandIn::start("eg-a", "198.51.100.45", "198.51.100.46", 30, 8080);
    let _b = StandIn::start("eg-b", "198.51.100.49", "198.51.100.50", 30, 8080);
    let _c = StandIn::start("eg-c", "198.51.100.53", "198.51.100.54", 30, 8080);
    let _d = StandIn::start("eg-d", "198.51.100.57", "198.51.100.58", 30, 8080);

    let policy = EgressPolicy::new(
        &["allowed.test".into(), "198.51.100.56/30".into()],
        &["bad.allowed.test".into()],
    )
    .unwrap();
    let mut c = capsule_with(
        3203,
        Egress { on: true, policy },
        Some(vec!["198.51.100.42:53".parse().unwrap()]),
    )
    .await;
    let get = |host: &str| format!("http://{host}:8080/");
    assert_eq!(fetch_from(&c, &get("allowed.test")).await, "200");
    assert_eq!(fetch_from(&c, &get("www.allowed.test")).await, "200");
    assert_eq!(
        fetch_from(&c, &get("other.test")).await,
        "fail",
        "resolved, but not allowed"
    );
    assert_eq!(
        fetch_from(&c, &get("bad.allowed.test")).await,
        "unresolved",
        "deny beats allow"
    );
    assert_eq!(fetch_from(&c, &get("nosuch.test")).await, "unresolved");
    assert_eq!(
        fetch_from(&c, &get("198.51.100.54")).await,
        "fail",
        "direct IP"
    );
    assert_eq!(
        fetch_from(&c, &get("198.51.100.58")).await,
        "200",
        "allowed CIDR"
    );

    // Changed while running: now only other.test.
    c.slot
        .set_egress(Egress {
            on: true,
            policy: EgressPolicy::new(&["other.test".into()], &[]).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(fetch_from(&c, &get("other.test")).await, "200");
    assert_eq!(fetch_from(&c, &get("allowed.test")).await, "fail");
    assert_eq!(fetch_from(&c, &get("198.51.100.58")).await, "fail");

    // No allow list: every public address but the denied ones.
    c.slot
        .set_egress(Egress {
            on: true,
            policy: EgressPolicy::new(&[], &["198.51.100.52/30".into(), "other.test".into()])
                .unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(fetch_from(&c, &get("198.51.100.54")).await, "fail");
    assert_eq!(fetch_from(&c, &get("other.test")).await, "unresolved");
    assert_eq!(fetch_from(&c, &get("allowed.test")).await, "200");
    assert_eq!(fetch_from(&c, &get("198.51.100.58")).await, "200");

    // Off: nothing, not even names.
    c.slot.set_egress(Egress::default()).await.unwrap();
    assert_eq!(fetch_from(&c, &get("198.51.100.58")).await, "fail");
    assert_eq!(fetch_from(&c, &get("allowed.test")).await, "unresolved");

    c.vm.stop().await.unwrap();
    c.slot.release().await;
    assert!(!netslot::existing_slots().await.unwrap().contains(&3203));
}
