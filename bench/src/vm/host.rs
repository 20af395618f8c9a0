//! Host-side helpers of the VM bench: free ports, scratch files, QEMU processes found through
//! `/proc`, envd's health, and memory figures (`/proc/meminfo`, RSS/PSS from `smaps`).

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use wrenn_vmm::{accel::Accel, qemu::default_qemu, snapshot::TemplateBoot, Net};

use super::{HEALTH_ATTEMPT, READY};

/// How the bench boots a template for its snapshot: QEMU's user network with envd forwarded
/// to a free loopback port (no network slot needed).
pub(super) fn template_boot(accel: Accel, vcpus: u32, memory_mib: u32) -> Result<TemplateBoot> {
    let envd = free_addr()?;
    Ok(TemplateBoot {
        vcpus,
        memory_mib,
        accel,
        qemu: default_qemu(),
        net: Net::UserForward { host: envd },
        envd,
        ready_timeout: READY,
    })
}

/// A loopback address nobody listens on right now.
pub(super) fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(l.local_addr()?)
}

/// Copies the named files from `from` to `to` (sparse), off the async threads.
pub(super) async fn copy_files(
    from: &Path,
    to: &Path,
    names: &'static [&'static str],
) -> Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || -> Result<()> {
        for f in names {
            cp_sparse(&from.join(f), &to.join(f))?;
        }
        Ok(())
    })
    .await
    .context("the copying thread")?
}

/// A new, empty directory `work/name`.
pub(super) fn fresh_dir(work: &Path, name: &str) -> Result<PathBuf> {
    let dir = work.join(name);
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub(super) fn qemu_version() -> Result<String> {
    let out = Command::new(default_qemu())
        .arg("--version")
        .output()
        .context("running qemu-system-x86_64 --version (is QEMU installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("QEMU (unknown version)")
        .trim()
        .replace("QEMU emulator version", "QEMU"))
}

/// Runs a helper tool to completion; its stderr becomes the error.
pub(super) fn run_tool(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

pub(super) fn cp_sparse(from: &Path, to: &Path) -> Result<()> {
    run_tool(Command::new("cp").arg("--sparse=always").arg(from).arg(to))
}

/// The pids of QEMU processes whose command line names `dir`.
pub(super) fn qemu_under(dir: &Path) -> Vec<u32> {
    wrenn_vmm::qemu::processes_under(dir)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// The pids of this process's QEMU children, running or not yet reaped.
pub(super) fn qemu_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == me && comm.starts_with("qemu-system")).then_some(pid)
        })
        .collect()
}

/// Waits (a little) for QEMUs that were just killed to disappear; the pids still there.
pub(super) fn wait_no_qemu_under(dir: &Path, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = qemu_under(dir);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One `GET /health` like `wrenn-vmm` sends it (1 s for the whole attempt); true on a 204.
pub(super) fn health_204(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, HEALTH_ATTEMPT)?;
        s.set_read_timeout(Some(HEALTH_ATTEMPT))?;
        s.set_write_timeout(Some(HEALTH_ATTEMPT))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: envd\r\nConnection: close\r\n\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"HTTP/1.1 204"))
    };
    attempt().unwrap_or(false)
}

pub(super) fn images_log_real_lines(log: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(log).ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("real"))
            .map(str::to_owned)
            .collect(),
    )
}

/// `MemTotal` and `MemAvailable` from /proc/meminfo, in KiB.
pub(super) fn meminfo() -> Result<(u64, u64)> {
    let text = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} line in /proc/meminfo"))
    };
    Ok((field("MemTotal:")?, field("MemAvailable:")?))
}

/// (`Rss`, `Pss`) of a process from /proc/PID/smaps_rollup, in KiB.
pub(super) fn rss_pss_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} line in {path}"))
    };
    Ok((field("Rss:")?, field("Pss:")?))
}

/// The summed `Pss` of a process's mappings of the file `file`, from /proc/PID/smaps, in KiB.
pub(crate) fn mapping_pss_kib(pid: u32, file: &Path) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let want = file.to_string_lossy();
    let mut inside = false;
    let mut kib = 0;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: "start-end perms offset dev inode [path]".
            inside = line.split_whitespace().nth(5) == Some(want.as_ref());
        } else if inside {
            if let Some(v) = line.strip_prefix("Pss:") {
                kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    Ok(kib)
}

/// The summed `Pss` of a process's anonymous executable mappings (QEMU's TCG translated-code
/// buffer), from /proc/PID/smaps, in KiB.
pub(crate) fn anon_exec_pss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut inside = false;
    let mut kib = 0;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let mut f = line.split_whitespace();
            let perms = f.nth(1).unwrap_or("");
            inside = perms.contains('x') && f.nth(3).is_none();
        } else if inside {
            if let Some(v) = line.strip_prefix("Pss:") {
                kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    Ok(kib)
}
