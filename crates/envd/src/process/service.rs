//! The RPC handlers of `process.Process`.

use std::{sync::Arc, time::Duration};

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_proto::process::{
    process_event::{self, DataEvent, Event as Ev, KeepAlive, StartEvent},
    process_input::Input,
    stream_input_request, CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse,
    ListRequest, ListResponse, ProcessEvent, ProcessInput, SendInputRequest, SendInputResponse,
    SendSignalRequest, SendSignalResponse, Signal, StartRequest, StartResponse, StreamInputRequest,
    StreamInputResponse, UpdateRequest, UpdateResponse,
};

use super::{
    handle::{Event, Proc},
    spawn::{self, SpawnSpec},
};
use crate::{
    auth,
    connect::{Call, MessageStream},
    error::{EnvdError, Result},
    paths,
    state::SharedEnvd,
};

/// Keepalive period when the client does not ask for one (`Keepalive-Ping-Interval`, s).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
const DEFAULT_PTY: (u16, u16) = (24, 80);

fn keepalive_interval(call: &Call) -> Duration {
    call.header("keepalive-ping-interval")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEEPALIVE)
}

pub async fn list(envd: SharedEnvd, _call: Call, _req: ListRequest) -> Result<ListResponse> {
    Ok(ListResponse {
        processes: envd.processes.running().iter().map(|p| p.info()).collect(),
    })
}

pub async fn start(
    envd: SharedEnvd,
    call: Call,
    req: StartRequest,
) -> Result<impl Stream<Item = Result<StartResponse>>> {
    let config = req
        .process
        .ok_or_else(|| EnvdError::InvalidArgument("process config is required".into()))?;
    if config.cmd.is_empty() {
        return Err(EnvdError::InvalidArgument("process cmd is empty".into()));
    }
    if let Some(tag) = &req.tag {
        envd.processes.check_tag_free(tag)?;
    }
    let (user, _) = envd.user(auth::basic_user(&call.headers)?.as_deref())?;
    let defaults = envd.defaults();
    let cwd = match config.cwd.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => paths::resolve(c, &user)?,
        None => defaults
            .workdir
            .clone()
            .filter(|w| w.is_dir())
            .unwrap_or_else(|| user.home.clone()),
    };
    if !cwd.is_dir() {
        return Err(EnvdError::InvalidArgument(format!(
            "cwd '{}' does not exist or is not a directory",
            cwd.display()
        )));
    }
    let env = spawn::environment(&user, &defaults.env_vars, &config.envs)?;
    let pty = req.pty.map(|p| {
        p.size
            .map(|s| (clamp(s.rows), clamp(s.cols)))
            .filter(|(r, c)| *r > 0 && *c > 0)
            .unwrap_or(DEFAULT_PTY)
    });
    let spec = SpawnSpec {
        config,
        tag: req.tag,
        env,
        cwd,
        user,
        pty,
        stdin: req.stdin.unwrap_or(true),
        deadline: call.timeout,
    };
    let (proc, pump) = spawn::spawn(&envd.reaper, spec)?;
    envd.processes.insert(proc.clone());
    tracing::info!(pid = proc.pid, cmd = %proc.config.cmd, "process started");
    let stream = event_stream(&proc, keepalive_interval(&call), |event| StartResponse {
        event: Some(event),
    });
    let table = Arc::clone(&envd);
    let done = proc.clone();
    tokio::spawn(async move {
        pump.run().await;
        table.processes.remove_later(&done);
    });
    Ok(stream)
}

fn clamp(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}

pub async fn connect(
    envd: SharedEnvd,
    call: Call,
    req: ConnectRequest,
) -> Result<impl Stream<Item = Result<ConnectResponse>>> {
    let proc = envd.processes.find(req.process.as_ref())?;
    Ok(event_stream(&proc, keepalive_interval(&call), |event| {
        ConnectResponse { event: Some(event) }
    }))
}

fn wrap(event: Ev) -> ProcessEvent {
    ProcessEvent { event: Some(event) }
}

fn data(output: process_event::data_event::Output) -> ProcessEvent {
    wrap(Ev::Data(DataEvent {
        output: Some(output),
    }))
}

