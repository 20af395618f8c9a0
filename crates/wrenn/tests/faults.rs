//! Faults, measured on the real binary: the host's disk full under the data folder, a guest
//! that fills its own disk, PostgreSQL restarted under load, the agent killed with `-9` under
//! load, and 100 pause/resume cycles. Each test prints what it measured as
//! `FIGURE faults.<name> key=value …` lines (docs/reliability.md cites them).
//! Needs root (loop mounts, netns), QEMU, PostgreSQL's binaries and `make images`.
//! Network slots 3600-3699.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{images_dir, ready};
use serde_json::{json, Value};

/// The tests boot VMs on a small machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A request that takes longer than this has hung (the bound every request must meet, with
/// success or a clear error).
const HANG: Duration = Duration::from_secs(60);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wrenn")
}

fn figure(name: &str, values: &[(&str, String)]) {
    let kv: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("FIGURE faults.{name} {}", kv.join(" "));
}

/// A child process stopped with SIGINT (then SIGKILL) when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    fn kill_9(&mut self) {
        let mut c = self.0.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn stop(&mut self) {
        let Some(mut c) = self.0.take() else { return };
        common::interrupt(&mut c, 300);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whatever a test leaves when it fails: the QEMUs under its data folder (they would keep
/// the VM lock's descriptor, and the machine) and the network namespaces of its slots.
struct Reap {
    dir: PathBuf,
    slots: std::ops::RangeInclusive<u32>,
}

impl Drop for Reap {
    fn drop(&mut self) {
        for (pid, _) in wrenn_vmm::qemu::processes_under(&self.dir) {
            // SAFETY: kill(2) of a QEMU this test started (its command line names our folder).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for n in self.slots.clone() {
            let ns = format!("wrenn-{n}");
            if Path::new("/run/netns").join(&ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
    }
}

/// `wrenn up` in `data`, owning `slots`, on SQLite or `database_url`.
fn start_up(data: &Path, slots: &str, database_url: Option<&str>) -> (Proc, Api) {
    let mut cmd = common::up_command(bin(), slots, data, "minimal");
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd.spawn().unwrap();
    let (addr, key) = ready(&mut child, data);
    (Proc(Some(child)), Api::new(addr, key))
}

/// What a request ended with.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Value,
    took: Duration,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    fn new(addr: String, key: String) -> Api {
        Api {
            http: reqwest::Client::builder().timeout(HANG).build().unwrap(),
            base: format!("http://{addr}"),
            key,
        }
    }

    /// A request; `Err` is a transport failure or a hang (no answer within [`HANG`]).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, String> {
        let start = Instant::now();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if path.ends_with("/exec") {
            // A command may run as long as its own timeout (600 s, e.g. a guest filling its
            // disk under TCG on a loaded host); `HANG` bounds the control requests.
            req = req.timeout(Duration::from_secs(660));
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e:?}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("{path}: {e:?}"))?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|_| format!("{path}: {status} with a body that is not JSON: {text}"))?
        };
        Ok(Answer {
            status,
            body,
            took: start.elapsed(),
        })
    }

    async fn create(&self, body: Value) -> Answer {
        self.call(reqwest::Method::POST, "/v1/capsules", Some(body))
            .await
            .unwrap()
    }

    /// Creates a `minimal` capsule; its id.
    async fn capsule(&self) -> String {
        let a = self.create(json!({ "template": "minimal" })).await;
        assert_eq!(a.status, 201, "{a:?}");
        a.body["id"].as_str().unwrap().to_string()
    }

    async fn exec(&self, id: &str, script: &str) -> Result<Answer, String> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/capsules/{id}/exec"),
            Some(json!({ "cmd": "/bin/bash", "args": ["-c", script], "timeout_sec": 600 })),
        )
        .await
    }

    /// Runs `script`; its stdout (the command must succeed).
    async fn sh(&self, id: &str, script: &str) -> String {
        let a = self.exec(id, script).await.unwrap();
        assert_eq!(a.status, 200, "{script}: {a:?}");
        assert_eq!(a.body["exit_code"], 0, "{script}: {a:?}");
        a.body["stdout"].as_str().unwrap().to_string()
    }

    async fn post(&self, path: &str) -> Answer {
        self.call(reqwest::Method::POST, path, None).await.unwrap()
    }

    async fn get(&self, path: &str) -> Result<Answer, String> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn delete(&self, id: &str) -> Answer {
        self.call(reqwest::Method::DELETE, &format!("/v1/capsules/{id}"), None)
            .await
            .unwrap()
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small ext4 filesystem on a loop device, unmounted when dropped.
struct SmallFs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(mib: u64) -> SmallFs {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        // No blocks reserved for root: the test (root) fills it for good.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image));
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        SmallFs { mount, _dir: dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        for _ in 0..50 {
            if Command::new("umount")
                .arg(&self.mount)
                .status()
                .is_ok_and(|s| s.success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_available() * s.fragment_size()
}

/// Allocates `path` until the filesystem is full (fallocate, largest pieces first, so a big
/// filesystem fills at once); the bytes taken.
fn fill(path: &Path) -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).unwrap();
    let mut taken = 0u64;
    let mut piece = free_bytes(path.parent().unwrap()).max(4096);
    while piece >= 4096 {
        // SAFETY: fallocate(2) on our own open file, past its current end.
        let rc = unsafe {
            libc::fallocate(f.as_raw_fd(), 0, taken as libc::off_t, piece as libc::off_t)
        };
        if rc == 0 {
            taken += piece;
        } else {
            let e = std::io::Error::last_os_error();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOSPC),
                "filling {}: {e}",
                path.display()
            );
            piece /= 2;
        }
    }
    let _ = f.sync_all();
    taken
}

