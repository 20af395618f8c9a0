//! The conformance suite every `Vmm` backend must pass, run against whatever the backend
//! factory returns ([`Backend`]: `WRENN_VMM_BACKEND`, default QEMU: TCG on these machines, KVM
//! where it really accelerates). Needs root, QEMU and the `minimal` template
//! image (`make images` builds it into $WRENN_IMAGES, default /var/tmp/wrenn/images).
// Over 600 lines: one backend contract, its cases sharing one template and capsule helper.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use wrenn_vmm::{
    snapshot::{self, Snapshot},
    Backend, Net, Vm, VmStatus, Vmm, VmmError,
};

const READY: Duration = Duration::from_secs(120);

fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The backend under test: `WRENN_VMM_BACKEND` (a backend's name), else the default.
fn backend() -> Backend {
    std::env::var("WRENN_VMM_BACKEND")
        .map(|b| b.parse().expect("WRENN_VMM_BACKEND names a backend"))
        .unwrap_or_default()
}

static SNAPSHOT: OnceCell<Snapshot> = OnceCell::const_new();

/// The `minimal` template's snapshot (made by `make images`, which boots it in a network slot).
async fn template() -> &'static Snapshot {
    SNAPSHOT
        .get_or_init(|| async {
            let dir = images_dir().join("minimal");
            let snap = Snapshot {
                template_dir: dir.clone(),
            };
            assert!(
                snap.spec().is_some(),
                "the minimal template or its snapshot is missing at {}: run `make images` first",
                dir.display()
            );
            snap
        })
        .await
}

