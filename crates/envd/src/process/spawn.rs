//! Starting a process: environment, working directory, user switch, pipes or a PTY, and the
//! pump that turns its output and exit into events.

use std::{
    ffi::OsString,
    io,
    os::{fd::OwnedFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use tokio::{io::AsyncReadExt, net::unix::pipe, sync::oneshot, time::Instant};
use wrenn_proto::process::{
    process_event::{data_event::Output, EndEvent},
    ProcessConfig,
};

use super::{
    handle::Proc,
    pty::{self, PtyMaster},
    reaper::{Exit, Reaper},
};
use crate::{
    error::{EnvdError, Result},
    users::User,
};

const READ_CHUNK: usize = 32 * 1024;
/// After the process exits, output still in flight is read for at most this long (a
/// background grandchild may keep the pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one process.
#[derive(Debug)]
pub struct SpawnSpec {
    pub config: ProcessConfig,
    pub tag: Option<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub user: User,
    /// Rows and columns of a PTY, if the process gets one.
    pub pty: Option<(u16, u16)>,
    pub stdin: bool,
    /// Kill the process after this long.
    pub deadline: Option<Duration>,
}

/// Builds the environment as E2B does: envd's `PATH`, the user's `HOME`/`USER`/`LOGNAME`,
/// then `/init` defaults, then the request's own variables.
pub fn environment(
    user: &User,
    defaults: &std::collections::BTreeMap<String, String>,
    request: &std::collections::HashMap<String, String>,
) -> Result<Vec<(String, String)>> {
    let mut env: std::collections::BTreeMap<String, String> = Default::default();
    env.insert(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into()),
    );
    env.insert("HOME".into(), user.home.to_string_lossy().into_owned());
    env.insert("USER".into(), user.name.clone());
    env.insert("LOGNAME".into(), user.name.clone());
    for (k, v) in defaults.iter().chain(request.iter()) {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(EnvdError::InvalidArgument(format!(
                "invalid environment variable {k:?}"
            )));
        }
        env.insert(k.clone(), v.clone());
    }
    Ok(env.into_iter().collect())
}

enum Reader {
    Pipe(pipe::Receiver),
    Pty(Arc<PtyMaster>),
}

impl Reader {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Pipe(p) => p.read(buf).await,
            Reader::Pty(p) => p.read(buf).await,
        }
    }
}

fn pipe_receiver(fd: impl Into<OwnedFd>) -> Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd.into())
        .map_err(|e| EnvdError::io("setting up an output pipe", e))
}

/// Starts the process described by `spec`, registers it and starts its pump.
pub fn spawn(reaper: &Reaper, spec: SpawnSpec) -> Result<(Arc<Proc>, PumpHandle)> {
    let mut cmd = Command::new(&spec.config.cmd);
    cmd.args(&spec.config.args)
        .env_clear()
        .envs(
            spec.env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .current_dir(&spec.cwd);

    let pty_pair = match spec.pty {
        Some((rows, cols)) => {
            Some(pty::open(rows, cols).map_err(|e| EnvdError::io("opening a PTY", e))?)
        }
        None => None,
    };
    match &pty_pair {
        Some(pair) => {
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(Stdio::from)
                    .map_err(|e| EnvdError::io("duplicating the PTY", e))
            };
            cmd.stdin(dup(&pair.slave)?)
                .stdout(dup(&pair.slave)?)
                .stderr(dup(&pair.slave)?);
        }
        None => {
            cmd.stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        }
    }

    let switch_user = nix::unistd::geteuid().is_root();
    if !switch_user && spec.user.uid != nix::unistd::geteuid().as_raw() {
        return Err(EnvdError::PermissionDenied(format!(
            "envd is not root and cannot run processes as '{}'",
            spec.user.name
        )));
    }
    let (uid, gid) = (spec.user.uid, spec.user.gid);
    let groups: Vec<libc::gid_t> = spec.user.groups.clone();
    let is_pty = pty_pair.is_some();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls on data allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if is_pty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if switch_user
                && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let (mut child, exit) = reaper.spawn(&mut cmd).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => EnvdError::InvalidArgument(format!(
            "cannot start {:?}: no such executable",
            spec.config.cmd
        )),
        io::ErrorKind::PermissionDenied => EnvdError::PermissionDenied(format!(
            "cannot start {:?}: permission denied",
            spec.config.cmd
        )),
        io::ErrorKind::InvalidInput => {
            EnvdError::InvalidArgument(format!("cannot start {:?}: {e}", spec.config.cmd))
        }
        _ => EnvdError::io(format!("starting {:?}", spec.config.cmd), e),
    })?;
    drop(cmd); // closes the parent's copies of the PTY slave

    let pid = child.id();
    let (readers, stdin, pty_master) = match pty_pair {
        Some(pair) => {
            drop(pair.slave);
            let master = Arc::new(pair.master);
            (vec![Reader::Pty(master.clone())], None, Some(master))
        }
        None => {
            let mut readers = Vec::with_capacity(2);
            if let Some(out) = child.stdout.take() {
                readers.push(Reader::Pipe(pipe_receiver(out)?));
            }
            if let Some(err) = child.stderr.take() {
                readers.push(Reader::Pipe(pipe_receiver(err)?));
            }
            let stdin = match child.stdin.take() {
                Some(s) => Some(
                    pipe::Sender::from_owned_fd(OwnedFd::from(s))
                        .map_err(|e| EnvdError::io("setting up the stdin pipe", e))?,
                ),
                None => None,
            };
            (readers, stdin, None)
        }
    };
    let proc = Arc::new(Proc::new(pid, spec.tag, spec.config, pty_master, stdin));
    let pump = PumpHandle {
        proc: proc.clone(),
        readers,
        exit,
        deadline: spec.deadline,
    };
    Ok((proc, pump))
}

