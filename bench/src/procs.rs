//! The servers under test as child processes, and the scratch directory they work in.

use std::{
    ffi::OsString,
    fs,
    io::{self, BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};

use crate::http1::Conn;

/// How long a server may take to print its listening line or to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A scratch directory, removed with everything in it when dropped.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn create(parent: &Path) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!("wrenn-bench-{}-{nanos:08x}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("wrenn-bench: removing {}: {e}", self.0.display());
        }
    }
}

/// Free space on the filesystem holding `dir`, in bytes, as `df` reports it.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A server binary and how to start it. `--listen ADDR` is appended to `args`.
pub struct Target {
    pub name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    /// The first stdout line is this prefix followed by the bound address.
    ready_prefix: &'static str,
}

impl Target {
    pub fn new(
        name: &'static str,
        program: PathBuf,
        args: Vec<OsString>,
        ready_prefix: &'static str,
    ) -> Self {
        Self {
            name,
            program,
            args,
            ready_prefix,
        }
    }

    fn command(&self, listen: SocketAddr) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .arg("--listen")
            .arg(listen.to_string())
            .stdin(Stdio::null());
        cmd
    }

    /// Starts the server on a free port, its stderr going to `log`, and waits for its
    /// listening line.
    pub fn start(&self, log: &Path) -> Result<Running> {
        let mut cmd = self.command(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(Stdio::piped()).stderr(log_file);
        let mut child = ChildGuard(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.program.display()))?,
        );
        let stdout = child.0.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Reads the listening line, then keeps draining stdout so the server never blocks
        // on (or fails writing to) a full or closed pipe.
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            // Warnings (a data folder's loose modes fixed) may come before it.
            let mut line = String::new();
            let first = loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(n) if n > 0 && line.starts_with("warning: ") => continue,
                    r => break r.map(|_| line.clone()),
                }
            };
            let _ = tx.send(first);
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        let fail = |why: String| -> anyhow::Error {
            anyhow::anyhow!("{} did not start: {why}{}", self.name, log_tail(log))
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(fail(format!("reading its stdout: {e}"))),
            Err(_) => return Err(fail(format!("no listening line within {START_TIMEOUT:?}"))),
        };
        let addr = line
            .trim()
            .strip_prefix(self.ready_prefix)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| fail(format!("unexpected first stdout line {line:?}")))?;
        Ok(Running { child, addr })
    }

    /// Spawns the server on a port chosen beforehand and polls `GET /health` until it
    /// answers 2xx: the time from just before spawning to that answer.
    pub fn time_to_ready(&self) -> Result<Duration> {
        let addr = free_port()?;
        let mut cmd = self.command(addr);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let start = Instant::now();
        let mut child = ChildGuard(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.program.display()))?,
        );
        loop {
            if health_ok(addr) {
                return Ok(start.elapsed());
            }
            if let Some(status) = child.0.try_wait()? {
                bail!(
                    "{} exited with {status} before answering /health",
                    self.name
                );
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not answer /health within {START_TIMEOUT:?}",
                    self.name
                );
            }
            thread::sleep(Duration::from_micros(200));
        }
    }
}

/// A started server, killed when dropped.
pub struct Running {
    child: ChildGuard,
    pub addr: SocketAddr,
}

impl Running {
    /// Resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let pid = self.child.0.id();
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS line in /proc/PID/status")
    }
}

/// Kills (SIGKILL) and reaps the child when dropped, whatever happened in between.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<SocketAddr> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Whether `GET /health` on a fresh connection answers 2xx.
pub fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut conn) = Conn::open_timeout(addr, Duration::from_secs(1)) else {
        return false;
    };
    conn.send("GET", "/health", &[("connection", "close")], b"")
        .and_then(|()| conn.read_head())
        .is_ok_and(|head| (200..300).contains(&head.status))
}

/// The last lines of a server's log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n--- {} ---\n{tail}", log.display())
    }
}
