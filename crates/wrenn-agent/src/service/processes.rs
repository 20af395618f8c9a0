//! Processes in a capsule: exec (whole and streamed), PTYs, background processes (start,
//! list, kill by pid or tag), reattach. These go straight to the capsule's envd.

use std::time::Instant;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wrenn_proto::{
    agent::v1::{
        connect_process_request, exec_event, kill_process_request::Selector, CapsuleRef,
        ConnectProcessRequest, ExecEvent, ExecRequest, ExecResponse, KillProcessRequest,
        KillProcessResponse, ListProcessesResponse, ProcessInfo, PtyAttachRequest, PtyInputRequest,
        PtyInputResponse, PtyResizeRequest, PtyResizeResponse, SetDefaultsRequest,
        SetDefaultsResponse, StartBackgroundRequest, StartBackgroundResponse,
    },
    process,
};

use super::{capsule_id, too_large, user_of, AgentService, MAX_EXEC_OUTPUT};
use crate::envd_client;

pub(super) fn exec_request(r: &ExecRequest) -> Result<envd_client::ExecRequest, Status> {
    if r.cmd.is_empty() {
        return Err(Status::invalid_argument("cmd is empty"));
    }
    Ok(envd_client::ExecRequest {
        cmd: r.cmd.clone(),
        args: r.args.clone(),
        env: r.env.clone(),
        cwd: (!r.cwd.is_empty()).then(|| r.cwd.clone()),
        user: (!r.user.is_empty()).then(|| r.user.clone()),
        timeout: (r.timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(u64::from(r.timeout_ms))),
    })
}

pub(super) fn tag_selector(tag: String) -> process::ProcessSelector {
    process::ProcessSelector {
        selector: Some(process::process_selector::Selector::Tag(tag)),
    }
}

/// Turns envd's process events into the agent's, as a gRPC stream.
pub(super) fn forward_events(
    mut events: tokio::sync::mpsc::Receiver<crate::Result<envd_client::ExecEvent>>,
) -> ReceiverStream<Result<ExecEvent, Status>> {
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let msg = match ev {
                Ok(envd_client::ExecEvent::Start { pid }) => {
                    Ok(exec_event::Event::Start(exec_event::Start { pid }))
                }
                Ok(envd_client::ExecEvent::Stdout(b)) => Ok(exec_event::Event::Stdout(b)),
                Ok(envd_client::ExecEvent::Stderr(b)) => Ok(exec_event::Event::Stderr(b)),
                Ok(envd_client::ExecEvent::Pty(b)) => Ok(exec_event::Event::Pty(b)),
                Ok(envd_client::ExecEvent::End { exit_code, error }) => {
                    Ok(exec_event::Event::End(exec_event::End {
                        exit_code,
                        error: error.unwrap_or_default(),
                        duration_ms: started.elapsed().as_millis() as u64,
                    }))
                }
                Err(e) => Err(Status::from(e)),
            };
            let msg = msg.map(|event| ExecEvent { event: Some(event) });
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

pub(super) async fn exec(
    svc: &AgentService,
    req: Request<ExecRequest>,
) -> Result<Response<ExecResponse>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    let started = Instant::now();
    let out = svc.manager.exec(&id, exec_request(&r)?).await?;
    if out.stdout.len() + out.stderr.len() > MAX_EXEC_OUTPUT {
        return Err(too_large(format!(
            "the command wrote more than {MAX_EXEC_OUTPUT} bytes; use ExecStream"
        )));
    }
    Ok(Response::new(ExecResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        error: out.error.unwrap_or_default(),
    }))
}

pub(super) async fn exec_stream(
    svc: &AgentService,
    req: Request<ExecRequest>,
) -> Result<Response<ReceiverStream<Result<ExecEvent, Status>>>, Status> {
    let r = req.into_inner();
    let envd = svc.envd(&r.capsule_id)?;
    let events = envd.exec_stream(&exec_request(&r)?, None).await?;
    Ok(Response::new(forward_events(events)))
}

pub(super) async fn pty_attach(
    svc: &AgentService,
    req: Request<PtyAttachRequest>,
) -> Result<Response<ReceiverStream<Result<ExecEvent, Status>>>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    if r.tag.is_empty() {
        return Err(Status::invalid_argument("a terminal needs a tag"));
    }
    let envd = svc.manager.envd(&id)?;
    let events = if r.cmd.is_empty() {
        envd.connect_process(&serde_json::json!({ "tag": r.tag }))
            .await?
    } else {
        let (cols, rows) = (r.cols.clamp(1, 1000), r.rows.clamp(1, 1000));
        let mut env = r.env;
        env.entry("TERM".into())
            .or_insert_with(|| "xterm-256color".into());
        let exec = exec_request(&ExecRequest {
            capsule_id: String::new(),
            cmd: r.cmd,
            args: r.args,
            env,
            cwd: r.cwd,
            user: r.user,
            timeout_ms: 0,
        })?;
        envd.start_pty(&exec, &r.tag, cols, rows).await?
    };
    Ok(Response::new(forward_events(events)))
}

