//! One process started through envd: its input, its output log for late subscribers, and
//! the subscribers of its live output.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::{net::unix::pipe, sync::mpsc};
use wrenn_proto::process::{
    process_event::{data_event::Output, EndEvent},
    ProcessConfig, ProcessInfo,
};

use super::pty::PtyMaster;
use crate::error::{EnvdError, Result};

/// Output kept per process for clients that attach later (the newest bytes win).
pub const HISTORY_BYTES: usize = 1 << 20;

/// What subscribers receive.
#[derive(Debug, Clone)]
pub enum Event {
    Data(Output),
    End(EndEvent),
}

fn output_len(o: &Output) -> usize {
    match o {
        Output::Stdout(b) | Output::Stderr(b) | Output::Pty(b) => b.len(),
    }
}

#[derive(Debug, Default)]
struct OutputState {
    history: VecDeque<Output>,
    history_bytes: usize,
    subscribers: Vec<mpsc::Sender<Event>>,
    end: Option<EndEvent>,
}

/// A live view of a process's output: what happened before, then what comes.
#[derive(Debug)]
pub struct Subscription {
    pub replay: Vec<Output>,
    /// Set when the process had already ended.
    pub ended: Option<EndEvent>,
    pub live: Option<mpsc::Receiver<Event>>,
}

/// A process started through envd.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    pub tag: Option<String>,
    pub config: ProcessConfig,
    pub pty: Option<Arc<PtyMaster>>,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    out: Mutex<OutputState>,
}

impl Proc {
    pub fn new(
        pid: u32,
        tag: Option<String>,
        config: ProcessConfig,
        pty: Option<Arc<PtyMaster>>,
        stdin: Option<pipe::Sender>,
    ) -> Proc {
        Proc {
            pid,
            tag,
            config,
            pty,
            stdin: tokio::sync::Mutex::new(stdin),
            out: Mutex::new(OutputState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutputState> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn info(&self) -> ProcessInfo {
        ProcessInfo {
            config: Some(self.config.clone()),
            pid: self.pid,
            tag: self.tag.clone(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.state().end.is_none()
    }

    /// Subscribes to the output, atomically with a copy of what was produced so far.
    pub fn subscribe(&self) -> Subscription {
        let mut st = self.state();
        let replay = st.history.iter().cloned().collect();
        if let Some(end) = &st.end {
            return Subscription {
                replay,
                ended: Some(end.clone()),
                live: None,
            };
        }
        let (tx, rx) = mpsc::channel(64);
        st.subscribers.push(tx);
        Subscription {
            replay,
            ended: None,
            live: Some(rx),
        }
    }

    /// Records output and hands it to every subscriber, in order. A slow subscriber slows the
    /// process down as a pipe would; a gone one is dropped.
    pub async fn publish(&self, data: Output) {
        let subscribers = {
            let mut st = self.state();
            st.history_bytes += output_len(&data);
            st.history.push_back(data.clone());
            while st.history_bytes > HISTORY_BYTES {
                match st.history.pop_front() {
                    Some(old) => st.history_bytes -= output_len(&old),
                    None => break,
                }
            }
            st.subscribers.clone()
        };
        let mut gone = false;
        for tx in &subscribers {
            gone |= tx.send(Event::Data(data.clone())).await.is_err();
        }
        if gone {
            self.state().subscribers.retain(|tx| !tx.is_closed());
        }
    }

    /// Records the end and tells every subscriber; no output follows.
    pub async fn finish(&self, end: EndEvent) {
        let subscribers = {
            let mut st = self.state();
            st.end = Some(end.clone());
            std::mem::take(&mut st.subscribers)
        };
        *self.stdin.lock().await = None;
        for tx in subscribers {
            let _ = tx.send(Event::End(end.clone())).await;
        }
    }

    /// Writes to the stdin pipe (or the terminal for a PTY process).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        if let Some(pty) = &self.pty {
            return self.write_pty_master(pty, data).await;
        }
        use tokio::io::AsyncWriteExt;
        let mut stdin = self.stdin.lock().await;
        let pipe = stdin.as_mut().ok_or_else(|| {
            EnvdError::FailedPrecondition(format!(
                "process {} has no open stdin (started without stdin, closed, or exited)",
                self.pid
            ))
        })?;
        pipe.write_all(data)
            .await
            .map_err(|e| EnvdError::io(format!("writing to stdin of process {}", self.pid), e))
    }

    /// Writes terminal input to a PTY process.
    pub async fn write_pty(&self, data: &[u8]) -> Result<()> {
        match &self.pty {
            Some(pty) => self.write_pty_master(pty, data).await,
            None => Err(EnvdError::FailedPrecondition(format!(
                "process {} has no PTY; send stdin instead",
                self.pid
            ))),
        }
    }

    async fn write_pty_master(&self, pty: &PtyMaster, data: &[u8]) -> Result<()> {
        if !self.is_running() {
            return Err(EnvdError::NotFound(format!(
                "process {} has exited",
                self.pid
            )));
        }
        pty.write_all(data)
            .await
            .map_err(|e| EnvdError::io(format!("writing to the PTY of process {}", self.pid), e))
    }

    /// Closes stdin so the process reads EOF.
    pub async fn close_stdin(&self) -> Result<()> {
        if self.pty.is_some() {
            return Err(EnvdError::FailedPrecondition(format!(
                "process {} has a PTY; send Ctrl-D (\\x04) to end its input",
                self.pid
            )));
        }
        *self.stdin.lock().await = None;
        Ok(())
    }
}
