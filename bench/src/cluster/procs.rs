//! The cluster under test: a real `wrenn up` (its built-in host untagged, so the bench's
//! creates never land there) and `wrenn agent`s registered to it as the cluster tests do
//! (`POST /v1/hosts` as the admin, then `wrenn agent --register TOKEN --control-plane URL
//! --address 127.0.0.(2+i):PORT`), each host tagged `bench` and `h{i}`. Slots 3440–3479 only:
//! `wrenn up` 3440–3443, agent `i` 3444+12i–3455+12i. Stopped with SIGINT (then SIGKILL) on
//! drop, then every QEMU under the data folder killed and every network namespace of the
//! range removed.

use std::{
    io::{BufRead, BufReader},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::rest::Rest;

/// Every slot the bench may use.
pub const SLOTS: RangeInclusive<u32> = 3440..=3479;
const UP_SLOTS: &str = "3440-3443";
const AGENT_FIRST_SLOT: u32 = 3444;
const SLOTS_PER_AGENT: u32 = 12;
/// The most agents the slot range has room for.
pub const MAX_AGENTS: usize = 3;
/// How long a process may take to print its ready line, or a host to come online.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// A child process, stopped with SIGINT (SIGKILL after 30 s) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout piped and waits (at most [`START_TIMEOUT`]) for a line containing
/// `marker`; the line. Stdout is drained afterwards so the child never blocks on it.
fn spawn_until(mut cmd: Command, marker: &'static str, what: &str) -> Result<(Proc, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Proc(cmd.spawn().with_context(|| format!("starting {what}"))?);
    let stdout = child.0.stdout.take().context("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = tx.send(line);
                break;
            }
        }
        for _ in lines {}
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => Ok((child, line)),
        Err(_) => bail!("{what} printed no {marker:?} line within {START_TIMEOUT:?}"),
    }
}

/// A free TCP port on `ip` (a loopback address).
fn free_port(ip: &str) -> Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// One `wrenn up` and its registered agents.
pub struct Cluster {
    pub rest: Rest,
    /// Each agent's data folder (its capsules under `capsules/`).
    pub agent_dirs: Vec<PathBuf>,
    // Agents first: they stop before the control plane.
    agents: Vec<Proc>,
    up: Option<Proc>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `wrenn up` and `agents` registered agents, and waits until every host is online.
    pub async fn start(
        wrenn: &Path,
        images: &Path,
        template: &str,
        agents: usize,
    ) -> Result<Cluster> {
        anyhow::ensure!(
            agents <= MAX_AGENTS,
            "at most {MAX_AGENTS} agents (slots {SLOTS:?})"
        );
        let dir = tempfile::tempdir_in("/var/tmp").context("a data folder")?;
        let up_dir = dir.path().join("up");
        let mut cmd = Command::new(wrenn);
        cmd.args(["up", "--listen", "127.0.0.1:0", "--slots", UP_SLOTS])
            .arg("--data-dir")
            .arg(&up_dir)
            .arg("--images")
            .arg(images)
            .env("WRENN_TEMPLATES", template)
            .env_remove("DATABASE_URL");
        let (up, line) = spawn_until(cmd, "Wrenn is up at ", "wrenn up")?;
        let base = line
            .split("Wrenn is up at ")
            .nth(1)
            .context("no address")?
            .trim()
            .to_string();
        let key = std::fs::read_to_string(up_dir.join("admin-api-key"))?
            .trim()
            .to_string();
        let rest = Rest::new(base, key)?;
        let mut cluster = Cluster {
            rest,
            agent_dirs: Vec::new(),
            agents: Vec::new(),
            up: Some(up),
            dir,
        };
        for i in 0..agents {
            cluster.register(wrenn, images, i).await?;
        }
        Ok(cluster)
    }

    /// Makes host `i` (tags `bench`, `h{i}`), starts its agent with the registration token and
    /// waits until the host is online.
    async fn register(&mut self, wrenn: &Path, images: &Path, i: usize) -> Result<()> {
        let made = self
            .rest
            .call(
                reqwest::Method::POST,
                "/v1/hosts",
                Some(json!({ "type": "regular", "tags": ["bench", format!("h{i}")] })),
            )
            .await?;
        let id = made["host"]["id"]
            .as_str()
            .context("no host id")?
            .to_string();
        let token = made["registration_token"]
            .as_str()
            .context("no registration token")?;
        let ip = format!("127.0.0.{}", 2 + i);
        let address = format!("{ip}:{}", free_port(&ip)?);
        let first = AGENT_FIRST_SLOT + SLOTS_PER_AGENT * i as u32;
        let data = self.dir.path().join(format!("agent{i}"));
        let mut cmd = Command::new(wrenn);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&data)
            .arg("--images")
            .arg(images)
            .args([
                "--slots",
                &format!("{first}-{}", first + SLOTS_PER_AGENT - 1),
            ])
            .args(["--heartbeat-every", "1"])
            .args(["--register", token])
            .args(["--control-plane", &self.rest.base])
            .args(["--address", &address])
            .env_remove("WRENN_REGISTER")
            .env_remove("WRENN_CONTROL_PLANE")
            .env("RUST_LOG", "warn");
        let (agent, _) = spawn_until(cmd, "listening on", &format!("agent {i}"))?;
        self.agents.push(agent);
        self.agent_dirs.push(data);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let h = self
                .rest
                .call(reqwest::Method::GET, &format!("/v1/hosts/{id}"), None)
                .await?;
            if h["status"] == "online" && h["specs"]["cpu_cores"].as_u64().unwrap_or(0) > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("host {id} (agent {i}) is {}, not online", h["status"]);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How many capsule folders each agent holds now.
    pub fn capsules_per_agent(&self) -> Vec<usize> {
        self.agent_dirs
            .iter()
            .map(|d| {
                std::fs::read_dir(d.join("capsules"))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.agents.clear();
        self.up = None;
        for (pid, _) in wrenn_vmm::qemu::processes_under(self.dir.path()) {
            // SAFETY: kill(2) of a QEMU whose command line names this bench's own folder.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for n in SLOTS {
            let ns = format!("wrenn-{n}");
            if Path::new("/run/netns").join(&ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
    }
}
