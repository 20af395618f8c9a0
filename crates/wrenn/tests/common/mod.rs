//! What the integration tests of the `wrenn` binary share: where the guest images are, a
//! `wrenn up` command line, waiting for its "up" line, its admin key, and stopping it with
//! SIGINT (as Ctrl-C). Each test file uses the parts it needs (`mod common;`), hence the
//! `dead_code` allowances.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

/// The line a control plane prints once it serves; the address follows it.
const UP_LINE: &str = "Wrenn is up at http://";

/// The built guest images: `WRENN_IMAGES`, or where `make images` puts them.
#[allow(dead_code)]
pub fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

/// An images folder of `dir`'s own (`dir/images`, made on first use): every built template
/// of [`images_dir`] (a folder with its `inputs.sha256`) as hard links. Give it to a server or
/// agent that may make snapshot templates: they land there and are removed with `dir`, never
/// left in the shared folder by a test whose database is gone. With `dir` on another
/// filesystem than the shared folder, the shared folder.
#[allow(dead_code)]
pub fn images_for(dir: &Path) -> PathBuf {
    let own = dir.join("images");
    if own.is_dir() {
        return own;
    }
    // Made as a data folder would be, so a server finds no loose mode to fix.
    private_dir(dir);
    let shared = images_dir();
    // On a filesystem of its own (a test's small disk) links cannot be made, and copies
    // would fill it: the shared folder itself.
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(dir).unwrap().dev() != std::fs::metadata(&shared).unwrap().dev() {
        return shared;
    }
    let making = dir.join("images.making");
    let _ = std::fs::remove_dir_all(&making);
    private_dir(&making);
    for e in std::fs::read_dir(&shared).unwrap().flatten() {
        if e.path().join("inputs.sha256").is_file() {
            link_tree(&e.path(), &making.join(e.file_name()), true);
        }
    }
    std::fs::rename(&making, &own).unwrap();
    own
}

/// A copy of folder `from` at `to` whose files are hard links (cheap; nothing writes into a
/// template's files in place); its `shapes` (other shapes' snapshots) only with `shapes`.
#[allow(dead_code)]
pub fn link_tree(from: &Path, to: &Path, shapes: bool) {
    private_dir(to);
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            if shapes || e.file_name() != "shapes" {
                link_tree(&src, &dst, shapes);
            }
        } else {
            std::fs::hard_link(&src, &dst).unwrap();
        }
    }
}

/// Makes folder `dir` and its missing parents 0700 (what is there is left as it is).
fn private_dir(dir: &Path) {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .unwrap();
}

/// `bin up` on a free loopback port owning network slots `slots`, with its data in `data_dir`,
/// its own images ([`images_for`] `data_dir`) and the templates `templates` (`WRENN_TEMPLATES`), on SQLite
/// (no `DATABASE_URL`); stdout piped (for [`wait_up`]), stderr inherited. Add what a test
/// needs before spawning it.
#[allow(dead_code)]
pub fn up_command(
    bin: impl AsRef<OsStr>,
    slots: &str,
    data_dir: &Path,
    templates: &str,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["up", "--listen", "127.0.0.1:0", "--slots", slots])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--images")
        .arg(images_for(data_dir))
        .env("WRENN_TEMPLATES", templates)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Waits for a control plane's "up" line on its (piped) stdout; returns its address and what
/// it printed before. Keeps draining stdout afterwards so it never blocks on it.
#[allow(dead_code)]
pub fn wait_up(child: &mut Child) -> (String, Vec<String>) {
    let (addr, banner, _) = wait_up_then(child);
    (addr, banner)
}

/// [`wait_up`], and what it prints afterwards (collected as it comes).
#[allow(dead_code)]
pub fn wait_up_then(child: &mut Child) -> (String, Vec<String>, Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("wrenn exited before it was up")
            .unwrap();
        if let Some(url) = line.strip_prefix(UP_LINE) {
            break url.trim().to_string();
        }
        banner.push(line);
    };
    let later = Arc::new(Mutex::new(Vec::new()));
    let keep = later.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            keep.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    (addr, banner, later)
}

/// The admin API key a control plane wrote in `data_dir`.
#[allow(dead_code)]
pub fn admin_key(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin-api-key"))
        .unwrap()
        .trim()
        .to_string()
}