/// A capsule folder with its VM, restored and running, and the address of its envd.
struct Capsule {
    vm: Vm,
    envd: SocketAddr,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Capsule {
    async fn create() -> Capsule {
        let snap = template().await;
        let dir = tempfile::Builder::new()
            .prefix("wrenn-vmm-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let envd = free_addr();
        let config = snapshot::prepare_capsule(
            snap,
            dir.path(),
            Net::UserForward { host: envd },
            wrenn_vmm::qemu::default_qemu(),
        )
        .unwrap();
        let mut vm = backend().create(config).unwrap();
        vm.restore(&snap.state()).await.expect("restore");
        assert_eq!(vm.status(), VmStatus::Paused);
        vm.resume().await.unwrap();
        vm.wait_ready(envd, READY)
            .await
            .expect("envd ready after restore");
        let path = dir.path().to_path_buf();
        Capsule {
            vm,
            envd,
            _dir: dir,
            path,
        }
    }

    async fn pause(&mut self) {
        self.vm.pause().await.unwrap();
        self.vm.save(&self.path.join("state")).await.unwrap();
        assert_eq!(self.vm.status(), VmStatus::Saved);
        assert!(self.vm.pid().is_none(), "no QEMU while paused");
    }

    async fn resume(&mut self) {
        self.vm.restore(&self.path.join("state")).await.unwrap();
        self.vm.resume().await.unwrap();
        self.vm.wait_ready(self.envd, READY).await.unwrap();
        set_clock(self.envd).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn set_clock(envd: SocketAddr) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let ts = wrenn_time(now.as_secs() as i64);
    let resp = client()
        .post(format!("http://{envd}/init"))
        .json(&json!({ "timestamp": ts }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

/// RFC 3339 (UTC) for whole seconds, as `date` writes it.
fn wrenn_time(secs: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `bash -c script` through envd; returns stdout and the exit code.
async fn exec(envd: SocketAddr, script: &str) -> (String, i64) {
    let body = json!({"process": {"cmd": "/bin/bash", "args": ["-c", script]}, "stdin": false})
        .to_string();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body.as_bytes());
    let bytes = client()
        .post(format!("http://{envd}/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .body(framed)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut rest = &bytes[..];
    let (mut out, mut code) = (Vec::new(), None);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let msg: Value = serde_json::from_slice(&rest[5..5 + len]).unwrap();
        if rest[0] & 2 != 0 {
            assert!(msg.get("error").is_none(), "{msg}");
        } else if let Some(s) = msg["event"]["data"]["stdout"].as_str() {
            out.extend(base64::engine::general_purpose::STANDARD.decode(s).unwrap());
        } else if let Some(end) = msg["event"].get("end") {
            code = Some(end["exitCode"].as_i64().unwrap_or(0));
        }
        rest = &rest[5 + len..];
    }
    (String::from_utf8(out).unwrap(), code.expect("end event"))
}

/// Starts a long-running tagged background process (its stream is dropped at once).
async fn start_background(envd: SocketAddr, script: &str, tag: &str) {
    let body = json!({"process": {"cmd": "/bin/bash", "args": ["-c", script]}, "tag": tag, "stdin": false}).to_string();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body.as_bytes());
    let mut resp = client()
        .post(format!("http://{envd}/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .body(framed)
        .send()
        .await
        .unwrap();
    // Wait for the start event, then detach.
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("start"));
}

#[tokio::test]
async fn restore_exec_pause_resume_keeps_files_and_processes() {
    let mut c = Capsule::create().await;
    let (out, code) = exec(c.envd, "echo hello; id -un").await;
    assert_eq!((out.as_str(), code), ("hello\nuser\n", 0));
    let (_, code) = exec(c.envd, "echo kept > /home/user/kept.txt").await;
    assert_eq!(code, 0);
    start_background(c.envd, "sleep 100000", "sleeper").await;

    c.pause().await;
    assert_eq!(backend().processes_under(&c.path).len(), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.resume().await;

    let (out, _) = exec(
        c.envd,
        "cat /home/user/kept.txt; pgrep -x sleep >/dev/null && echo sleeping",
    )
    .await;
    assert_eq!(out, "kept\nsleeping\n");
    let list: Value = client()
        .post(format!("http://{}/process.Process/List", c.envd))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["tag"] == "sleeper"));
    // The clock was set from /init after the restore.
    let (out, _) = exec(c.envd, "date +%s").await;
    let guest: i64 = out.trim().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest - host).abs() <= 3,
        "guest clock {guest} vs host {host}"
    );
    c.vm.stop().await.unwrap();
    assert_eq!(backend().processes_under(&c.path).len(), 0);
}

#[tokio::test]
async fn five_capsules_restore_concurrently() {
    let mut tasks = Vec::new();
    for i in 0..5 {
        tasks.push(tokio::spawn(async move {
            let c = Capsule::create().await;
            let (out, _) = exec(c.envd, &format!("echo {i} > /tmp/me; cat /tmp/me")).await;
            assert_eq!(out, format!("{i}\n"));
            c
        }));
    }
    let mut capsules = Vec::new();
    for t in tasks {
        capsules.push(t.await.unwrap());
    }
    // Each capsule has its own memory and disk: writes did not leak between them.
    for (i, c) in capsules.iter().enumerate() {
        let (out, _) = exec(c.envd, "cat /tmp/me").await;
        assert_eq!(out, format!("{i}\n"));
    }
    for mut c in capsules {
        c.vm.stop().await.unwrap();
        assert_eq!(backend().processes_under(&c.path).len(), 0);
    }
}

#[tokio::test]
async fn twenty_pause_resume_cycles_keep_data() {
    let mut c = Capsule::create().await;
    for i in 1..=20 {
        let (_, code) = exec(c.envd, &format!("echo {i} >> /home/user/cycles; sync")).await;
        assert_eq!(code, 0);
        c.pause().await;
        c.resume().await;
    }
    let (out, _) = exec(c.envd, "cat /home/user/cycles").await;
    let want: String = (1..=20).map(|i| format!("{i}\n")).collect();
    assert_eq!(out, want);
    c.vm.stop().await.unwrap();
}

#[tokio::test]
async fn killed_qemu_is_reported_with_the_console() {
    let mut c = Capsule::create().await;
    let pid = c.vm.pid().unwrap();
    let mut death = c.vm.death_watch().unwrap();
    // SAFETY: plain kill(2) of the QEMU child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    tokio::time::timeout(Duration::from_secs(1), death.wait_for(|d| d.is_some()))
        .await
        .expect("death noticed within 1 s")
        .unwrap();
    assert!(matches!(c.vm.status(), VmStatus::Failed(_)));
    let err = c.vm.pause().await.unwrap_err();
    match err {
        VmmError::Exited { status, .. } => assert!(status.contains("9"), "{status}"),
        other => panic!("expected Exited, got {other}"),
    }
    c.vm.stop().await.unwrap();
    assert_eq!(backend().processes_under(&c.path).len(), 0);
}

#[tokio::test]
async fn bad_configs_and_states_are_errors() {
    let snap = template().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut config =
        snapshot::prepare_capsule(snap, dir.path(), Net::None, wrenn_vmm::qemu::default_qemu())
            .unwrap();
    config.vcpus = 0;
    assert!(matches!(
        backend().create(config.clone()),
        Err(VmmError::Config(_))
    ));
    config.vcpus = 1;
    let mut vm = backend().create(config.clone()).unwrap();
    assert!(matches!(vm.pause().await, Err(VmmError::State { .. })));
    assert!(matches!(vm.resume().await, Err(VmmError::State { .. })));
    // A corrupt state file fails the restore and leaves no QEMU behind.
    let bad = dir.path().join("bad-state");
    std::fs::write(&bad, b"not a migration stream").unwrap();
    assert!(vm.restore(&bad).await.is_err());
    assert!(vm.pid().is_none());
    assert_eq!(backend().processes_under(dir.path()).len(), 0);
    // A missing QEMU binary is a spawn error.
    config.qemu = PathBuf::from("/nonexistent/qemu");
    let mut vm = backend().create(config).unwrap();
    assert!(matches!(vm.boot().await, Err(VmmError::Spawn { .. })));
}

/// SHA-256 of a file, by `sha256sum`.
fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// kB of `field` in the smaps entry of `pid`'s mapping of `file`.
fn smaps_kib(pid: u32, file: &std::path::Path, field: &str) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let want = file.display().to_string();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.ends_with(&want);
        } else if inside && first == format!("{field}:") {
            total += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    }
    total
}

#[tokio::test]
async fn capsules_share_template_memory_and_never_see_each_other() {
    let snap = template().await;
    let before = sha256(&snap.memory());
    let mut a = Capsule::create().await;
    let mut b = Capsule::create().await;
    for (c, word) in [(&a, "alpha"), (&b, "bravo")] {
        let (_, code) = exec(
            c.envd,
            &format!(
                "head -c 4M /dev/zero | tr '\\0' '{}' > /dev/shm/ram; echo {word} > /dev/shm/word",
                &word[..1]
            ),
        )
        .await;
        assert_eq!(code, 0);
    }
    for (c, word) in [(&a, "alpha"), (&b, "bravo")] {
        let (out, _) = exec(
            c.envd,
            "cat /dev/shm/word; tr -d 'ab' < /dev/shm/ram | wc -c",
        )
        .await;
        assert_eq!(
            out,
            format!("{word}\n0\n"),
            "each capsule sees only its own writes"
        );
    }
    // The template's pages the guests only read are one copy in the page cache, mapped by both.
    let base = a.path.join(wrenn_vmm::memory::BASE_FILE);
    let shared = smaps_kib(a.vm.pid().unwrap(), &base, "Shared_Clean");
    assert!(shared >= 8 * 1024, "template pages shared: {shared} KiB");
    // Pause writes the capsule's own pages, resume puts them back; the template is untouched.
    a.pause().await;
    assert!(a.path.join(wrenn_vmm::memory::DELTA_FILE).is_file());
    a.resume().await;
    let (out, _) = exec(
        a.envd,
        "cat /dev/shm/word; tr -d 'a' < /dev/shm/ram | wc -c",
    )
    .await;
    assert_eq!(out, "alpha\n0\n");
    // Flattened into its own file (as before a move to another host), it still resumes.
    b.pause().await;
    wrenn_vmm::memory::make_own(&b.path).unwrap();
    assert!(!b.path.join(wrenn_vmm::memory::BASE_FILE).exists());
    b.resume().await;
    let (out, _) = exec(
        b.envd,
        "cat /dev/shm/word; tr -d 'b' < /dev/shm/ram | wc -c",
    )
    .await;
    assert_eq!(out, "bravo\n0\n");
    b.pause().await;
    b.resume().await;
    let (out, _) = exec(b.envd, "cat /dev/shm/word").await;
    assert_eq!(out, "bravo\n");
    a.vm.stop().await.unwrap();
    b.vm.stop().await.unwrap();
    assert_eq!(
        sha256(&snap.memory()),
        before,
        "the template's memory never changes"
    );
}

/// The configuration section a device-state file gets is the one `migrate` writes.
#[tokio::test]
async fn device_state_configuration_matches_migrate() {
    let snap = template().await;
    let state = std::fs::read(snap.state()).unwrap();
    let section = wrenn_vmm::memory::configuration_section("microvm");
    assert_eq!(&state[8..8 + section.len()], &section[..]);
}

/// A VMM started ahead, waiting for a state (a warm pool's): the restore only loads into it.
#[tokio::test]
async fn a_waiting_vmm_takes_a_state_and_leaves_nothing_when_stopped() {
    let snap = template().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let envd = free_addr();
    let config = snapshot::prepare_capsule(
        snap,
        dir.path(),
        Net::UserForward { host: envd },
        wrenn_vmm::qemu::default_qemu(),
    )
    .unwrap();
    // Started, then stopped unused: nothing left.
    let mut idle = backend().create(config.clone()).unwrap();
    idle.start_waiting().await.unwrap();
    assert_eq!(idle.status(), VmStatus::Waiting);
    assert_eq!(backend().processes_under(dir.path()).len(), 1);
    // The VMM runs without transparent huge pages (the default `Tuning`).
    let status = std::fs::read_to_string(format!("/proc/{}/status", idle.pid().unwrap())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])),
        "{status}"
    );
    assert!(matches!(
        idle.start_waiting().await,
        Err(VmmError::State { .. })
    ));
    idle.stop().await.unwrap();
    assert_eq!(backend().processes_under(dir.path()).len(), 0);
    // A bad state into a waiting VMM fails and takes the VMM with it.
    let mut vm = backend().create(config.clone()).unwrap();
    vm.start_waiting().await.unwrap();
    let bad = dir.path().join("bad-state");
    std::fs::write(&bad, b"not a migration stream").unwrap();
    assert!(vm.restore(&bad).await.is_err());
    assert!(vm.pid().is_none());
    assert_eq!(backend().processes_under(dir.path()).len(), 0);
    // The template's state into a waiting VMM: a running capsule; paused and saved, it
    // resumes into another waiting VMM with its files and memory.
    let mut vm = backend().create(config).unwrap();
    vm.start_waiting().await.unwrap();
    let pid = vm.pid();
    vm.restore(&snap.state()).await.unwrap();
    assert_eq!(vm.pid(), pid, "loaded into the waiting process");
    vm.resume().await.unwrap();
    vm.wait_ready(envd, READY).await.unwrap();
    let (_, code) = exec(
        envd,
        "echo warm > /dev/shm/w; echo disk > /home/user/w; sync",
    )
    .await;
    assert_eq!(code, 0);
    vm.pause().await.unwrap();
    let state = dir.path().join("state");
    vm.save(&state).await.unwrap();
    vm.start_waiting().await.unwrap();
    vm.restore(&state).await.unwrap();
    vm.resume().await.unwrap();
    vm.wait_ready(envd, READY).await.unwrap();
    let (out, _) = exec(envd, "cat /dev/shm/w /home/user/w").await;
    assert_eq!(out, "warm\ndisk\n");
    vm.stop().await.unwrap();
    assert_eq!(backend().processes_under(dir.path()).len(), 0);
}