/// 1. The host's disk under the data folder fills up: creates fail with a clear error (no
///    panic, no hang), running capsules and the database are unharmed, and creates work again
///    once there is space.
#[tokio::test(flavor = "multi_thread")]
async fn host_disk_full_under_the_data_dir() {
    let _serial = SERIAL.lock().await;
    let fs = SmallFs::new(6144);
    let data = fs.mount.join("wrenn");
    let _reap = Reap {
        dir: data.clone(),
        slots: 3600..=3619,
    };
    let (mut up, api) = start_up(&data, "3600-3619", None);

    let a = api.capsule().await;
    // Read once now: its atime is settled, so later reads write nothing to its disk.
    api.sh(
        &a,
        "head -c 100000 /dev/urandom > /home/user/keep && sha256sum /home/user/keep > /home/user/keep.sum && \
         cat /home/user/keep.sum >/dev/null && (sleep 100000 >/dev/null 2>&1 &) && sync",
    )
    .await;
    let sum = api.sh(&a, "cat /home/user/keep.sum").await;

    let filler = fs.mount.join("filler");
    let filled = fill(&filler);
    let free_after_fill = free_bytes(&fs.mount);

    // Creates fail, each with a documented status and a clear message, none hangs.
    let mut refused = 0;
    for _ in 0..3 {
        let c = api.create(json!({ "template": "minimal" })).await;
        assert_eq!(c.status, 507, "{c:?}");
        assert_eq!(c.code(), "insufficient_storage", "{c:?}");
        // The host's free-space check, or the database (the quota reservation is its first
        // write) finding the disk full: either says so.
        assert!(
            c.message().contains("space") || c.message().contains("disk is full"),
            "{c:?}"
        );
        refused += 1;
    }
    // The database answers; the running capsule's files and processes are intact.
    let listed = api.get("/v1/capsules").await.unwrap();
    assert_eq!(listed.status, 200, "{listed:?}");
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str()], "refused creates leave nothing");
    assert_eq!(listed.body[0]["status"], "running");
    assert_eq!(
        api.sh(&a, "sha256sum /home/user/keep").await,
        sum,
        "the capsule's file"
    );
    assert_eq!(
        api.sh(&a, "pgrep -x sleep >/dev/null && echo yes").await,
        "yes\n"
    );

    // Space returns: creates work again, and the capsule is still fine.
    std::fs::remove_file(&filler).unwrap();
    let b = api.capsule().await;
    assert_eq!(api.sh(&b, "echo fine").await, "fine\n");
    assert_eq!(api.sh(&a, "sha256sum /home/user/keep").await, sum);
    for id in [&a, &b] {
        assert_eq!(api.delete(id).await.status, 204);
    }
    up.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    // The database file is sound after all that.
    let check = run(Command::new("sqlite3")
        .arg(data.join("wrenn.db"))
        .arg("PRAGMA integrity_check"));
    assert_eq!(check.trim(), "ok");
    figure(
        "host_disk_full",
        &[
            ("fs_mib", "6144".into()),
            ("filled_bytes", filled.to_string()),
            ("free_after_fill", free_after_fill.to_string()),
            ("creates_refused", refused.to_string()),
            ("running_capsule_intact", "1".into()),
            ("creates_after_recovery_ok", "1".into()),
        ],
    );
}

