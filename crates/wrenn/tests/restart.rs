//! What a start and a stop of `wrenn up` promise. Prerequisites: without one (here `qemu-img`)
//! `wrenn up` and `wrenn agent` refuse to start with one line naming what is missing, and
//! nothing listens. Restart: Ctrl-C pauses the running capsules and the next start resumes
//! those (files and processes intact), never one its user paused; one that cannot resume is
//! `error` with the reason. The restart test needs root, QEMU and the `minimal` image; it owns
//! network slots 3300–3319 (the prerequisite tests make none).

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use common::images_dir;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_wrenn");

/// Where `program` is on this machine's `PATH` (plus the sbin folders).
fn which(program: &str) -> PathBuf {
    let path = format!(
        "{}:/usr/local/sbin:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed; the test needs it"))
}

/// A `PATH` folder with links to everything Wrenn runs but `qemu-img`.
fn path_without_qemu_img() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for p in ["qemu-system-x86_64", "nft", "ip"] {
        std::os::unix::fs::symlink(which(p), dir.path().join(p)).unwrap();
    }
    dir
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd` to its end (it must not start serving); returns its exit code and stderr.
fn refused(mut cmd: Command, port: u16) -> (i32, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It exits by itself; if it served instead, this wait would see the port open.
    let mut waited = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "it listens on its port"
        );
        waited += 1;
        if waited > 600 {
            let _ = child.kill();
            panic!("it did not exit");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("Wrenn is up"), "it started: {stdout}");
    assert!(!stdout.contains("listening"), "it started: {stdout}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one error line of a refused start.
fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" WARN ") && !l.contains(" INFO "))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_string()
}

#[test]
fn up_without_qemu_img_refuses_to_start() {
    let path = path_without_qemu_img();
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--slots", "3390-3399", "--data-dir"])
        .arg(data.path())
        .arg("--images")
        .arg(images_dir())
        .env("WRENN_TEMPLATES", "minimal")
        .env("PATH", path.path())
        .env_remove("DATABASE_URL");
    let (code, stderr) = refused(cmd, port);
    assert_ne!(code, 0);
    let line = error_line(&stderr);
    assert_eq!(
        line,
        "error: cannot start, missing: qemu-img (scripts/install-deps.sh installs what this \
         host needs)"
    );
    for present in ["qemu-system-x86_64", "nft", " ip", "template"] {
        assert!(!line.contains(present), "{present} is there: {line}");
    }
    assert!(!data.path().join("agent.sock").exists());
    assert!(!data.path().join("wrenn.db").exists());
}

#[test]
fn agent_without_qemu_img_refuses_to_start() {
    let path = path_without_qemu_img();
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--slots", "3390-3399", "--data-dir"])
        .arg(data.path())
        .arg("--images")
        .arg(images_dir())
        .env("PATH", path.path());
    let (code, stderr) = refused(cmd, port);
    assert_ne!(code, 0);
    let line = error_line(&stderr);
    assert!(
        line.starts_with("error: cannot start, missing: qemu-img"),
        "{line}"
    );
    assert!(!line.contains("template"), "{line}");
}

#[test]
fn every_missing_thing_is_named_in_one_line() {
    let empty_path = tempfile::tempdir().unwrap();
    let no_images = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--slots", "3390-3399", "--data-dir"])
        .arg(data.path())
        .arg("--images")
        .arg(no_images.path())
        .env("WRENN_TEMPLATES", "minimal,python")
        .env_remove("WRENN_ENVD")
        .env("PATH", empty_path.path())
        .env_remove("DATABASE_URL");
    let (code, stderr) = refused(cmd, port);
    assert_ne!(code, 0);
    let line = error_line(&stderr);
    for missing in [
        "qemu-system-x86_64",
        "qemu-img",
        "nft",
        "; ip;",
        "templates minimal, python",
        "--envd",
    ] {
        assert!(line.contains(missing), "{missing} not named: {line}");
    }
}

/// stdout lines of a running `wrenn up`, kept as they come.
#[derive(Clone, Default)]
struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn follow(out: impl std::io::Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[wrenn up] {line}");
                let (v, c) = &*l.0;
                v.lock().unwrap().push(line);
                c.notify_all();
            }
        });
        lines
    }

    /// Waits for a line starting with `prefix` (the process prints it or the test fails by
    /// the harness's time limit); returns it.
    fn wait_for(&self, prefix: &str) -> String {
        let (v, c) = &*self.0;
        let mut g = v.lock().unwrap();
        loop {
            if let Some(l) = g.iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            let (ng, t) = c.wait_timeout(g, Duration::from_secs(300)).unwrap();
            assert!(!t.timed_out(), "no line {prefix:?} in {:?}", *ng);
            g = ng;
        }
    }

    fn all(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }
}

struct Up {
    child: Child,
    addr: String,
    key: String,
    lines: Lines,
}

impl Up {
    fn start(data: &Path) -> Up {
        let mut child = common::up_command(BIN, "3300-3319", data, "minimal")
            .spawn()
            .unwrap();
        let lines = Lines::follow(child.stdout.take().unwrap());
        let addr = lines
            .wait_for("Wrenn is up at http://")
            .trim_start_matches("Wrenn is up at http://")
            .to_string();
        let key = common::admin_key(data);
        Up {
            child,
            addr,
            key,
            lines,
        }
    }

    /// Ctrl-C, and waits for the process to end.
    fn stop(mut self) -> Vec<String> {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "wrenn up ended with {status}");
        // The reader thread sees the end of stdout right after.
        std::thread::sleep(Duration::from_millis(200));
        self.lines.all()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.try_call(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.addr))
            .header("x-api-key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The admin's team (through a log-in as the admin user).
    async fn admin_team(&self, data: &Path) -> String {
        let http = reqwest::Client::new();
        let password = std::fs::read_to_string(data.join("admin-password")).unwrap();
        let login: Value = http
            .post(format!("http://{}/v1/auth/login", self.addr))
            .json(&json!({ "email": "admin@localhost", "password": password.trim() }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let teams: Value = http
            .get(format!("http://{}/v1/teams", self.addr))
            .bearer_auth(login["token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        teams[0]["id"].as_str().unwrap().to_string()
    }

    async fn sh(&self, id: &str, script: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/capsules/{id}/exec"),
                Some(json!({ "cmd": "/bin/sh", "args": ["-c", script] })),
            )
            .await;
        v["stdout"].as_str().unwrap().to_string()
    }

    async fn status(&self, id: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/v1/capsules/{id}"), None)
            .await
    }

    /// Waits until capsule `id` has status `want` (the background resume sets it).
    async fn wait_status(&self, id: &str, want: &str) -> Value {
        loop {
            let c = self.status(id).await;
            if c["status"] == want {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capsules_paused_by_shutdown_resume_after_the_next_start() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let up = Up::start(data.path());
    let create = || async {
        up.call(
            reqwest::Method::POST,
            "/v1/capsules",
            Some(json!({ "template": "minimal" })),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let kept = create().await;
    let user_paused = create().await;
    let damaged = create().await;
    up.sh(&kept, "echo kept > /home/user/mark").await;
    up.call(
        reqwest::Method::POST,
        &format!("/v1/capsules/{kept}/exec"),
        Some(json!({ "cmd": "/bin/sleep", "args": ["100000"], "background": true, "tag": "sleeper" })),
    )
    .await;
    up.sh(&user_paused, "echo paused > /home/user/mark").await;
    up.call(
        reqwest::Method::POST,
        &format!("/v1/capsules/{user_paused}/pause"),
        None,
    )
    .await;

    // Quotas on a real host: a fourth capsule and a snapshot beyond the team's limits are
    // refused before anything is made.
    let quotas = format!("/v1/teams/{}/quotas", up.admin_team(data.path()).await);
    up.call(
        reqwest::Method::PUT,
        &quotas,
        Some(json!({ "capsules": 3, "snapshots": 0 })),
    )
    .await;
    let (st, b) = up
        .try_call(
            reqwest::Method::POST,
            "/v1/capsules",
            Some(json!({ "template": "minimal" })),
        )
        .await;
    assert_eq!(st, 429, "{b}");
    assert_eq!(
        b["error"]["message"],
        "quota capsules exceeded: the team's limit is 3, it uses 3, this request needs 1 more"
    );
    let (st, b) = up
        .try_call(
            reqwest::Method::POST,
            "/v1/snapshots",
            Some(json!({ "sandbox_id": damaged, "name": "over" })),
        )
        .await;
    assert_eq!(st, 429, "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("quota snapshots exceeded: the team's limit is 0"));
    assert_eq!(up.status(&damaged).await["status"], "running", "untouched");
    let q = up
        .call(reqwest::Method::PUT, &quotas, Some(json!({})))
        .await;
    assert_eq!(q["usage"]["capsules"], 3);
    assert_eq!(q["usage"]["vcpus"], 2, "two run, one is paused");

    let lines = up.stop();
    assert!(
        lines
            .iter()
            .any(|l| l == "stopping: pausing running capsules (they resume after the next start)"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "stopped (2 capsules paused)"),
        "{lines:?}"
    );
    // The saved device state of one is damaged while Wrenn is down: it cannot resume.
    std::fs::write(
        data.path().join("capsules").join(&damaged).join("state"),
        b"not a QEMU migration stream",
    )
    .unwrap();

    let up = Up::start(data.path());
    assert_eq!(
        up.lines.wait_for("resuming "),
        "resuming 2 capsules paused at the last shutdown (in the background)"
    );
    // The API serves while they resume; they come back one by one.
    up.call(reqwest::Method::GET, "/v1/capsules", None).await;
    let back = up.wait_status(&kept, "running").await;
    assert_eq!(back["error"], Value::Null);
    assert_eq!(up.sh(&kept, "cat /home/user/mark").await, "kept\n");
    let procs = up
        .call(
            reqwest::Method::GET,
            &format!("/v1/capsules/{kept}/processes"),
            None,
        )
        .await;
    assert!(
        procs["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["tag"] == "sleeper"),
        "the background process survived: {procs}"
    );

    let failed = up.wait_status(&damaged, "error").await;
    let why = failed["error"].as_str().unwrap();
    assert!(why.contains("resuming failed"), "{why}");
    let summary = up.lines.wait_for("resumed 1 of 2 capsules");
    assert_eq!(
        summary,
        "resumed 1 of 2 capsules paused at the last shutdown"
    );
    let all = up.lines.all();
    assert!(
        all.iter().any(|l| l.starts_with(&format!(
            "  {damaged} could not resume, it is in error now: "
        ))),
        "{all:?}"
    );

    // The one its user paused stays paused, and still resumes on request.
    assert_eq!(up.status(&user_paused).await["status"], "paused");
    up.call(
        reqwest::Method::POST,
        &format!("/v1/capsules/{user_paused}/resume"),
        None,
    )
    .await;
    assert_eq!(up.sh(&user_paused, "cat /home/user/mark").await, "paused\n");

    // Recorded like any resume, by the system.
    let audit = up.call(reqwest::Method::GET, "/v1/audit", None).await;
    let by_restart = |outcome: &str, id: &str| {
        audit["entries"].as_array().unwrap().iter().any(|e| {
            e["action"] == "capsule.resume"
                && e["resource"]["id"] == id
                && e["outcome"] == outcome
                && e["actor"]["type"] == "system"
        })
    };
    assert!(by_restart("success", &kept), "{audit}");
    assert!(by_restart("error", &damaged), "{audit}");

    for id in [&kept, &user_paused, &damaged] {
        up.call(reqwest::Method::DELETE, &format!("/v1/capsules/{id}"), None)
            .await;
    }
    up.stop();
}