/// The guest's count of IPv6 neighbour adverts sent (the unsolicited ones are how it
/// announces itself, with gratuitous ARP, when QEMU asks after a migration).
async fn neighbour_adverts_sent(envd: SocketAddr) -> u64 {
    let (out, code) = exec(
        envd,
        "awk '$1 == \"Icmp6OutNeighborAdvertisements\" {print $2}' /proc/net/snmp6",
    )
    .await;
    assert_eq!(code, 0);
    out.trim().parse().expect("a count in /proc/net/snmp6")
}

#[tokio::test]
async fn a_resumed_vm_does_not_announce_itself() {
    let mut c = Capsule::create().await;
    // QEMU's announcement rounds (when asked for) span ~1.3 s after the load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = neighbour_adverts_sent(c.envd).await;
    c.pause().await;
    c.resume().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = neighbour_adverts_sent(c.envd).await;
    assert_eq!(
        after, before,
        "the guest announced itself after the restore (it has not moved)"
    );
    c.vm.stop().await.unwrap();
}

#[tokio::test]
async fn a_kept_vmm_runs_on_and_its_saved_state_restores_after_release() {
    let mut c = Capsule::create().await;
    let (_, code) = exec(
        c.envd,
        "echo one > /dev/shm/k; echo one > /home/user/k; sync",
    )
    .await;
    assert_eq!(code, 0);
    start_background(c.envd, "sleep 100000", "kept-sleeper").await;
    let state = c.path.join("state");
    // Kept: the same process, stopped, and `cont` runs it on.
    c.vm.pause().await.unwrap();
    let pid = c.vm.pid();
    c.vm.save_keeping(&state).await.unwrap();
    assert_eq!(c.vm.status(), VmStatus::Paused);
    assert_eq!(c.vm.pid(), pid, "the VMM is kept");
    c.vm.resume().await.unwrap();
    c.vm.wait_ready(c.envd, READY).await.unwrap();
    let (out, _) = exec(
        c.envd,
        "cat /dev/shm/k; pgrep -x sleep >/dev/null && echo sleeping",
    )
    .await;
    assert_eq!(out, "one\nsleeping\n");
    // Kept again, then released: no process, and the files it saved hold everything.
    let (_, code) = exec(
        c.envd,
        "echo two > /dev/shm/k; echo two > /home/user/k; sync",
    )
    .await;
    assert_eq!(code, 0);
    c.vm.pause().await.unwrap();
    c.vm.save_keeping(&state).await.unwrap();
    c.vm.release().await;
    assert_eq!(c.vm.status(), VmStatus::Saved);
    assert!(c.vm.pid().is_none());
    assert_eq!(backend().processes_under(&c.path).len(), 0);
    c.vm.release().await; // a second release changes nothing
    assert_eq!(c.vm.status(), VmStatus::Saved);
    c.resume().await;
    let (out, _) = exec(
        c.envd,
        "cat /dev/shm/k /home/user/k; pgrep -x sleep >/dev/null && echo sleeping",
    )
    .await;
    assert_eq!(out, "two\ntwo\nsleeping\n");
    // A kept VMM that died (killed from outside) releases like a live one.
    c.vm.pause().await.unwrap();
    c.vm.save_keeping(&state).await.unwrap();
    // SAFETY: plain kill(2) of the test's own QEMU.
    unsafe { libc::kill(c.vm.pid().unwrap() as i32, libc::SIGKILL) };
    c.vm.release().await;
    assert_eq!(c.vm.status(), VmStatus::Saved);
    c.resume().await;
    let (out, _) = exec(c.envd, "cat /dev/shm/k").await;
    assert_eq!(out, "two\n");
    // The own layout (a capsule moved from another host) saves by migration: kept alike.
    c.vm.pause().await.unwrap();
    c.vm.save(&state).await.unwrap();
    wrenn_vmm::memory::make_own(&c.path).unwrap();
    c.resume().await;
    for _ in 0..3 {
        c.vm.pause().await.unwrap();
        c.vm.save_keeping(&state).await.unwrap();
        c.vm.resume().await.unwrap();
        c.vm.wait_ready(c.envd, READY).await.unwrap();
    }
    let (out, _) = exec(c.envd, "cat /dev/shm/k").await;
    assert_eq!(out, "two\n");
    c.vm.release().await; // leaves a VM that is not kept as it is
    assert_eq!(c.vm.status(), VmStatus::Running);
    c.vm.stop().await.unwrap();
    assert_eq!(backend().processes_under(&c.path).len(), 0);
}
