//! The QEMU backend: `-M microvm` with virtio-mmio block and net, guest RAM in a shared file
//! (`memory-backend-file,share=on`), driven over QMP, QEMU's seccomp sandbox on.
//!
//! [`QemuVm`] is made by [`crate::Backend::Qemu`]; its command line is in `args`, its process
//! (spawn, supervision, QMP) in `process`, the [`crate::Vmm`] contract in `vmm`.

mod args;
mod process;
mod vmm;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::{oneshot, watch};

use crate::{
    config::VmConfig,
    error::{Result, VmmError},
    qmp::Qmp,
    VmStatus,
};

const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
const CONSOLE_TAIL_BYTES: u64 = 4096;
/// QEMU's machine type (also named in every saved state's configuration section).
pub(crate) const MACHINE: &str = "microvm";

/// A QEMU process and what watches it.
#[derive(Debug)]
struct Process {
    pid: u32,
    qmp: Qmp,
    /// Becomes `Some(status)` when the process has exited.
    exited: watch::Receiver<Option<String>>,
    kill: Option<oneshot::Sender<()>>,
}

impl Process {
    fn has_exited(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// Kills the process (if alive) and waits for it to be reaped.
    async fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        let _ = self.exited.wait_for(|e| e.is_some()).await;
    }
}

/// One VM driven by QEMU.
#[derive(Debug)]
pub struct QemuVm {
    config: VmConfig,
    process: Option<Process>,
    status: VmStatus,
    /// Paused after [`Vmm::save_keeping`]: its state is saved, the process stopped but kept.
    kept: bool,
}

/// The guest TSC frequency to announce (TCG microvm cannot calibrate it).
pub fn tsc_khz() -> u32 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|mhz| (mhz * 1000.0) as u32)
        .filter(|k| *k > 0)
        .unwrap_or(2_000_000)
}

impl QemuVm {
    pub fn new(config: VmConfig) -> Result<QemuVm> {
        config.validate()?;
        Ok(QemuVm {
            config,
            process: None,
            status: VmStatus::NotStarted,
            kept: false,
        })
    }

    /// Takes over a QEMU that a previous agent started (it survived that agent): checks that
    /// `pid` really is the QEMU of `config.dir`, watches it through a pidfd and reconnects to
    /// its QMP socket.
    pub async fn adopt(config: VmConfig, pid: u32) -> Result<QemuVm> {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map_err(|e| VmmError::io(format!("reading the command line of pid {pid}"), e))?;
        let qmp_arg = config.qmp_path().display().to_string();
        let ours = String::from_utf8_lossy(&cmdline).contains(&qmp_arg);
        if !ours {
            return Err(VmmError::Config(format!(
                "pid {pid} is not the QEMU of {}",
                config.dir.display()
            )));
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd < 0 {
            return Err(VmmError::io("pidfd_open", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
        let owned =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the pidfd from here on; it stays open for its whole life.
        let pidfd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        }
        .map_err(|e| VmmError::io("watching the adopted QEMU", std::io::Error::from(e)))?;
        let (exit_tx, exit_rx) = watch::channel(None);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                _ = pidfd.readable() => {}
                _ = kill_rx => {
                    // SAFETY: plain kill(2) of the process the pidfd watches.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    let _ = pidfd.readable().await;
                }
            }
            let _ = exit_tx.send(Some("exited (adopted process)".to_string()));
        });
        let qmp = Qmp::connect(&config.qmp_path(), QMP_CONNECT_TIMEOUT).await;
        let mut vm = QemuVm {
            config,
            process: None,
            status: VmStatus::NotStarted,
            kept: false,
        };
        let qmp = match qmp {
            Ok(q) => q,
            Err(e) => {
                let _ = kill_tx.send(());
                return Err(e);
            }
        };
        vm.process = Some(Process {
            pid,
            qmp,
            exited: exit_rx,
            kill: Some(kill_tx),
        });
        vm.status = match vm.run_state().await?.as_str() {
            "running" => VmStatus::Running,
            _ => VmStatus::Paused,
        };
        Ok(vm)
    }

    /// A VM whose state is saved (no process) — for an agent re-adopting a paused capsule.
    pub fn saved(config: VmConfig) -> Result<QemuVm> {
        let mut vm = QemuVm::new(config)?;
        vm.status = VmStatus::Saved;
        Ok(vm)
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if let Some(p) = self.process.as_mut() {
            if let Some(k) = p.kill.take() {
                let _ = k.send(());
            }
        }
    }
}

/// The QEMU processes whose command line mentions `dir` (a capsule folder or a folder of
/// them), with their command lines: for cleanup after a crash and for leak checks.
pub fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains("qemu-system") && cmd.contains(&needle)).then_some((pid, cmd))
        })
        .collect()
}

/// Where `qemu-system-x86_64` is (on `PATH`).
pub fn default_qemu() -> PathBuf {
    PathBuf::from("qemu-system-x86_64")
}
