//! A small QMP client: JSON lines over a Unix socket, with file descriptors passed by
//! `SCM_RIGHTS` (for `getfd`, so QEMU's seccomp sandbox can forbid spawning helpers).

use std::{
    collections::VecDeque,
    io::IoSlice,
    os::fd::{AsRawFd, RawFd},
    path::Path,
    time::Duration,
};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, Interest},
    net::UnixStream,
    time::Instant,
};

use crate::error::{Result, VmmError};

/// Asynchronous events kept for [`Qmp::wait_event`] (the oldest are dropped beyond this).
const KEPT_EVENTS: usize = 64;

/// A connected, negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Events read while waiting for a command's reply, oldest first.
    events: VecDeque<Value>,
}

impl Qmp {
    /// Connects to `path` (retrying until `timeout` while QEMU starts) and leaves the
    /// capabilities negotiation behind.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    tracing::trace!(error = %e, "QMP socket not ready yet");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    return Err(VmmError::io(
                        format!("connecting to QMP at {}", path.display()),
                        e,
                    ))
                }
            }
        };
        let mut qmp = Qmp {
            stream,
            buf: Vec::new(),
            events: VecDeque::new(),
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(VmmError::Qmp(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map_err(|e| VmmError::Qmp(format!("malformed QMP message: {e}")));
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| VmmError::io("reading QMP", e))?;
            if n == 0 {
                return Err(VmmError::Qmp("QMP connection closed".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn reply(&mut self, command: &str) -> Result<Value> {
        loop {
            let msg = self.read_message().await?;
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                return Err(VmmError::Command {
                    command: command.to_string(),
                    class: err["class"].as_str().unwrap_or("?").to_string(),
                    desc: err["desc"].as_str().unwrap_or("?").to_string(),
                });
            }
            self.keep_event(msg);
        }
    }

    fn keep_event(&mut self, msg: Value) {
        tracing::trace!(event = %msg, "QMP event");
        if msg.get("event").is_some() {
            if self.events.len() == KEPT_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(msg);
        }
    }

    /// Waits up to `timeout` for event `name` (one that came while a command ran counts):
    /// the event, or `None` when none came in time. Other events are kept.
    pub async fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Option<Value>> {
        let is = |m: &Value| m["event"].as_str() == Some(name);
        if let Some(i) = self.events.iter().position(is) {
            return Ok(self.events.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Reading is cancel-safe: bytes read are in `buf` before the next await.
            let msg = match tokio::time::timeout_at(deadline, self.read_message()).await {
                Ok(m) => m?,
                Err(_) => return Ok(None),
            };
            if is(&msg) {
                return Ok(Some(msg));
            }
            self.keep_event(msg);
        }
    }

    fn request(command: &str, args: Option<Value>) -> Vec<u8> {
        let mut req = json!({ "execute": command });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        let mut line = req.to_string().into_bytes();
        line.push(b'\n');
        line
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value> {
        let line = Self::request(command, args);
        self.stream
            .write_all(&line)
            .await
            .map_err(|e| VmmError::io("writing QMP", e))?;
        self.reply(command).await
    }

    /// Runs one command with `fd` attached (e.g. `getfd`).
    pub async fn execute_with_fd(
        &mut self,
        command: &str,
        args: Option<Value>,
        fd: RawFd,
    ) -> Result<Value> {
        let line = Self::request(command, args);
        let sock = self.stream.as_raw_fd();
        loop {
            self.stream
                .writable()
                .await
                .map_err(|e| VmmError::io("waiting to write QMP", e))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                let fds = [fd];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(sock, &[IoSlice::new(&line)], &cmsg, MsgFlags::empty(), None)
                    .map_err(std::io::Error::from)
            });
            match sent {
                Ok(n) if n == line.len() => break,
                Ok(n) => {
                    return Err(VmmError::Qmp(format!(
                        "short write of a QMP command with a descriptor ({n} of {})",
                        line.len()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(VmmError::io("sending a descriptor over QMP", e)),
            }
        }
        self.reply(command).await
    }
}
