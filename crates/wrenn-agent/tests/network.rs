//! Network slots with real capsules: the host reaches envd through the slot; from inside a
//! capsule the host's services, other capsules and a stand-in metadata service are out of
//! reach; a stand-in "outside" host (in a namespace this test makes) is reachable only with
//! egress on. Needs root, nftables, QEMU and the `minimal` template (`make images`).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use wrenn_agent::{
    envd_client::{EnvdClient, ExecRequest},
    netslot::{self, Slot},
};
use wrenn_vmm::{
    snapshot::{self, Snapshot},
    Net, QemuVm, Vmm,
};

fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

fn sh(script: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap()
        .success();
    assert!(ok, "failed: {script}");
}

/// A namespace this test makes, holding a stand-in server; removed on drop.
struct StandIn {
    ns: String,
    host_link: String,
    server: Child,
}

impl StandIn {
    /// A netns `ns` joined to the host by a veth; the netns side gets `inner`, the host side
    /// `outer` (both with `prefix`), and serves HTTP on `inner:port`.
    fn start(ns: &str, outer: &str, inner: &str, prefix: u8, port: u16) -> StandIn {
        let host_link = format!("{ns}-h");
        let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        let _ = Command::new("ip")
            .args(["link", "delete", &host_link])
            .status();
        sh(&format!(
            "ip netns add {ns} && ip link add {host_link} type veth peer name eth0 netns {ns} && \
             ip addr add {outer}/{prefix} dev {host_link} && ip link set {host_link} up && \
             ip -n {ns} link set lo up && ip -n {ns} addr add {inner}/{prefix} dev eth0 && \
             ip -n {ns} link set eth0 up && ip -n {ns} route add default via {outer}"
        ));
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "/usr/bin/python3",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                inner,
            ])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://{inner}:{port}/");
        for _ in 0..100 {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "curl",
                    "-s",
                    "-m",
                    "1",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &url,
                ])
                .output()
                .unwrap();
            if out.stdout == b"200" {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        StandIn {
            ns: ns.into(),
            host_link,
            server,
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_link])
            .status();
    }
}

struct TestCapsule {
    vm: QemuVm,
    slot: Slot,
    envd: EnvdClient,
    _dir: tempfile::TempDir,
}

async fn capsule(index: u32, egress: bool) -> TestCapsule {
    let snap = Snapshot {
        template_dir: images_dir().join("minimal"),
    };
    assert!(
        snap.spec().is_some(),
        "the minimal template snapshot is missing: run `make images`"
    );
    let slot = Slot::create(index, egress).await.expect("slot");
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
    TestCapsule {
        vm,
        slot,
        envd: EnvdClient::new(addr, None),
        _dir: dir,
    }
}

/// HTTP status the capsule gets from `url`, or "fail".
async fn fetch_from(c: &TestCapsule, url: &str) -> String {
    let out = c
        .envd
        .exec(&ExecRequest {
            cmd: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!("curl -s -m 3 -o /dev/null -w '%{{http_code}}' {url} || true"),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "000" | "" => "fail".to_string(),
        code => code.to_string(),
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