/// `start{pid}`, the output so far, live output with keepalives, then `end`.
fn event_stream<R: Send + 'static>(
    proc: &Arc<Proc>,
    keepalive: Duration,
    make: fn(ProcessEvent) -> R,
) -> impl Stream<Item = Result<R>> {
    let sub = proc.subscribe();
    let pid = proc.pid;
    let (tx, rx) = mpsc::channel::<Result<R>>(16);
    tokio::spawn(async move {
        let send = |ev: ProcessEvent| {
            let tx = tx.clone();
            async move { tx.send(Ok(make(ev))).await.is_ok() }
        };
        if !send(wrap(Ev::Start(StartEvent { pid }))).await {
            return;
        }
        for out in sub.replay {
            if !send(data(out)).await {
                return;
            }
        }
        if let Some(end) = sub.ended {
            send(wrap(Ev::End(end))).await;
            return;
        }
        let Some(mut live) = sub.live else { return };
        let mut ticker = tokio::time::interval(keepalive);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Some(Event::Data(out)) => if !send(data(out)).await { return },
                    Some(Event::End(end)) => { send(wrap(Ev::End(end))).await; return }
                    None => return,
                },
                _ = ticker.tick() => if !send(wrap(Ev::Keepalive(KeepAlive {}))).await { return },
                _ = tx.closed() => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

pub async fn update(envd: SharedEnvd, _call: Call, req: UpdateRequest) -> Result<UpdateResponse> {
    let proc = envd.processes.find_running(req.process.as_ref())?;
    let size = req
        .pty
        .and_then(|p| p.size)
        .ok_or_else(|| EnvdError::InvalidArgument("update needs pty.size".into()))?;
    if size.rows == 0 || size.cols == 0 {
        return Err(EnvdError::InvalidArgument(format!(
            "invalid PTY size {}x{}",
            size.cols, size.rows
        )));
    }
    let pty = proc.pty.as_ref().ok_or_else(|| {
        EnvdError::FailedPrecondition(format!("process {} has no PTY to resize", proc.pid))
    })?;
    pty.resize(clamp(size.rows), clamp(size.cols))
        .map_err(|e| EnvdError::io(format!("resizing the PTY of process {}", proc.pid), e))?;
    Ok(UpdateResponse {})
}

async fn write_input(proc: &Proc, input: Option<ProcessInput>) -> Result<()> {
    match input.and_then(|i| i.input) {
        Some(Input::Stdin(bytes)) => proc.write_stdin(&bytes).await,
        Some(Input::Pty(bytes)) => proc.write_pty(&bytes).await,
        None => Err(EnvdError::InvalidArgument("input is empty".into())),
    }
}

pub async fn send_input(
    envd: SharedEnvd,
    _call: Call,
    req: SendInputRequest,
) -> Result<SendInputResponse> {
    let proc = envd.processes.find_running(req.process.as_ref())?;
    write_input(&proc, req.input).await?;
    Ok(SendInputResponse {})
}

pub async fn stream_input(
    envd: SharedEnvd,
    _call: Call,
    mut messages: MessageStream<StreamInputRequest>,
) -> Result<StreamInputResponse> {
    let mut target: Option<Arc<Proc>> = None;
    while let Some(msg) = messages.next().await {
        match msg?.event {
            Some(stream_input_request::Event::Start(s)) => {
                target = Some(envd.processes.find_running(s.process.as_ref())?);
            }
            Some(stream_input_request::Event::Data(d)) => {
                let proc = target.as_ref().ok_or_else(|| {
                    EnvdError::InvalidArgument("the first StreamInput message must be start".into())
                })?;
                write_input(proc, d.input).await?;
            }
            Some(stream_input_request::Event::Keepalive(_)) | None => {}
        }
    }
    Ok(StreamInputResponse {})
}

pub async fn send_signal(
    envd: SharedEnvd,
    _call: Call,
    req: SendSignalRequest,
) -> Result<SendSignalResponse> {
    let sig = match Signal::try_from(req.signal) {
        Ok(Signal::Sigkill) => libc::SIGKILL,
        Ok(Signal::Sigterm) => libc::SIGTERM,
        _ => {
            return Err(EnvdError::InvalidArgument(format!(
                "unsupported signal {}; use SIGNAL_SIGTERM or SIGNAL_SIGKILL",
                req.signal
            )))
        }
    };
    let proc = envd.processes.find_running(req.process.as_ref())?;
    spawn::signal_group(proc.pid, sig)?;
    Ok(SendSignalResponse {})
}

pub async fn close_stdin(
    envd: SharedEnvd,
    _call: Call,
    req: CloseStdinRequest,
) -> Result<CloseStdinResponse> {
    let proc = envd.processes.find_running(req.process.as_ref())?;
    proc.close_stdin().await?;
    Ok(CloseStdinResponse {})
}