/// Waits for a control plane's "up" line; returns its address and the admin key it wrote.
#[allow(dead_code)]
pub fn ready(child: &mut Child, data_dir: &Path) -> (String, String) {
    let (addr, _) = wait_up(child);
    (addr, admin_key(data_dir))
}

/// SIGINT (as Ctrl-C), then waits up to `tenths` × 100 ms for the end before SIGKILL.
#[allow(dead_code)]
pub fn interrupt(child: &mut Child, tenths: u32) {
    // SAFETY: kill(2) of our own child, not yet reaped (the callers own it until here).
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for _ in 0..tenths {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `wrenn up` (or `wrenn server`), stopped with SIGINT when dropped.
#[allow(dead_code)]
pub struct Up {
    pub child: Child,
    pub addr: String,
    pub key: String,
    /// Its data folder.
    pub data_dir: PathBuf,
    /// What it printed before it was up.
    pub banner: Vec<String>,
    /// What it printed since (collected as it comes).
    pub later: Arc<Mutex<Vec<String>>>,
    /// How long a stop waits after SIGINT before SIGKILL, in tenths of a second.
    patience: u32,
    /// Its data folder, when it is one of its own (removed after the process is stopped).
    _dir: Option<tempfile::TempDir>,
}

#[allow(dead_code)]
impl Up {
    /// A `wrenn up` (this build) with a data folder of its own under `/var/tmp`, owning
    /// network slots `slots`, with templates `templates`; `extra` adds to its command line.
    pub fn in_temp_dir(slots: &str, templates: &str, extra: impl FnOnce(&mut Command)) -> Up {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let mut cmd = up_command(env!("CARGO_BIN_EXE_wrenn"), slots, dir.path(), templates);
        extra(&mut cmd);
        let mut up = Up::spawn(cmd, dir.path(), 300);
        up._dir = Some(dir);
        up
    }

    /// Spawns `cmd` (stdout piped) and waits until it is up; its admin key is read from
    /// `data_dir`. A stop waits `patience` tenths of a second after SIGINT.
    pub fn spawn(mut cmd: Command, data_dir: &Path, patience: u32) -> Up {
        let mut child = cmd.spawn().unwrap();
        let (addr, banner, later) = wait_up_then(&mut child);
        Up {
            child,
            addr,
            key: admin_key(data_dir),
            data_dir: data_dir.to_path_buf(),
            banner,
            later,
            patience,
            _dir: None,
        }
    }

    /// Its images folder (the one [`up_command`] gives it).
    pub fn images(&self) -> PathBuf {
        images_for(&self.data_dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops it (SIGINT, as Ctrl-C) and waits.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already stopped (and reaped: its pid is no longer ours)
        }
        interrupt(&mut self.child, self.patience);
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whatever a test leaves when it fails: the QEMUs under its data folder (they would keep
/// the VM lock's descriptor, and the machine) and the network namespaces of its slots.
#[allow(dead_code)]
pub struct Reap {
    pub dir: PathBuf,
    pub slots: std::ops::RangeInclusive<u32>,
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

/// `wrenn agent-cert` makes a PKI in `dir/pki` (agent name `localhost`), then a `wrenn agent`
/// (data in `dir/agent`, slots `slots`) serves over mTLS on a free loopback port; returns it,
/// once it listens, and its port. Its stdout is drained; stderr inherited.
#[allow(dead_code)]
pub fn mtls_agent(dir: &Path, slots: &str) -> (Child, u16) {
    let bin = env!("CARGO_BIN_EXE_wrenn");
    let pki = dir.join("pki");
    let ok = Command::new(bin)
        .args(["agent-cert", "--name", "localhost", "--dir"])
        .arg(&pki)
        .status()
        .unwrap();
    assert!(ok.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = Command::new(bin)
        .args(["agent", "--slots", slots, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-dir")
        .arg(&pki)
        .arg("--data-dir")
        .arg(dir.join("agent"))
        .arg("--images")
        .arg(images_for(dir))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Warnings (a data folder's loose modes fixed) may come first.
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let mut line = String::new();
    while line.is_empty() || line.starts_with("warning: ") {
        line.clear();
        out.read_line(&mut line).unwrap();
    }
    assert!(line.contains("listening"), "{line}");
    std::thread::spawn(move || for _ in out.lines() {});
    (agent, port)
}
