//! The QEMU backend: `-M microvm` with virtio-mmio block and net, guest RAM in a shared file
//! (`memory-backend-file,share=on`), driven over QMP, QEMU's seccomp sandbox on.
//!
//! Pause is `stop`; save writes only device state (`x-ignore-shared`: RAM stays in the memory
//! file) through a descriptor passed over QMP, then QEMU exits. Restore starts QEMU with
//! `-incoming defer` on the same files and loads that state.

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
    sync::{oneshot, watch},
    time::Instant,
};

use crate::{
    accel::Accel,
    config::{Net, VmConfig, GUEST_GATEWAY, GUEST_IP, GUEST_MAC, GUEST_PREFIX},
    error::{Result, VmmError},
    files,
    qmp::Qmp,
    VmStatus, Vmm,
};

const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
const CONSOLE_TAIL_BYTES: u64 = 4096;
/// TCG translation cache per VM, MiB.
const TCG_TB_MIB: u32 = 32;

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

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The pid of the running QEMU, if any.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// A receiver that turns `Some(status)` when QEMU exits (for supervisors).
    pub fn death_watch(&self) -> Option<watch::Receiver<Option<String>>> {
        self.process.as_ref().map(|p| p.exited.clone())
    }

    fn args(&self, incoming: bool) -> Vec<String> {
        let c = &self.config;
        let mem = format!("{}M", c.memory_mib);
        let mut machine = String::from("microvm,memory-backend=mem0");
        let mut kernel_args = format!(
            "console=ttyS0 quiet panic=-1 init_on_free=1 wrenn.ip={GUEST_IP}/{GUEST_PREFIX},{GUEST_GATEWAY}"
        );
        let mut a: Vec<String> = Vec::new();
        match c.accel {
            Accel::Kvm => a.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]),
            Accel::Tcg => {
                machine.push_str(",pit=on,pic=on,rtc=on");
                kernel_args.push_str(&format!(" tsc_early_khz={}", tsc_khz()));
                // A bounded translation cache keeps QEMU's own memory small (the default grows
                // to hundreds of MiB per VM).
                a.extend([
                    "-accel".into(),
                    format!("tcg,tb-size={TCG_TB_MIB}"),
                    "-cpu".into(),
                    "max".into(),
                ]);
            }
        }
        a.extend([
            "-M".into(),
            machine,
            "-m".into(),
            mem.clone(),
            "-smp".into(),
            c.vcpus.to_string(),
            "-object".into(),
            format!(
                "memory-backend-file,id=mem0,size={mem},mem-path={},share=on",
                c.memory_path().display()
            ),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-chardev".into(),
            format!("file,id=con0,path={},append=on", c.console_path().display()),
            "-serial".into(),
            "chardev:con0".into(),
            "-drive".into(),
            format!(
                "id=root,file={},format={},if=none,cache=writeback,discard=unmap",
                c.disk.display(),
                c.disk_format.as_str()
            ),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", c.qmp_path().display()),
            "-sandbox".into(),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
        ]);
        // A restore brings the running kernel back in guest memory: loading the kernel and
        // initrd again would only cost QEMU ~15 MiB of copies it keeps for a reboot.
        if !incoming {
            a.extend([
                "-kernel".into(),
                c.kernel.display().to_string(),
                "-initrd".into(),
                c.initrd.display().to_string(),
                "-append".into(),
                kernel_args,
            ]);
        }
        match &c.net {
            Net::None => {}
            Net::UserForward { host } => a.extend([
                "-netdev".into(),
                format!(
                    "user,id=n0,net=169.254.0.0/24,host={GUEST_GATEWAY},dhcpstart=169.254.0.100,restrict=on,hostfwd=tcp:{}:{}-{GUEST_IP}:{}",
                    host.ip(),
                    host.port(),
                    crate::config::ENVD_PORT
                ),
            ]),
            Net::Tap { tap, .. } => a.extend([
                "-netdev".into(),
                format!("tap,id=n0,ifname={tap},script=no,downscript=no,vnet_hdr=off"),
            ]),
        }
        if c.net != Net::None {
            a.extend([
                "-device".into(),
                format!("virtio-net-device,netdev=n0,mac={GUEST_MAC}"),
            ]);
        }
        if incoming {
            a.extend(["-incoming".into(), "defer".into()]);
        }
        a
    }

    async fn spawn(&mut self, incoming: bool) -> Result<()> {
        if self.process.is_some() {
            return Err(VmmError::State {
                action: "start",
                state: self.status.to_string(),
            });
        }
        let c = &self.config;
        let _ = std::fs::remove_file(c.qmp_path());
        // Every file QEMU writes in the VM folder is 0600 before QEMU opens it (QEMU would
        // create the memory file and the console log 0644): made here, explicitly.
        let log = files::open_private(&c.qemu_log_path(), false)?;
        drop(files::open_private(&c.console_path(), false)?);
        if !c.memory_path().exists() {
            // An empty file: QEMU sizes it.
            drop(files::open_private(&c.memory_path(), true)?);
        } else {
            files::private_file(&c.memory_path())?;
        }
        let mut cmd = Command::new(&c.qemu);
        cmd.args(self.args(incoming))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        // Opened here, used in the child between fork and exec, closed after the spawn.
        let ns = match &c.net {
            Net::Tap { netns, .. } => Some(
                std::fs::File::open(Path::new("/run/netns").join(netns))
                    .map_err(|e| VmmError::io(format!("opening netns {netns}"), e))?,
            ),
            _ => None,
        };
        let procs = match &c.cgroup {
            Some(g) => g.open_procs()?,
            None => Vec::new(),
        };
        let ns_fd = ns.as_ref().map(|f| f.as_raw_fd());
        let procs_fds = crate::cgroup::raw(&procs);
        // SAFETY: only async-signal-safe calls (write(2), setns(2)) on descriptors that stay
        // open until after the spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                crate::cgroup::join_from_child(&procs_fds)?;
                if let Some(fd) = ns_fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        drop((ns, procs));
        self.supervise(child).await
    }

    async fn supervise(&mut self, child: std::io::Result<tokio::process::Child>) -> Result<()> {
        let mut child = child.map_err(|source| VmmError::Spawn {
            program: self.config.qemu.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let (exit_tx, exit_rx) = watch::channel(None);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let text = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = exit_tx.send(Some(text));
        });
        let mut exited = exit_rx.clone();
        let qmp_path = self.config.qmp_path();
        let qmp = tokio::select! {
            q = Qmp::connect(&qmp_path, QMP_CONNECT_TIMEOUT) => q,
            status = exited.wait_for(|e| e.is_some()) => {
                let status = status.map(|s| s.clone()).unwrap_or(None);
                Err(self.exited_error(status))
            }
        };
        let qmp = match qmp {
            Ok(q) => q,
            Err(e) => {
                let _ = kill_tx.send(());
                return Err(e);
            }
        };
        // QEMU made the socket; the folder is private already, the socket is too.
        let _ = files::private_file(&qmp_path);
        tracing::debug!(pid, dir = %self.config.dir.display(), accel = self.config.accel.as_str(), "QEMU started");
        self.process = Some(Process {
            pid,
            qmp,
            exited: exit_rx,
            kill: Some(kill_tx),
        });
        Ok(())
    }

    fn exited_error(&self, status: Option<String>) -> VmmError {
        let mut console = files::tail(&self.config.console_path(), CONSOLE_TAIL_BYTES);
        let qemu_log = files::tail(&self.config.qemu_log_path(), 1024);
        if !qemu_log.trim().is_empty() {
            console.push_str("\n--- qemu ---\n");
            console.push_str(&qemu_log);
        }
        VmmError::Exited {
            status: status.unwrap_or_else(|| "unknown status".into()),
            console,
        }
    }

    /// The running process, or the error that says why there is none.
    fn live(&mut self, action: &'static str) -> Result<&mut Process> {
        if let Some(p) = &self.process {
            if let Some(status) = p.has_exited() {
                let err = self.exited_error(Some(status));
                self.process = None;
                self.status = VmStatus::Failed(err.to_string());
                return Err(err);
            }
        }
        let state = self.status.to_string();
        self.process
            .as_mut()
            .ok_or(VmmError::State { action, state })
    }

    /// Grows the running VM's disk to `bytes` (the guest sees the new size at once; growing
    /// its filesystem is the guest's business).
    pub async fn grow_disk(&mut self, bytes: u64) -> Result<()> {
        self.qmp(
            "grow the disk of",
            "block_resize",
            Some(serde_json::json!({ "device": "root", "size": bytes })),
        )
        .await
        .map(|_| ())
    }

    async fn qmp(
        &mut self,
        action: &'static str,
        command: &str,
        args: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let result = {
            let p = self.live(action)?;
            p.qmp.execute(command, args).await
        };
        if result.is_err() {
            // A QMP failure may mean QEMU died: prefer that error.
            if let Some(p) = &mut self.process {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(status) = p.has_exited() {
                    return Err(self.exited_error(Some(status)));
                }
            }
        }
        result
    }

    async fn run_state(&mut self) -> Result<String> {
        let v = self.qmp("query", "query-status", None).await?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }

    async fn wait_migration(&mut self, what: &str) -> Result<()> {
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        loop {
            let v = self.qmp("migrate", "query-migrate", None).await?;
            match v["status"].as_str().unwrap_or("") {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(VmmError::Qmp(format!(
                        "{what} failed: {}",
                        v["error-desc"].as_str().unwrap_or("no reason given")
                    )))
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(VmmError::Timeout {
                    after: MIGRATION_TIMEOUT,
                    what: what.into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn ignore_shared(&mut self) -> Result<()> {
        self.qmp(
            "migrate",
            "migrate-set-capabilities",
            Some(json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})),
        )
        .await
        .map(|_| ())
    }

    async fn pass_fd(&mut self, name: &str, file: &std::fs::File) -> Result<()> {
        let p = self.live("pass a file to")?;
        p.qmp
            .execute_with_fd("getfd", Some(json!({ "fdname": name })), file.as_raw_fd())
            .await
            .map(|_| ())
    }
}

impl Vmm for QemuVm {
    async fn boot(&mut self) -> Result<()> {
        if self.status != VmStatus::NotStarted {
            return Err(VmmError::State {
                action: "boot",
                state: self.status.to_string(),
            });
        }
        self.spawn(false).await?;
        self.status = VmStatus::Running;
        Ok(())
    }

    async fn wait_ready(&mut self, addr: SocketAddr, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut exited = self.live("wait for")?.exited.clone();
        loop {
            tokio::select! {
                ok = health(addr) => if ok { return Ok(started.elapsed()) },
                status = exited.wait_for(|e| e.is_some()) => {
                    let status = status.map(|s| s.clone()).unwrap_or(None);
                    let err = self.exited_error(status);
                    self.process = None;
                    self.status = VmStatus::Failed(err.to_string());
                    return Err(err);
                }
            }
            if Instant::now() > deadline {
                return Err(VmmError::Timeout {
                    after: timeout,
                    what: format!("envd at {addr} to answer /health"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn pause(&mut self) -> Result<()> {
        if self.status != VmStatus::Running {
            return Err(VmmError::State {
                action: "pause",
                state: self.status.to_string(),
            });
        }
        self.qmp("pause", "stop", None).await?;
        self.status = VmStatus::Paused;
        Ok(())
    }

    async fn save(&mut self, state: &Path) -> Result<()> {
        if self.status != VmStatus::Paused {
            return Err(VmmError::State {
                action: "save",
                state: self.status.to_string(),
            });
        }
        self.ignore_shared().await?;
        // Device state holds guest secrets too (registers, queues): 0600.
        let file = files::open_private(state, true)?;
        self.pass_fd("wrenn-save", &file).await?;
        drop(file);
        self.qmp("save", "migrate", Some(json!({"uri": "fd:wrenn-save"})))
            .await?;
        self.wait_migration("saving VM state").await?;
        // The state is on disk and RAM is in the memory file: QEMU can go.
        let _ = self.qmp("save", "quit", None).await;
        if let Some(p) = self.process.take() {
            p.kill().await;
        }
        let _ = std::fs::remove_file(self.config.qmp_path());
        self.status = VmStatus::Saved;
        Ok(())
    }

    async fn restore(&mut self, state: &Path) -> Result<()> {
        if !matches!(self.status, VmStatus::NotStarted | VmStatus::Saved) {
            return Err(VmmError::State {
                action: "restore",
                state: self.status.to_string(),
            });
        }
        if !self.config.memory_path().is_file() {
            return Err(VmmError::Config(format!(
                "restore needs the memory file {}",
                self.config.memory_path().display()
            )));
        }
        let file = std::fs::File::open(state)
            .map_err(|e| VmmError::io(format!("opening {}", state.display()), e))?;
        self.spawn(true).await?;
        let loaded: Result<VmStatus> = async {
            self.ignore_shared().await?;
            self.pass_fd("wrenn-restore", &file).await?;
            self.qmp(
                "restore",
                "migrate-incoming",
                Some(json!({"uri": "fd:wrenn-restore"})),
            )
            .await?;
            self.wait_migration("loading VM state").await?;
            match self.run_state().await?.as_str() {
                "running" => Ok(VmStatus::Running),
                _ => Ok(VmStatus::Paused),
            }
        }
        .await;
        match loaded {
            Ok(status) => {
                self.status = status;
                Ok(())
            }
            Err(e) => {
                if let Some(p) = self.process.take() {
                    p.kill().await;
                }
                self.status = VmStatus::Failed(e.to_string());
                Err(e)
            }
        }
    }

    async fn resume(&mut self) -> Result<()> {
        if self.status != VmStatus::Paused {
            return Err(VmmError::State {
                action: "resume",
                state: self.status.to_string(),
            });
        }
        self.qmp("resume", "cont", None).await?;
        self.status = VmStatus::Running;
        Ok(())
    }

    async fn stop(&mut self) -> Result<()> {
        if let Some(p) = self.process.take() {
            p.kill().await;
        }
        let _ = std::fs::remove_file(self.config.qmp_path());
        self.status = VmStatus::Stopped;
        Ok(())
    }

    fn status(&self) -> VmStatus {
        match &self.process {
            Some(p) if p.has_exited().is_some() => VmStatus::Failed(format!(
                "QEMU exited: {}",
                p.has_exited().unwrap_or_default()
            )),
            _ => self.status.clone(),
        }
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

/// One `GET /health` over HTTP/1.1; true on a 2xx answer.
async fn health(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: envd\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        let head = std::str::from_utf8(&buf[..n]).ok()?;
        Some(head.starts_with("HTTP/1.1 2"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(1000), attempt).await,
        Ok(Some(true))
    )
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