pub(super) async fn pty_input(
    svc: &AgentService,
    req: Request<PtyInputRequest>,
) -> Result<Response<PtyInputResponse>, Status> {
    let r = req.into_inner();
    let _: process::SendInputResponse = svc
        .envd(&r.capsule_id)?
        .unary(
            "/process.Process/SendInput",
            &process::SendInputRequest {
                process: Some(tag_selector(r.tag)),
                input: Some(process::ProcessInput {
                    input: Some(process::process_input::Input::Pty(r.data)),
                }),
            },
            None,
        )
        .await?;
    Ok(Response::new(PtyInputResponse {}))
}

pub(super) async fn pty_resize(
    svc: &AgentService,
    req: Request<PtyResizeRequest>,
) -> Result<Response<PtyResizeResponse>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    if r.cols == 0 || r.rows == 0 {
        return Err(Status::invalid_argument("cols and rows must be positive"));
    }
    let _: process::UpdateResponse = svc
        .manager
        .envd(&id)?
        .unary(
            "/process.Process/Update",
            &process::UpdateRequest {
                process: Some(tag_selector(r.tag)),
                pty: Some(process::Pty {
                    size: Some(process::pty::Size {
                        cols: r.cols,
                        rows: r.rows,
                    }),
                }),
            },
            None,
        )
        .await?;
    Ok(Response::new(PtyResizeResponse {}))
}

pub(super) async fn connect_process(
    svc: &AgentService,
    req: Request<ConnectProcessRequest>,
) -> Result<Response<ReceiverStream<Result<ExecEvent, Status>>>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    let selector = match r.selector {
        Some(connect_process_request::Selector::Pid(pid)) => serde_json::json!({ "pid": pid }),
        Some(connect_process_request::Selector::Tag(tag)) => serde_json::json!({ "tag": tag }),
        None => return Err(Status::invalid_argument("a pid or a tag is required")),
    };
    let events = svc.manager.envd(&id)?.connect_process(&selector).await?;
    Ok(Response::new(forward_events(events)))
}

pub(super) async fn start_background(
    svc: &AgentService,
    req: Request<StartBackgroundRequest>,
) -> Result<Response<StartBackgroundResponse>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    let exec = exec_request(&ExecRequest {
        capsule_id: String::new(),
        cmd: r.cmd,
        args: r.args,
        env: r.env,
        cwd: r.cwd,
        user: r.user,
        timeout_ms: 0,
    })?;
    let tag = user_of(&r.tag);
    let pid = svc.manager.envd(&id)?.start_background(&exec, tag).await?;
    Ok(Response::new(StartBackgroundResponse { pid, tag: r.tag }))
}

pub(super) async fn set_defaults(
    svc: &AgentService,
    req: Request<SetDefaultsRequest>,
) -> Result<Response<SetDefaultsResponse>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    if !r.workdir.is_empty() && !r.workdir.starts_with('/') {
        return Err(Status::invalid_argument("workdir must be absolute"));
    }
    let init = crate::envd_client::InitRequest {
        access_token: None,
        env_vars: r.env.into_iter().collect(),
        default_user: (!r.user.is_empty()).then_some(r.user),
        default_workdir: (!r.workdir.is_empty()).then_some(r.workdir),
    };
    // Defaults only: the capsule's token stays.
    let envd = svc.manager.envd(&id)?;
    envd.init(&init, envd.token.as_deref()).await?;
    Ok(Response::new(SetDefaultsResponse {}))
}

pub(super) async fn list_processes(
    svc: &AgentService,
    req: Request<CapsuleRef>,
) -> Result<Response<ListProcessesResponse>, Status> {
    let id = capsule_id(&req.into_inner().id)?;
    let list: process::ListResponse = svc
        .manager
        .envd(&id)?
        .unary("/process.Process/List", &process::ListRequest {}, None)
        .await?;
    Ok(Response::new(ListProcessesResponse {
        processes: list
            .processes
            .into_iter()
            .map(|p| {
                let config = p.config.unwrap_or_default();
                ProcessInfo {
                    pid: p.pid,
                    tag: p.tag.unwrap_or_default(),
                    cmd: config.cmd,
                    args: config.args,
                }
            })
            .collect(),
    }))
}

pub(super) async fn kill_process(
    svc: &AgentService,
    req: Request<KillProcessRequest>,
) -> Result<Response<KillProcessResponse>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    let signal = match r.signal.as_str() {
        "" | "SIGKILL" => process::Signal::Sigkill,
        "SIGTERM" => process::Signal::Sigterm,
        other => {
            return Err(Status::invalid_argument(format!(
                "signal {other:?}: use SIGKILL or SIGTERM"
            )))
        }
    };
    let selector = match r.selector {
        Some(Selector::Pid(pid)) => process::process_selector::Selector::Pid(pid),
        Some(Selector::Tag(tag)) => process::process_selector::Selector::Tag(tag),
        None => return Err(Status::invalid_argument("a pid or a tag is required")),
    };
    let _: process::SendSignalResponse = svc
        .manager
        .envd(&id)?
        .unary(
            "/process.Process/SendSignal",
            &process::SendSignalRequest {
                process: Some(process::ProcessSelector {
                    selector: Some(selector),
                }),
                signal: signal as i32,
            },
            None,
        )
        .await?;
    Ok(Response::new(KillProcessResponse {}))
}
