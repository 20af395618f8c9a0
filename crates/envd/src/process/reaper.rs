//! The one place envd waits for children. envd is a child subreaper (PID 1 in a capsule), so
//! it also collects orphaned grandchildren; every exit status is handed to whoever spawned
//! that pid, and unclaimed ones are just reaped so no zombie stays.

use std::{
    collections::HashMap,
    io,
    process::{Child, Command},
    sync::{Arc, Mutex},
};

use nix::{
    errno::Errno,
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Collects exit statuses; see the module doc.
#[derive(Debug, Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
}

impl Reaper {
    /// Makes this process a subreaper and starts reaping on every `SIGCHLD`.
    pub fn start() -> io::Result<Arc<Reaper>> {
        // Not fatal: without it orphans go to the real init, which reaps them.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "could not become a child subreaper");
        }
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = Arc::new(Reaper::default());
        let weak = Arc::downgrade(&reaper);
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                match weak.upgrade() {
                    Some(r) => r.reap(),
                    None => break,
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and returns the child with a receiver of its exit. Spawning happens under
    /// the waiter lock, so the reaper cannot collect the pid before it is registered.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<Exit>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        // Pids fit in i32 on Linux.
        waiters.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Collects every child that has exited.
    pub fn reap(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return;
                }
            };
            match waiters.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => tracing::debug!(pid = pid.as_raw(), ?exit, "reaped an orphan"),
            }
        }
    }
}
