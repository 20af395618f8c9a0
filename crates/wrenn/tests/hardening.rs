//! A real `wrenn up`, probed the way an attacker on the same machine or on the network would:
//! its files must be private (no group or other permission bits anywhere in `WRENN_DIR`, also
//! when the folder existed before with looser modes), and failed log-ins must not make it
//! grow. `wrenn_dir_stays_private` needs root, QEMU and the `minimal` image; run it under the
//! VM lock (network slots 3000-3019). `failed_logins_do_not_grow_memory` runs `wrenn server`
//! alone (no agent, no VM).

mod common;

use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use common::Up;
use serde_json::{json, Value};

impl Up {
    fn start(data_dir: &Path, slots: &str) -> Up {
        // `WRENN_TEST_BIN`: another build to compare with (e.g. before a fix).
        let bin = std::env::var_os("WRENN_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wrenn")));
        let mut cmd = common::up_command(bin, slots, data_dir, "minimal");
        cmd.env_remove("WRENN_SIGNUP");
        // Its own process group, as a shell gives a command in a terminal ([`ctrl_c`]).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        Up::spawn(cmd, data_dir, 600)
    }
}

/// ^C in the terminal of `wrenn up`: SIGINT to its whole process group (its VMMs included,
/// unless they have groups of their own); waits for it to end.
fn ctrl_c(up: &mut Up) {
    // SAFETY: killpg(2) of the group our own child leads (spawned with process_group(0)).
    unsafe { libc::killpg(up.child.id() as i32, libc::SIGINT) };
    for _ in 0..1200 {
        if let Some(status) = up.child.try_wait().unwrap() {
            assert!(status.success(), "wrenn up ended with {status}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("wrenn up did not stop within 120 s of ^C");
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every folder and regular file under `root` (symbolic links and sockets aside) whose mode
/// has group or other bits, with the mode.
fn loose(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_symlink() || ft.is_socket() {
            continue;
        }
        let m = meta.permissions().mode() & 0o7777;
        if m & 0o077 != 0 {
            found.push((p.clone(), m));
        }
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    found
}

/// Files counted by [`loose`]'s walk, to show it looked at something.
fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        } else if meta.is_file() {
            n += 1;
        }
    }
    n
}

/// A `WRENN_DIR` that exists with loose modes is fixed, with a warning per path; then a
/// capsule, its files, a snapshot of it and the pause at shutdown make nothing readable by
/// other users.
#[tokio::test(flavor = "multi_thread")]
async fn wrenn_dir_stays_private() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = tmp.path().join("wrenn");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(dir.join("capsules")).unwrap();
    std::fs::write(dir.join("notes.txt"), "left by an operator").unwrap();
    for (p, m) in [("", 0o755), ("capsules", 0o755), ("notes.txt", 0o644)] {
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }

    let mut up = Up::start(&dir, "3000-3019");
    let warned = |p: &Path| {
        let name = p.display().to_string();
        up.banner
            .iter()
            .any(|l| l.starts_with("warning: ") && l.contains(&format!("{name} was readable")))
    };
    for (p, now) in [
        (dir.clone(), 0o700),
        (dir.join("capsules"), 0o700),
        (dir.join("notes.txt"), 0o600),
    ] {
        assert!(
            warned(&p),
            "no warning for {}: {:?}",
            p.display(),
            up.banner
        );
        assert_eq!(mode(&p), now, "{}", p.display());
    }
    // What the server made is private from the start.
    for f in ["wrenn.db", "admin-api-key", "admin-password"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    let http = reqwest::Client::new();
    let api = |m: reqwest::Method, p: &str| {
        http.request(m, up.url(p))
            .header("x-api-key", up.key.clone())
    };
    let made: Value =
        json_of(api(reqwest::Method::POST, "/v1/capsules").json(&json!({ "template": "minimal" })))
            .await;
    let id = made["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{made}"))
        .to_string();
    let ran = api(reqwest::Method::POST, &format!("/v1/capsules/{id}/exec"))
        .json(&json!({ "cmd": "/bin/sh", "args": ["-c", "echo secret > /tmp/f && sync"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(ran.status(), 200, "{}", ran.text().await.unwrap());
    let name = format!("private-{}", std::process::id());
    let snap = api(reqwest::Method::POST, "/v1/snapshots")
        .json(&json!({ "sandbox_id": id, "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(snap.status(), 201, "{}", snap.text().await.unwrap());

    let capsule_dir = dir.join("capsules").join(&id);
    assert!(
        capsule_dir.is_dir(),
        "the capsule lives in {}",
        capsule_dir.display()
    );
    assert!(count_files(&capsule_dir) >= 2);
    assert_eq!(loose(&dir), vec![], "after a create and a snapshot");

    // A second capsule left running: `wrenn up` pauses it at shutdown (memory to disk).
    let second: Value =
        json_of(api(reqwest::Method::POST, "/v1/capsules").json(&json!({ "template": "minimal" })))
            .await;
    let second = second["id"].as_str().unwrap().to_string();
    // The snapshot goes; its own files were under the images folder.
    let gone = api(reqwest::Method::DELETE, &format!("/v1/snapshots/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    ctrl_c(&mut up);
    assert!(count_files(&dir.join("capsules").join(&second)) >= 2);
    assert_eq!(loose(&dir), vec![], "after the pause at shutdown");

    // Started again on a tidy folder: nothing to warn about.
    let again = Up::start(&dir, "3000-3019");
    assert!(
        !again.banner.iter().any(|l| l.starts_with("warning: ")),
        "{:?}",
        again.banner
    );
    // The second capsule was paused at the ^C (its VMM, in a process group of its own, did
    // not get it: VMMs used to die with it, and the capsules were lost as `error`), and the
    // new start resumes it, as the shutdown line promised. The first one the snapshot left
    // paused: it stays paused.
    let said = |line: &str| {
        let later = again.later.lock().unwrap().clone();
        again.banner.iter().chain(later.iter()).any(|l| l == line)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !said("resumed 1 of 1 capsules paused at the last shutdown") {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} {:?}",
            again.banner,
            again.later
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(said(&format!("  resumed {second} (1/1)")));
    let http = reqwest::Client::new();
    let api = |m: reqwest::Method, p: &str| {
        http.request(m, again.url(p))
            .header("x-api-key", again.key.clone())
    };
    for (c, now) in [(&id, "paused"), (&second, "running")] {
        let got: Value = json_of(api(reqwest::Method::GET, &format!("/v1/capsules/{c}"))).await;
        assert_eq!(got["status"], now, "capsule {c}: {got}");
    }
    // The first resumes when asked, with what it wrote before the snapshot.
    let resumed = api(reqwest::Method::POST, &format!("/v1/capsules/{id}/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200, "{}", resumed.text().await.unwrap());
    let read: Value = json_of(
        api(reqwest::Method::POST, &format!("/v1/capsules/{id}/exec"))
            .json(&json!({ "cmd": "/bin/cat", "args": ["/tmp/f"] })),
    )
    .await;
    assert_eq!(read["stdout"], "secret\n", "{read}");
    for c in [&id, &second] {
        let gone = api(reqwest::Method::DELETE, &format!("/v1/capsules/{c}"))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 204);
    }
    drop(again);
}

/// Sends a request and reads its answer's JSON body.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Resident memory of a process, bytes (`VmRSS`), and its peak (`VmHWM`).
fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap()
                    * 1024
            })
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const MIB: u64 = 1 << 20;

/// `wrenn server` (control plane alone, SQLite) in front of a stand-in agent address that
/// accepts connections and never answers (no capsules are involved; this test needs no VM
/// lock). Returns the child, its address and what it printed before it was up.
fn server_alone(data_dir: &Path) -> (Child, String, Vec<String>) {
    let agent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent_addr = agent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in agent.incoming() {
            held.push(c);
        }
    });
    let bin = std::env::var_os("WRENN_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wrenn")));
    let mut child = Command::new(bin)
        .args(["server", "--listen", "127.0.0.1:0"])
        .arg("--agent")
        .arg(format!("http://{agent_addr}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (addr, banner) = common::wait_up(&mut child);
    (child, addr, banner)
}

/// `wrenn server` on a data folder that exists with loose modes: fixed, one warning per path;
/// what it makes (the database with its -wal/-shm, the admin key and password) is private.
#[tokio::test(flavor = "multi_thread")]
async fn server_fixes_loose_modes() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = tmp.path().join("wrenn");
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    std::fs::write(dir.join("pki/old.key"), "x").unwrap();
    for (p, m) in [("", 0o755), ("pki", 0o750), ("pki/old.key", 0o644)] {
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
    let (mut child, _, banner) = server_alone(&dir);
    let result =
        std::panic::catch_unwind(|| {
            for (p, now) in [("", 0o700), ("pki", 0o700), ("pki/old.key", 0o600)] {
                let path = if p.is_empty() {
                    dir.clone()
                } else {
                    dir.join(p)
                };
                let name = path.display().to_string();
                assert!(
                    banner.iter().any(|l| l.starts_with("warning: ")
                        && l.contains(&format!("{name} was readable"))),
                    "no warning for {name}: {banner:?}"
                );
                assert_eq!(mode(&path), now, "{name}");
            }
            for f in [
                "wrenn.db",
                "wrenn.db-wal",
                "wrenn.db-shm",
                "admin-api-key",
                "admin-password",
            ] {
                assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
            }
            assert_eq!(loose(&dir), vec![]);
        });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// 1,000 failed log-ins, 32 at a time (all of them checked), then 1,000 more 128 at a time
/// (beyond the hashing queue: refused at once), from 250 client addresses (so the
/// per-address limit does not stop them first), against a real `wrenn server` process: its
/// resident memory stays flat. Prints the figures.
#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_do_not_grow_memory() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let (mut child, addr, _) = server_alone(tmp.path());
    let pid = child.id();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    // One client per loopback address (127.0.0.2 …), like many attackers.
    let clients: Vec<reqwest::Client> = (0..250u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(127, 0, 0, (2 + i) as u8);
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::V4(ip))
                .build()
                .unwrap()
        })
        .collect();
    let url = format!("http://{addr}/v1/auth/login");
    let round = |first: usize, at_once: usize| {
        let clients = clients.clone();
        let url = url.clone();
        async move {
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(at_once));
            let mut tasks = Vec::new();
            for i in first..first + 1000 {
                let c = clients[i % clients.len()].clone();
                let url = url.clone();
                let permit = sem.clone().acquire_owned().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    // Unknown accounts cost a full password check, like wrong passwords.
                    let r = c
                        .post(&url)
                        .json(&json!({
                            "email": format!("nobody{i}@example.com"),
                            "password": format!("wrong password {i}"),
                        }))
                        .send()
                        .await
                        .unwrap();
                    r.status().as_u16()
                }));
            }
            let mut counts = std::collections::BTreeMap::<u16, usize>::new();
            for t in tasks {
                *counts.entry(t.await.unwrap()).or_default() += 1;
            }
            counts
        }
    };
    // Settle: one request so the first-use work is done, then measure.
    let c = reqwest::Client::new();
    c.post(&url)
        .json(&json!({ "email": "warm@example.com", "password": "wrong password" }))
        .send()
        .await
        .unwrap();
    let (before, _) = rss(pid);
    let first = round(0, 32).await;
    let (after_first, peak_first) = rss(pid);
    let second = round(1000, 128).await;
    let (after_second, peak) = rss(pid);
    println!(
        "failed log-ins: RSS before {:.1} MiB; after 1,000 {:.1} MiB (peak {:.1}); after \
         2,000 {:.1} MiB (peak {:.1}); answers {first:?} then {second:?}",
        before as f64 / MIB as f64,
        after_first as f64 / MIB as f64,
        peak_first as f64 / MIB as f64,
        after_second as f64 / MIB as f64,
        peak as f64 / MIB as f64,
    );
    // Within the queue, every attempt is checked and refused; beyond it, the excess is
    // refused at once with 429.
    assert_eq!(first.get(&401), Some(&1000), "{first:?}");
    assert!(second.keys().all(|s| *s == 401 || *s == 429), "{second:?}");
    assert!(second.get(&401).is_some_and(|n| *n >= 34), "{second:?}");
    assert!(
        after_first.saturating_sub(before) < 64 * MIB,
        "RSS grew {} MiB over 1,000 failed log-ins",
        (after_first - before) / MIB
    );
    assert!(
        peak.saturating_sub(before) < 64 * MIB,
        "peak RSS {} MiB above the start",
        (peak - before) / MIB
    );
    // A second thousand adds nothing that stays.
    assert!(
        after_second.saturating_sub(after_first) < 16 * MIB,
        "RSS grew another {} MiB over the next 1,000",
        (after_second - after_first) / MIB
    );
}
