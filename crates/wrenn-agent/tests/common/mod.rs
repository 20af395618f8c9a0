//! Stand-ins the network tests make for themselves: hosts in network namespaces (a veth to
//! the host, an HTTP server) and a tiny DNS server. Nothing here reaches a real outside
//! address.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub fn sh(script: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap()
        .success();
    assert!(ok, "failed: {script}");
}

/// `ip ARGS`, for removals of what may already be gone (no output).
fn quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A namespace this test makes, holding a stand-in server; removed on drop.
pub struct StandIn {
    pub ns: String,
    host_link: String,
    server: Option<Child>,
}

impl StandIn {
    /// A netns `ns` joined to the host by a veth; the netns side gets `inner`, the host side
    /// `outer` (both with `prefix`).
    pub fn net(ns: &str, outer: &str, inner: &str, prefix: u8) -> StandIn {
        let host_link = format!("{ns}-h");
        quiet(&["netns", "delete", ns]);
        quiet(&["link", "delete", &host_link]);
        sh(&format!(
            "ip netns add {ns} && ip link add {host_link} type veth peer name eth0 netns {ns} && \
             ip addr add {outer}/{prefix} dev {host_link} && ip link set {host_link} up && \
             ip -n {ns} link set lo up && ip -n {ns} addr add {inner}/{prefix} dev eth0 && \
             ip -n {ns} link set eth0 up && ip -n {ns} route add default via {outer}"
        ));
        StandIn {
            ns: ns.into(),
            host_link,
            server: None,
        }
    }

    /// [`StandIn::net`], serving HTTP on `inner:port`.
    pub fn start(ns: &str, outer: &str, inner: &str, prefix: u8, port: u16) -> StandIn {
        let mut s = StandIn::net(ns, outer, inner, prefix);
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
        s.server = Some(server);
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
        s
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        quiet(&["netns", "delete", &self.ns]);
        quiet(&["link", "delete", &self.host_link]);
    }
}

/// Answers A queries on UDP `addr:53` inside `ns` from `names` (TTL 300), NXDOMAIN for the
/// rest; runs until the process ends.
pub async fn dns_server(ns: &str, addr: Ipv4Addr, names: HashMap<String, Ipv4Addr>) {
    let sock = wrenn_agent::netslot::in_netns(ns, move || std::net::UdpSocket::bind((addr, 53)))
        .await
        .expect("binding the stand-in DNS server");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let q = &buf[..n];
            let Some(question) = wrenn_agent::dns::parse_question(q) else {
                continue;
            };
            let mut r = q[..question.end].to_vec();
            r[2] = 0x84 | (q[2] & 0x01);
            r[4..6].copy_from_slice(&1u16.to_be_bytes());
            r[6..12].fill(0);
            match names.get(&question.name) {
                Some(ip) if question.qtype == 1 => {
                    r[3] = 0x80;
                    r[6..8].copy_from_slice(&1u16.to_be_bytes());
                    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
                    r.extend_from_slice(&ip.octets());
                }
                Some(_) => r[3] = 0x80,
                None => r[3] = 0x83,
            }
            let _ = sock.send_to(&r, from);
        }
    });
}