/// 2. A guest fills its own disk: it gets `ENOSPC`, the host loses no more than the capsule's
///    disk allowance, the server and another capsule keep working, and the full capsule can
///    delete its file and carry on.
#[tokio::test(flavor = "multi_thread")]
async fn guest_that_fills_its_disk() {
    let _serial = SERIAL.lock().await;
    // A filesystem of its own, so the host's free space is measured without other writers.
    let fs = SmallFs::new(10240);
    let data = fs.mount.join("wrenn");
    let _reap = Reap {
        dir: data.clone(),
        slots: 3620..=3639,
    };
    let (mut up, api) = start_up(&data, "3620-3639", None);
    let full = api.capsule().await;
    let other = api.capsule().await;
    api.sh(&other, "echo other > /home/user/mark && sync").await;
    let disk_bytes: u64 = api
        .sh(&full, "cat /sys/block/vda/size")
        .await
        .trim()
        .parse::<u64>()
        .unwrap()
        * 512;
    let free_before = free_bytes(&fs.mount);

    let out = api
        .exec(
            &full,
            "dd if=/dev/zero of=/home/user/big bs=4M 2>&1; echo exit=$?; sync; df -k --output=avail / | tail -1",
        )
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    let stdout = out.body["stdout"].as_str().unwrap();
    assert!(stdout.contains("No space left on device"), "{stdout}");
    assert!(!stdout.contains("exit=0"), "{stdout}");
    let guest_avail_kib: u64 = stdout.lines().last().unwrap().trim().parse().unwrap();
    assert!(
        guest_avail_kib < 64 << 10,
        "the guest's disk is full: {stdout}"
    );
    let written: u64 = api
        .sh(&full, "stat -c %s /home/user/big")
        .await
        .trim()
        .parse()
        .unwrap();

    // The host lost at most the capsule's disk (and its qcow2 metadata), nothing else.
    let free_after = free_bytes(&fs.mount);
    let used = free_before.saturating_sub(free_after);
    let allowance = disk_bytes + disk_bytes / 32;
    assert!(
        used <= allowance,
        "the host lost {used} bytes for a {disk_bytes}-byte disk"
    );
    assert!(free_after > 0);

    // Everything else keeps working.
    let listed = api.get("/v1/capsules").await.unwrap();
    assert_eq!(listed.status, 200);
    assert_eq!(api.sh(&other, "cat /home/user/mark").await, "other\n");
    assert_eq!(
        api.sh(&other, "echo more > /home/user/more && cat /home/user/more")
            .await,
        "more\n"
    );
    let c = api.capsule().await;
    assert_eq!(api.sh(&c, "echo new").await, "new\n");
    // The full capsule frees its space and continues.
    assert_eq!(
        api.sh(
            &full,
            "rm /home/user/big && echo again > /home/user/after && sync && cat /home/user/after"
        )
        .await,
        "again\n"
    );
    for id in [&full, &other, &c] {
        assert_eq!(api.delete(id).await.status, 204);
    }
    up.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    figure(
        "guest_disk_full",
        &[
            ("guest_disk_bytes", disk_bytes.to_string()),
            ("guest_bytes_written", written.to_string()),
            ("host_bytes_used", used.to_string()),
            ("host_free_after", free_after.to_string()),
            ("other_capsule_ok", "1".into()),
            ("full_capsule_recovered", "1".into()),
        ],
    );
}

/// Requests of a load run, by phase: before the fault, while it lasts, after it.
#[derive(Default)]
struct Tally {
    answers: Vec<(u8, Result<Answer, String>)>,
}