/// The not-yet-started pump of a process; `run` it after subscribing the first client so it
/// misses nothing.
pub struct PumpHandle {
    proc: Arc<Proc>,
    readers: Vec<Reader>,
    exit: oneshot::Receiver<Exit>,
    deadline: Option<Duration>,
}

/// Go's `ProcessState.String()` wording, which E2B clients show.
fn end_event(exit: Exit) -> EndEvent {
    match exit {
        Exit::Code(code) => EndEvent {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error: None,
        },
        Exit::Signal(sig) => EndEvent {
            exit_code: -1,
            exited: false,
            status: format!("signal: {}", signal_name(sig)),
            error: None,
        },
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "hangup".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGQUIT => "quit".into(),
        libc::SIGILL => "illegal instruction".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGFPE => "floating point exception".into(),
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGPIPE => "broken pipe".into(),
        libc::SIGALRM => "alarm clock".into(),
        libc::SIGTERM => "terminated".into(),
        other => format!("signal {other}"),
    }
}

/// Sends `sig` to the process's whole group (each process leads its own session).
pub fn signal_group(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: plain kill(2) on a process group id we created.
    let rc = unsafe { libc::kill(-(pid as i32), sig) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        // The leader may have left its group; signal it alone.
        // SAFETY: as above, for the single pid.
        if unsafe { libc::kill(pid as i32, sig) } == 0 {
            return Ok(());
        }
        return Err(EnvdError::NotFound(format!("process {pid} has exited")));
    }
    Err(EnvdError::io(format!("signalling process {pid}"), err))
}

impl PumpHandle {
    /// Streams output until the process has exited and its output is drained, then publishes
    /// the end event.
    pub async fn run(self) {
        let PumpHandle {
            proc,
            mut readers,
            mut exit,
            deadline,
        } = self;
        let kill_at = deadline.map(|d| Instant::now() + d);
        let mut killed = false;
        let mut exited: Option<Exit> = None;
        let mut drain_until: Option<Instant> = None;
        let mut open = [!readers.is_empty(), readers.len() > 1];
        let mut buf_a = vec![0u8; READ_CHUNK];
        let mut buf_b = vec![0u8; READ_CHUNK];
        let is_pty = proc.pty.is_some();
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            if exited.is_some() && !open[0] && !open[1] {
                break;
            }
            let split = readers.len().min(1);
            let (first, rest) = readers.split_at_mut(split);
            tokio::select! {
                r = async { first[0].read(&mut buf_a).await }, if open[0] => match r {
                    Ok(0) | Err(_) => open[0] = false,
                    Ok(n) => {
                        let data = buf_a[..n].to_vec();
                        proc.publish(if is_pty { Output::Pty(data) } else { Output::Stdout(data) }).await;
                    }
                },
                r = async { rest[0].read(&mut buf_b).await }, if open[1] => match r {
                    Ok(0) | Err(_) => open[1] = false,
                    Ok(n) => proc.publish(Output::Stderr(buf_b[..n].to_vec())).await,
                },
                status = &mut exit, if exited.is_none() => {
                    exited = Some(status.unwrap_or(Exit::Signal(libc::SIGKILL)));
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() => break,
                _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && !killed => {
                    killed = true;
                    tracing::info!(pid = proc.pid, "process deadline reached; killing it");
                    let _ = signal_group(proc.pid, libc::SIGKILL);
                }
            }
        }
        let exit = exited.unwrap_or(Exit::Signal(libc::SIGKILL));
        let mut end = end_event(exit);
        if killed {
            end.error = Some("deadline exceeded: the process was killed".into());
        }
        proc.finish(end).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_events_read_like_go() {
        let e = end_event(Exit::Code(3));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (3, true, "exit status 3")
        );
        let e = end_event(Exit::Signal(libc::SIGKILL));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (-1, false, "signal: killed")
        );
    }

    #[test]
    fn environment_layers_and_validates() {
        let user = User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            groups: vec![1000],
        };
        let defaults = [("A".to_string(), "d".to_string()), ("B".into(), "d".into())].into();
        let req = [("B".to_string(), "r".to_string())].into();
        let env: std::collections::HashMap<_, _> = environment(&user, &defaults, &req)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["HOME"], "/home/user");
        assert_eq!(env["USER"], "user");
        assert_eq!(env["A"], "d");
        assert_eq!(env["B"], "r");
        let bad = [("X=Y".to_string(), "1".to_string())].into();
        assert!(environment(&user, &defaults, &bad).is_err());
    }
}
