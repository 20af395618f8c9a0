//! The QEMU process of a VM: spawned inside its network namespace and cgroups, supervised by a
//! task that notices its death at once, and driven over QMP.

use std::{net::SocketAddr, os::fd::AsRawFd, path::Path, process::Stdio, time::Duration};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
    sync::{oneshot, watch},
    time::Instant,
};

use super::{Process, QemuVm, CONSOLE_TAIL_BYTES, MIGRATION_TIMEOUT, QMP_CONNECT_TIMEOUT};

/// Longest wait for a migration event before asking QEMU for the status anyway.
const MIGRATION_EVENT_WAIT: Duration = Duration::from_millis(250);
use crate::{
    config::Net,
    error::{Result, VmmError},
    files,
    qmp::Qmp,
    VmStatus,
};

impl QemuVm {
    pub(super) async fn spawn(&mut self, incoming: bool) -> Result<()> {
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
        if let crate::memory::MemoryLayout::Template { .. } =
            crate::memory::MemoryLayout::of(&c.dir)
        {
            // The template's file, mapped privately: never created, resized or chmod-ed here.
        } else if !c.memory_path().exists() {
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
            .kill_on_drop(true)
            // A group of its own: ^C in the terminal of `wrenn up` signals the whole foreground
            // group, and QEMU ends on SIGINT, so every capsule died before the shutdown could
            // pause it. Only the agent decides when a VMM ends.
            .process_group(0);
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
        let no_thp = !c.tuning.huge_pages;
        // SAFETY: only async-signal-safe calls (write(2), setns(2), prctl(2)) on descriptors
        // that stay open until after the spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                crate::cgroup::join_from_child(&procs_fds)?;
                // Kept across exec: QEMU's huge-page advice is then ignored.
                if no_thp && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
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

    pub(super) async fn supervise(
        &mut self,
        child: std::io::Result<tokio::process::Child>,
    ) -> Result<()> {
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

    pub(super) fn exited_error(&self, status: Option<String>) -> VmmError {
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
    pub(super) fn live(&mut self, action: &'static str) -> Result<&mut Process> {
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

    pub(super) async fn qmp(
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

    pub(super) async fn run_state(&mut self) -> Result<String> {
        let v = self.qmp("query", "query-status", None).await?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }

    pub(super) async fn wait_migration(&mut self, what: &str) -> Result<()> {
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
            // QEMU announces every change of the migration's status (the `events`
            // capability): no polling while a loaded host takes its time. The bounded wait
            // only guards against an event that never comes.
            let p = self.live("migrate")?;
            p.qmp.wait_event("MIGRATION", MIGRATION_EVENT_WAIT).await?;
        }
    }

    /// Migration settings of every save and restore: RAM in a shared file is not part of the
    /// stream (`x-ignore-shared`), and each status change is an event (`events`).
    pub(super) async fn ignore_shared(&mut self) -> Result<()> {
        self.qmp(
            "migrate",
            "migrate-set-capabilities",
            Some(json!({"capabilities": [
                {"capability": "x-ignore-shared", "state": true},
                {"capability": "events", "state": true},
            ]})),
        )
        .await
        .map(|_| ())
    }

    /// No announcement after a load: by default QEMU ends every incoming migration by having
    /// the guest announce itself (virtio-net `GUEST_ANNOUNCE`: gratuitous ARP, IPv6 neighbour
    /// adverts, link notifications) so that switches learn where a moved VM now is. A restored
    /// VM has not moved on any switch (its network slot is the same point-to-point link), and
    /// under TCG that announcement is guest code translated afresh by every new QEMU: about a
    /// tenth of what a resume runs before envd answers.
    pub(super) async fn no_self_announce(&mut self) -> Result<()> {
        self.qmp(
            "restore",
            "migrate-set-parameters",
            Some(json!({"announce-rounds": 0})),
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn pass_fd(&mut self, name: &str, file: &std::fs::File) -> Result<()> {
        let p = self.live("pass a file to")?;
        p.qmp
            .execute_with_fd("getfd", Some(json!({ "fdname": name })), file.as_raw_fd())
            .await
            .map(|_| ())
    }
}

/// One `GET /health` over HTTP/1.1; true on a 2xx answer.
pub(super) async fn health(addr: SocketAddr) -> bool {
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