/// `workers` tasks repeating `request` until `stop`; each answer is tagged with `phase`.
fn load<F, Fut>(
    workers: usize,
    phase: Arc<std::sync::atomic::AtomicU8>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    request: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Answer, String>> + Send,
{
    (0..workers)
        .map(|w| {
            let (phase, stop, tally, request) =
                (phase.clone(), stop.clone(), tally.clone(), request.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let started = phase.load(Ordering::SeqCst);
                    let a = request(w, n).await;
                    // A request that straddles a boundary counts as during the fault.
                    let ended = phase.load(Ordering::SeqCst);
                    let p = if started == ended { started } else { 1 };
                    let failed = !matches!(&a, Ok(a) if a.ok());
                    tally.lock().unwrap().answers.push((p, a));
                    n += 1;
                    if failed {
                        // Errors come fast: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect()
}

/// Waits until `probe` succeeds (at most `within`).
async fn until_ok<F, Fut>(within: Duration, probe: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Answer, String>>,
{
    let start = Instant::now();
    loop {
        if let Ok(a) = probe().await {
            if a.ok() {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < within, "no recovery within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A throwaway PostgreSQL cluster of the test's own (never the shared test cluster).
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    password: String,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn pg_bin() -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries (scripts/install-postgres.sh installs them)")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .collect();
        dirs.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop().expect("an initdb")
    }

    fn as_postgres(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(args[0]))
            .args(&args[1..]);
        cmd
    }

    fn new() -> Postgres {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let chown = |p: &Path| run(Command::new("chown").arg("postgres").arg(p));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chown(&data);
        let password = format!("pw{}", std::process::id());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).unwrap();
        chown(&pwfile);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            bin: Self::pg_bin(),
            data,
            port,
            password,
            _dir: dir,
        };
        let data = pg.data.to_str().unwrap().to_string();
        run(&mut pg.as_postgres(&[
            "initdb",
            "-D",
            &data,
            "-U",
            "postgres",
            "--no-locale",
            "-E",
            "UTF8",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            &format!("--pwfile={}", pwfile.display()),
        ]));
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data.join("postgresql.conf"))
            .unwrap()
            .write_all(
                format!(
                    "\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
                     unix_socket_directories = '{data}'\nfsync = off\n"
                )
                .as_bytes(),
            )
            .unwrap();
        pg.start();
        pg
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    fn start(&self) {
        let data = self.data.to_str().unwrap();
        let log = self.data.join("server.log");
        run(self
            .as_postgres(&[
                "pg_ctl",
                "-D",
                data,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ])
            .stdout(Stdio::null()));
    }

    fn stop(&self, mode: &str) {
        let data = self.data.to_str().unwrap();
        let _ = self
            .as_postgres(&["pg_ctl", "-D", data, "-m", mode, "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}

/// Sorts a load's answers: each must be a success or a clear 503 (`expect_code`), never a
/// hang or another error. Returns (total, ok, refused, slowest refusal in ms).
fn judge(tally: &Tally, phase: u8, expect_code: &str) -> (usize, usize, usize, u128) {
    let (mut total, mut ok, mut refused, mut slowest) = (0, 0, 0, 0);
    for (p, a) in &tally.answers {
        if *p != phase {
            continue;
        }
        total += 1;
        match a {
            Ok(a) if a.ok() => ok += 1,
            Ok(a) => {
                assert_eq!(a.status, 503, "phase {phase}: {a:?}");
                assert_eq!(a.code(), expect_code, "phase {phase}: {a:?}");
                assert!(!a.message().is_empty());
                refused += 1;
                slowest = slowest.max(a.took.as_millis());
            }
            Err(e) => panic!("phase {phase}: a request hung or broke: {e}"),
        }
    }
    (total, ok, refused, slowest)
}

/// 3. PostgreSQL restarts while requests run: every request ends, with success or a clear
///    503; the control plane reconnects by itself and requests succeed again.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_under_load() {
    let _serial = SERIAL.lock().await;
    let pg = Postgres::new();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let _reap = Reap {
        dir: dir.path().to_path_buf(),
        slots: 3640..=3659,
    };
    let (mut up, api) = start_up(dir.path(), "3640-3659", Some(&pg.url()));
    let id = api.capsule().await;
    api.sh(&id, "echo kept > /home/user/mark").await;

    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (api2, id2) = (api.clone(), id.clone());
    let workers = load(
        4,
        phase.clone(),
        stop.clone(),
        tally.clone(),
        move |w, n| {
            let (api, id) = (api2.clone(), id2.clone());
            async move {
                match (w + n as usize) % 3 {
                    0 => api.get("/v1/capsules").await,
                    1 => api.get(&format!("/v1/capsules/{id}")).await,
                    _ => api.exec(&id, "cat /home/user/mark").await,
                }
            }
        },
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Down (connections cut), a few seconds without a database, then up again.
    phase.store(1, Ordering::SeqCst);
    let stopped = Instant::now();
    tokio::task::spawn_blocking({
        let (data, bin) = (pg.data.clone(), pg.bin.clone());
        move || {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .status();
        }
    })
    .await
    .unwrap();
    // Longer than the pool's wait for a connection (5 s): some requests must give up.
    tokio::time::sleep(Duration::from_secs(8)).await;
    tokio::task::spawn_blocking({
        let pg_start = (pg.data.clone(), pg.bin.clone());
        move || {
            let (data, bin) = pg_start;
            run(Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(data.join("server.log"))
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null()));
        }
    })
    .await
    .unwrap();
    let outage = stopped.elapsed();
    let api3 = api.clone();
    let recovered = until_ok(HANG, || api3.get("/v1/capsules")).await;
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let before = judge(&tally, 0, "unavailable");
    let during = judge(&tally, 1, "unavailable");
    let after = judge(&tally, 2, "unavailable");
    assert_eq!(before.0, before.1, "all succeed before the restart");
    assert!(
        during.2 > 0,
        "requests were refused while the database was down"
    );
    assert!(after.0 > 0);
    assert_eq!(after.0, after.1, "all succeed after the restart");
    assert_eq!(api.sh(&id, "cat /home/user/mark").await, "kept\n");
    let c = api.capsule().await;
    assert_eq!(api.delete(&c).await.status, 204);
    assert_eq!(api.delete(&id).await.status, 204);
    up.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    figure(
        "postgres_restart",
        &[
            ("requests", tally.answers.len().to_string()),
            ("before_ok", format!("{}/{}", before.1, before.0)),
            ("during_ok", during.1.to_string()),
            ("during_503", during.2.to_string()),
            ("slowest_503_ms", during.3.to_string()),
            ("outage_ms", outage.as_millis().to_string()),
            (
                "reconnect_after_start_ms",
                recovered.as_millis().to_string(),
            ),
            ("after_ok", format!("{}/{}", after.1, after.0)),
            ("hung", "0".into()),
        ],
    );
}

fn start_agent(data: &Path, port: u16) -> Proc {
    let mut child = Command::new(bin())
        .args(["agent", "--slots", "3660-3679", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .arg("--images")
        .arg(images_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Warnings (a data folder's loose modes fixed) may come first.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.is_empty() || line.starts_with("warning: ") {
        line.clear();
        out.read_line(&mut line).unwrap();
    }
    assert!(line.contains("listening"), "{line}");
    Proc(Some(child))
}

/// 4. The agent is killed with `-9` under load: requests fail fast with `host_unavailable`,
///    and succeed again once it is back (its capsules re-adopted).
#[tokio::test(flavor = "multi_thread")]
async fn agent_kill_9_under_load() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent_dir = dir.path().join("agent");
    let _reap = Reap {
        dir: agent_dir.clone(),
        slots: 3660..=3679,
    };
    let mut agent = start_agent(&agent_dir, port);
    let server_dir = dir.path().join("server");
    let mut server = Proc(Some(
        Command::new(bin())
            .args(["server", "--listen", "127.0.0.1:0", "--agent"])
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&server_dir)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    ));
    let (addr, key) = ready(server.child(), &server_dir);
    let api = Api::new(addr, key);
    let id = api.capsule().await;
    api.sh(
        &id,
        "echo kept > /home/user/mark; (sleep 100000 >/dev/null 2>&1 &)",
    )
    .await;

    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (api2, id2) = (api.clone(), id.clone());
    let workers = load(
        4,
        phase.clone(),
        stop.clone(),
        tally.clone(),
        move |w, n| {
            let (api, id) = (api2.clone(), id2.clone());
            async move {
                if (w + n as usize).is_multiple_of(2) {
                    api.exec(&id, "cat /home/user/mark").await
                } else {
                    api.call(
                        reqwest::Method::POST,
                        &format!("/v1/capsules/{id}/ping"),
                        None,
                    )
                    .await
                }
            }
        },
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    phase.store(1, Ordering::SeqCst);
    let killed = Instant::now();
    agent.kill_9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A create while the agent is away: refused too, and leaves nothing.
    let refused_create = api.create(json!({ "template": "minimal" })).await;
    assert_eq!(refused_create.status, 503, "{refused_create:?}");
    assert_eq!(refused_create.code(), "host_unavailable");

    let mut agent = start_agent(&agent_dir, port);
    let down = killed.elapsed();
    let (api3, id3) = (api.clone(), id.clone());
    let recovered = until_ok(HANG, || api3.exec(&id3, "true")).await;
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let before = judge(&tally, 0, "host_unavailable");
    let during = judge(&tally, 1, "host_unavailable");
    let after = judge(&tally, 2, "host_unavailable");
    assert_eq!(before.0, before.1, "all succeed before the kill");
    assert!(
        during.2 > 0,
        "requests were refused while the agent was away"
    );
    assert!(after.0 > 0);
    assert_eq!(after.0, after.1, "all succeed after the agent is back");
    // Re-adopted: its file and its process are there, and it is still managed.
    assert_eq!(
        api.sh(
            &id,
            "cat /home/user/mark; pgrep -x sleep >/dev/null && echo proc"
        )
        .await,
        "kept\nproc\n"
    );
    let listed = api.get("/v1/capsules").await.unwrap();
    assert_eq!(listed.body.as_array().unwrap().len(), 1, "{listed:?}");
    assert_eq!(listed.body[0]["status"], "running", "{listed:?}");
    let c = api.capsule().await;
    for id in [&c, &id] {
        assert_eq!(api.delete(id).await.status, 204);
    }
    server.stop();
    agent.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    figure(
        "agent_kill_9",
        &[
            ("requests", tally.answers.len().to_string()),
            ("before_ok", format!("{}/{}", before.1, before.0)),
            ("during_503", during.2.to_string()),
            ("during_ok", during.1.to_string()),
            ("slowest_503_ms", during.3.to_string()),
            ("agent_down_ms", down.as_millis().to_string()),
            (
                "recovered_after_restart_ms",
                recovered.as_millis().to_string(),
            ),
            ("after_ok", format!("{}/{}", after.1, after.0)),
            ("hung", "0".into()),
        ],
    );
}

/// 5. 100 pause/resume cycles through the REST API: the process and the file survive each.
#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_100_cycles() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let _reap = Reap {
        dir: dir.path().to_path_buf(),
        slots: 3680..=3699,
    };
    let (mut up, api) = start_up(dir.path(), "3680-3699", None);
    let id = api.capsule().await;
    let sum = api
        .sh(
            &id,
            "head -c 1000000 /dev/urandom > /home/user/data && \
             (nohup sleep 1000000 >/dev/null 2>&1 & echo $! > /home/user/pid) && \
             sha256sum /home/user/data",
        )
        .await;
    let pid = api.sh(&id, "cat /home/user/pid").await;
    let cycles = 100;
    let mut ok = 0;
    for i in 0..cycles {
        let p = api.post(&format!("/v1/capsules/{id}/pause")).await;
        assert_eq!(p.status, 200, "cycle {i}: {p:?}");
        assert_eq!(p.body["status"], "paused", "cycle {i}");
        let r = api.post(&format!("/v1/capsules/{id}/resume")).await;
        assert_eq!(r.status, 200, "cycle {i}: {r:?}");
        assert_eq!(r.body["status"], "running", "cycle {i}");
        // Every tenth cycle, and the last: the file and the process are intact.
        if i % 10 == 9 {
            let got = api
                .sh(
                    &id,
                    &format!(
                        "sha256sum /home/user/data; kill -0 {} && echo alive",
                        pid.trim()
                    ),
                )
                .await;
            assert_eq!(got, format!("{sum}alive\n"), "cycle {i}");
        }
        ok += 1;
    }
    assert_eq!(api.delete(&id).await.status, 204);
    up.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    figure(
        "pause_resume",
        &[("cycles", cycles.to_string()), ("ok", ok.to_string())],
    );
}
