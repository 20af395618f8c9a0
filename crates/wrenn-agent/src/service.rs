//! The gRPC service `agent.v1.Agent` over the [`Manager`].

use std::{sync::Arc, time::Instant};

use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{Request, Response, Status};
use wrenn_proto::{
    agent::v1::{
        agent_server::{Agent, AgentServer},
        connect_process_request, exec_event,
        kill_process_request::Selector,
        write_file_stream_request::Part,
        Capsule, CapsuleRef, CapsuleState as PbState, ConnectProcessRequest, CreateCapsuleRequest,
        DestroyCapsuleResponse, ExecEvent, ExecRequest, ExecResponse, FileChunk, FileEntry,
        FileRequest, FileType, GetMetricsRequest, GetMetricsResponse, HostInfoRequest,
        HostInfoResponse, KillProcessRequest, KillProcessResponse, ListCapsulesRequest,
        ListCapsulesResponse, ListDirRequest, ListDirResponse, ListProcessesResponse, MetricPoint,
        MoveRequest, PingResponse, ProcessInfo, PtyAttachRequest, PtyInputRequest,
        PtyInputResponse, PtyResizeRequest, PtyResizeResponse, ReadFileResponse, RemoveResponse,
        StartBackgroundRequest, StartBackgroundResponse, TimeoutAction, WriteFileRequest,
        WriteFileStreamRequest,
    },
    agent::v1::{
        watch_dir_event, DeleteTemplateRequest, DeleteTemplateResponse,
        EgressPolicy as PbEgressPolicy, FsEventType, ListTemplatesRequest, ListTemplatesResponse,
        SetCapsuleNetworkRequest, SnapshotCapsuleRequest, Template, TemplateKind, WatchDirEvent,
        WatchDirRequest,
    },
    filesystem, process,
};
use wrenn_types::{Id, IdKind};

use crate::{
    capsule::CreateSpec,
    envd_client,
    error::{reason, AgentError},
    manager::Manager,
    netslot::SlotAddrs,
    record::CapsuleRecord,
};
pub use wrenn_rpc::listen::Listen;

/// Most bytes of stdout plus stderr one unary `Exec` returns, and of a whole-file read/write.
const MAX_EXEC_OUTPUT: usize = 16 << 20;
const MAX_WHOLE_FILE: usize = 16 << 20;
const STREAM_CHUNK: usize = 256 * 1024;

fn exec_request(r: &ExecRequest) -> Result<envd_client::ExecRequest, Status> {
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

fn user_of(u: &str) -> Option<&str> {
    (!u.is_empty()).then_some(u)
}

fn entry(e: filesystem::EntryInfo) -> FileEntry {
    let kind = match filesystem::FileType::try_from(e.r#type) {
        Ok(filesystem::FileType::File) => FileType::File,
        Ok(filesystem::FileType::Directory) => FileType::Directory,
        Ok(filesystem::FileType::Symlink) => FileType::Symlink,
        _ => FileType::Unspecified,
    };
    FileEntry {
        name: e.name,
        path: e.path,
        r#type: if e.is_symlink {
            FileType::Symlink
        } else {
            kind
        } as i32,
        size: e.size,
        mode: e.mode,
        permissions: e.permissions,
        owner: e.owner,
        group: e.group,
        modified_unix: e.modified_time.map(|t| t.seconds).unwrap_or(0),
        symlink_target: e.symlink_target.unwrap_or_default(),
    }
}

/// `status` with its [`reason`] in the metadata.
fn with_reason(mut status: Status, why: &'static str) -> Status {
    status.metadata_mut().insert(
        reason::KEY,
        tonic::metadata::MetadataValue::from_static(why),
    );
    status
}

/// A request for more than one answer may carry.
fn too_large(msg: String) -> Status {
    Status::from(AgentError::TooLarge(msg))
}

/// A capsule's envd stream broke off.
fn envd_broke(msg: String) -> Status {
    Status::from(AgentError::Envd(msg))
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        let msg = e.to_string();
        if e.is_no_space() {
            tracing::warn!(error = %msg, "the host's disk is full");
            let msg = match e {
                AgentError::InsufficientStorage(_) | AgentError::NoSpace(_) => msg,
                _ => format!("the host is out of disk space: {msg}"),
            };
            return with_reason(
                Status::resource_exhausted(msg),
                reason::INSUFFICIENT_STORAGE,
            );
        }
        match e {
            AgentError::NotFound(_) | AgentError::UnknownTemplate(_) => Status::not_found(msg),
            AgentError::InvalidArgument(_) | AgentError::BadTemplateName(_) => {
                Status::invalid_argument(msg)
            }
            AgentError::FailedPrecondition(_) => Status::failed_precondition(msg),
            AgentError::AlreadyExists(_) => Status::already_exists(msg),
            AgentError::PermissionDenied(_) => Status::permission_denied(msg),
            AgentError::ResourceExhausted(_) => Status::resource_exhausted(msg),
            AgentError::NoSpace(_)
            | AgentError::CapsuleLimit(_)
            | AgentError::InsufficientStorage(_) => with_reason(
                Status::resource_exhausted(msg),
                reason::INSUFFICIENT_STORAGE,
            ),
            AgentError::TooLarge(_) => {
                with_reason(Status::resource_exhausted(msg), reason::TOO_LARGE)
            }
            AgentError::Envd(_) => with_reason(Status::unavailable(msg), reason::CAPSULE),
            AgentError::Prerequisites(_) => Status::failed_precondition(msg),
            AgentError::ImageBuild { .. }
            | AgentError::Network(_)
            | AgentError::Vmm(_)
            | AgentError::Tls(_)
            | AgentError::Transport(_)
            | AgentError::Random(_)
            | AgentError::Io { .. } => {
                tracing::error!(error = %msg, "agent request failed");
                Status::internal(msg)
            }
        }
    }
}

fn pb_action(a: crate::record::TimeoutAction) -> TimeoutAction {
    match a {
        crate::record::TimeoutAction::Pause => TimeoutAction::Pause,
        crate::record::TimeoutAction::Destroy => TimeoutAction::Destroy,
    }
}

fn to_pb(rec: CapsuleRecord) -> Capsule {
    let address = SlotAddrs::new(rec.slot)
        .map(|a| a.capsule_ip.to_string())
        .unwrap_or_default();
    Capsule {
        id: rec.id,
        template: rec.template,
        state: PbState::from(rec.state) as i32,
        vcpus: rec.vcpus,
        memory_mib: rec.memory_mib,
        egress: rec.egress,
        created_at_unix: rec.created_at_unix,
        metadata: rec.metadata,
        address,
        error: rec.error.unwrap_or_default(),
        timeout_secs: rec.timeout_secs,
        on_timeout: pb_action(rec.on_timeout) as i32,
        disk_mib: rec.disk_mib,
        egress_policy: Some(PbEgressPolicy {
            allow: rec.egress_policy.allow,
            deny: rec.egress_policy.deny,
        }),
    }
}

fn policy_of(p: Option<PbEgressPolicy>) -> wrenn_types::egress::EgressPolicy {
    let p = p.unwrap_or_default();
    wrenn_types::egress::EgressPolicy {
        allow: p.allow,
        deny: p.deny,
    }
}

fn template_pb(t: crate::templates::TemplateInfo) -> Template {
    Template {
        name: t.name,
        kind: match t.kind {
            crate::templates::TemplateKind::Base => TemplateKind::Base,
            crate::templates::TemplateKind::Snapshot => TemplateKind::Snapshot,
        } as i32,
        vcpus: t.vcpus,
        memory_mib: t.memory_mib,
        disk_bytes: t.disk_bytes,
        size_bytes: t.size_bytes,
        created_at_unix: t.created_at_unix,
        base: t.base.unwrap_or_default(),
    }
}

fn fs_event_type(kind: &str) -> FsEventType {
    match kind {
        "EVENT_TYPE_CREATE" => FsEventType::Create,
        "EVENT_TYPE_WRITE" => FsEventType::Write,
        "EVENT_TYPE_REMOVE" => FsEventType::Remove,
        "EVENT_TYPE_RENAME" => FsEventType::Rename,
        "EVENT_TYPE_CHMOD" => FsEventType::Chmod,
        _ => FsEventType::Unspecified,
    }
}

fn capsule_id(raw: &str) -> Result<String, Status> {
    Id::parse(IdKind::Capsule, raw)
        .map(|id| id.to_string())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The service, shared by all connections.
pub struct AgentService {
    manager: Arc<Manager>,
}

impl AgentService {
    pub fn new(manager: Arc<Manager>) -> AgentServer<AgentService> {
        AgentServer::new(AgentService { manager })
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn host_info(
        &self,
        _req: Request<HostInfoRequest>,
    ) -> Result<Response<HostInfoResponse>, Status> {
        Ok(Response::new(self.manager.host_info()))
    }

    async fn create_capsule(
        &self,
        req: Request<CreateCapsuleRequest>,
    ) -> Result<Response<Capsule>, Status> {
        let r = req.into_inner();
        let rec = self
            .manager
            .create(CreateSpec {
                template: r.template,
                kind: match TemplateKind::try_from(r.template_kind) {
                    Ok(TemplateKind::Unspecified | TemplateKind::Base) => {
                        crate::templates::TemplateKind::Base
                    }
                    Ok(TemplateKind::Snapshot) => crate::templates::TemplateKind::Snapshot,
                    Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "unknown template_kind {}",
                            r.template_kind
                        )))
                    }
                },
                vcpus: r.vcpus,
                memory_mib: r.memory_mib,
                disk_mib: r.disk_mib,
                env_vars: r.env_vars,
                metadata: r.metadata,
                egress: r.egress,
                egress_policy: policy_of(r.egress_policy),
                timeout_secs: r.timeout_secs,
                on_timeout: match TimeoutAction::try_from(r.on_timeout) {
                    Ok(TimeoutAction::Destroy) => crate::record::TimeoutAction::Destroy,
                    Ok(TimeoutAction::Pause) => crate::record::TimeoutAction::Pause,
                    Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "unknown on_timeout {}",
                            r.on_timeout
                        )))
                    }
                },
            })
            .await?;
        Ok(Response::new(to_pb(rec)))
    }

    async fn get_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        let id = capsule_id(&req.into_inner().id)?;
        Ok(Response::new(to_pb(self.manager.get(&id)?)))
    }

    async fn list_capsules(
        &self,
        _req: Request<ListCapsulesRequest>,
    ) -> Result<Response<ListCapsulesResponse>, Status> {
        Ok(Response::new(ListCapsulesResponse {
            capsules: self.manager.list().into_iter().map(to_pb).collect(),
        }))
    }

    async fn pause_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        let id = capsule_id(&req.into_inner().id)?;
        Ok(Response::new(to_pb(self.manager.pause(&id).await?)))
    }

    async fn resume_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        let id = capsule_id(&req.into_inner().id)?;
        Ok(Response::new(to_pb(self.manager.resume(&id).await?)))
    }

    async fn destroy_capsule(
        &self,
        req: Request<CapsuleRef>,
    ) -> Result<Response<DestroyCapsuleResponse>, Status> {
        let id = capsule_id(&req.into_inner().id)?;
        self.manager.destroy(&id).await?;
        Ok(Response::new(DestroyCapsuleResponse {}))
    }

    async fn set_capsule_network(
        &self,
        req: Request<SetCapsuleNetworkRequest>,
    ) -> Result<Response<Capsule>, Status> {
        let r = req.into_inner();
        let id = capsule_id(&r.capsule_id)?;
        let rec = self
            .manager
            .set_network(&id, r.egress, &policy_of(r.egress_policy))
            .await?;
        Ok(Response::new(to_pb(rec)))
    }

    async fn get_metrics(
        &self,
        req: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let r = req.into_inner();
        let id = capsule_id(&r.capsule_id)?;
        if r.range_secs == 0 || r.range_secs > 24 * 3600 {
            return Err(Status::invalid_argument("range_secs must be 1..=86400"));
        }
        let points = self
            .manager
            .metrics(&id, i64::from(r.range_secs))?
            .into_iter()
            .map(|p| MetricPoint {
                unix: p.unix,
                cpu_pct: p.cpu_pct,
                mem_bytes: p.mem_bytes,
                disk_bytes: p.disk_bytes,
            })
            .collect();
        Ok(Response::new(GetMetricsResponse { points }))
    }

    async fn ping(&self, req: Request<CapsuleRef>) -> Result<Response<PingResponse>, Status> {
        let id = capsule_id(&req.into_inner().id)?;
        self.manager.ping(&id)?;
        Ok(Response::new(PingResponse {}))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = req.into_inner();
        let id = capsule_id(&r.capsule_id)?;
        let started = Instant::now();
        let out = self.manager.exec(&id, exec_request(&r)?).await?;
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

    type ExecStreamStream = ReceiverStream<Result<ExecEvent, Status>>;

    async fn exec_stream(
        &self,
        req: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        let r = req.into_inner();
        let envd = self.envd(&r.capsule_id)?;
        let events = envd.exec_stream(&exec_request(&r)?, None).await?;
        Ok(Response::new(forward_events(events)))
    }

    type PtyAttachStream = ReceiverStream<Result<ExecEvent, Status>>;

    async fn pty_attach(
        &self,
        req: Request<PtyAttachRequest>,
    ) -> Result<Response<Self::PtyAttachStream>, Status> {
        let r = req.into_inner();
        let id = capsule_id(&r.capsule_id)?;
        if r.tag.is_empty() {
            return Err(Status::invalid_argument("a terminal needs a tag"));
        }
        let envd = self.manager.envd(&id)?;
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

    async fn pty_input(
        &self,
        req: Request<PtyInputRequest>,
    ) -> Result<Response<PtyInputResponse>, Status> {
        let r = req.into_inner();
        let _: process::SendInputResponse = self
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

    async fn pty_resize(
        &self,
        req: Request<PtyResizeRequest>,
    ) -> Result<Response<PtyResizeResponse>, Status> {
        let r = req.into_inner();
        let id = capsule_id(&r.capsule_id)?;
        if r.cols == 0 || r.rows == 0 {
            return Err(Status::invalid_argument("cols and rows must be positive"));
        }
        let _: process::UpdateResponse = self
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

    type ConnectProcessStream = ReceiverStream<Result<ExecEvent, Status>>;

    async fn connect_process(
        &self,
        req: Request<ConnectProcessRequest>,
    ) -> Result<Response<Self::ConnectProcessStream>, Status> {
        let r = req.into_inner();
        let id = capsule_id(&r.capsule_id)?;
        let selector = match r.selector {
            Some(connect_process_request::Selector::Pid(pid)) => serde_json::json!({ "pid": pid }),
            Some(connect_process_request::Selector::Tag(tag)) => serde_json::json!({ "tag": tag }),
            None => return Err(Status::invalid_argument("a pid or a tag is required")),
        };
        let events = self.manager.envd(&id)?.connect_process(&selector).await?;
        Ok(Response::new(forward_events(events)))
    }

    async fn start_background(
        &self,
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
        let pid = self.manager.envd(&id)?.start_background(&exec, tag).await?;
        Ok(Response::new(StartBackgroundResponse { pid, tag: r.tag }))
    }

    async fn list_processes(
        &self,
        req: Request<CapsuleRef>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        let id = capsule_id(&req.into_inner().id)?;
        let list: process::ListResponse = self
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

    async fn kill_process(
        &self,
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
        let _: process::SendSignalResponse = self
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

    async fn read_file(
        &self,
        req: Request<FileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let r = req.into_inner();
        let mut resp = self
            .envd(&r.capsule_id)?
            .read_file_stream(&r.path, user_of(&r.user))
            .await?;
        let mut content = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| envd_broke(format!("reading {}: {}", r.path, e.without_url())))?
        {
            content.extend_from_slice(&chunk);
            if content.len() > MAX_WHOLE_FILE {
                return Err(too_large(format!(
                    "{} is larger than {MAX_WHOLE_FILE} bytes; use ReadFileStream",
                    r.path
                )));
            }
        }
        Ok(Response::new(ReadFileResponse { content }))
    }

    async fn write_file(
        &self,
        req: Request<WriteFileRequest>,
    ) -> Result<Response<FileEntry>, Status> {
        let r = req.into_inner();
        let envd = self.envd(&r.capsule_id)?;
        envd.write_file(&r.path, user_of(&r.user), r.content.into())
            .await?;
        self.stat_entry(&envd, &r.path, &r.user).await
    }

    type ReadFileStreamStream = ReceiverStream<Result<FileChunk, Status>>;

    async fn read_file_stream(
        &self,
        req: Request<FileRequest>,
    ) -> Result<Response<Self::ReadFileStreamStream>, Status> {
        let r = req.into_inner();
        let mut resp = self
            .envd(&r.capsule_id)?
            .read_file_stream(&r.path, user_of(&r.user))
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut pending: Vec<u8> = Vec::with_capacity(STREAM_CHUNK);
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        pending.extend_from_slice(&c);
                        if pending.len() >= STREAM_CHUNK {
                            let data =
                                std::mem::replace(&mut pending, Vec::with_capacity(STREAM_CHUNK));
                            if tx.send(Ok(FileChunk { data })).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx
                            .send(Err(envd_broke(format!("reading: {}", e.without_url()))))
                            .await;
                        return;
                    }
                }
            }
            if !pending.is_empty() {
                let _ = tx.send(Ok(FileChunk { data: pending })).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn write_file_stream(
        &self,
        req: Request<tonic::Streaming<WriteFileStreamRequest>>,
    ) -> Result<Response<FileEntry>, Status> {
        let mut parts = req.into_inner();
        let start = match parts.next().await {
            Some(Ok(WriteFileStreamRequest {
                part: Some(Part::Start(s)),
            })) => s,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("the first message must be start")),
        };
        let id = capsule_id(&start.capsule_id)?;
        let envd = self.manager.envd(&id)?;
        let body = parts.map(|m| match m {
            Ok(WriteFileStreamRequest {
                part: Some(Part::Data(d)),
            }) => Ok(bytes::Bytes::from(d)),
            Ok(_) => Err(std::io::Error::other("only data may follow start")),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        });
        envd.write_file(
            &start.path,
            user_of(&start.user),
            reqwest::Body::wrap_stream(body),
        )
        .await?;
        self.stat_entry(&envd, &start.path, &start.user).await
    }

    async fn list_dir(
        &self,
        req: Request<ListDirRequest>,
    ) -> Result<Response<ListDirResponse>, Status> {
        let r = req.into_inner();
        let list: filesystem::ListDirResponse = self
            .envd(&r.capsule_id)?
            .unary(
                "/filesystem.Filesystem/ListDir",
                &filesystem::ListDirRequest {
                    path: r.path,
                    depth: r.depth,
                },
                user_of(&r.user),
            )
            .await?;
        Ok(Response::new(ListDirResponse {
            entries: list.entries.into_iter().map(entry).collect(),
        }))
    }

    async fn stat(&self, req: Request<FileRequest>) -> Result<Response<FileEntry>, Status> {
        let r = req.into_inner();
        let envd = self.envd(&r.capsule_id)?;
        self.stat_entry(&envd, &r.path, &r.user).await
    }

    async fn make_dir(&self, req: Request<FileRequest>) -> Result<Response<FileEntry>, Status> {
        let r = req.into_inner();
        let made: filesystem::MakeDirResponse = self
            .envd(&r.capsule_id)?
            .unary(
                "/filesystem.Filesystem/MakeDir",
                &filesystem::MakeDirRequest { path: r.path },
                user_of(&r.user),
            )
            .await?;
        Ok(Response::new(entry(made.entry.unwrap_or_default())))
    }

    async fn r#move(&self, req: Request<MoveRequest>) -> Result<Response<FileEntry>, Status> {
        let r = req.into_inner();
        let moved: filesystem::MoveResponse = self
            .envd(&r.capsule_id)?
            .unary(
                "/filesystem.Filesystem/Move",
                &filesystem::MoveRequest {
                    source: r.source,
                    destination: r.destination,
                },
                user_of(&r.user),
            )
            .await?;
        Ok(Response::new(entry(moved.entry.unwrap_or_default())))
    }

    type WatchDirStream = ReceiverStream<Result<WatchDirEvent, Status>>;

    async fn watch_dir(
        &self,
        req: Request<WatchDirRequest>,
    ) -> Result<Response<Self::WatchDirStream>, Status> {
        let r = req.into_inner();
        let mut events = self
            .envd(&r.capsule_id)?
            .watch_dir(&r.path, r.recursive, user_of(&r.user))
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let msg = ev.map_err(Status::from).map(|ev| {
                    let event = match ev {
                        envd_client::WatchEvent::Started => {
                            watch_dir_event::Event::Started(watch_dir_event::Started {})
                        }
                        envd_client::WatchEvent::Changed { name, kind } => {
                            watch_dir_event::Event::Fs(watch_dir_event::FsEvent {
                                name,
                                r#type: fs_event_type(&kind) as i32,
                            })
                        }
                    };
                    WatchDirEvent { event: Some(event) }
                });
                // Dropping `events` when the client goes away ends the watch in envd.
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn snapshot_capsule(
        &self,
        req: Request<SnapshotCapsuleRequest>,
    ) -> Result<Response<Template>, Status> {
        let r = req.into_inner();
        let id = capsule_id(&r.capsule_id)?;
        let made = self.manager.snapshot(&id, &r.name, r.overwrite).await?;
        Ok(Response::new(template_pb(made)))
    }

    async fn list_templates(
        &self,
        _req: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        Ok(Response::new(ListTemplatesResponse {
            templates: self
                .manager
                .templates()
                .into_iter()
                .map(template_pb)
                .collect(),
        }))
    }

    async fn delete_template(
        &self,
        req: Request<DeleteTemplateRequest>,
    ) -> Result<Response<DeleteTemplateResponse>, Status> {
        self.manager.delete_template(&req.into_inner().name)?;
        Ok(Response::new(DeleteTemplateResponse {}))
    }

    async fn remove(&self, req: Request<FileRequest>) -> Result<Response<RemoveResponse>, Status> {
        let r = req.into_inner();
        let _: filesystem::RemoveResponse = self
            .envd(&r.capsule_id)?
            .unary(
                "/filesystem.Filesystem/Remove",
                &filesystem::RemoveRequest { path: r.path },
                user_of(&r.user),
            )
            .await?;
        Ok(Response::new(RemoveResponse {}))
    }
}

impl AgentService {
    /// The envd of the running capsule `raw_id` names.
    fn envd(&self, raw_id: &str) -> Result<envd_client::EnvdClient, Status> {
        Ok(self.manager.envd(&capsule_id(raw_id)?)?)
    }

    async fn stat_entry(
        &self,
        envd: &envd_client::EnvdClient,
        path: &str,
        user: &str,
    ) -> Result<Response<FileEntry>, Status> {
        let st: filesystem::StatResponse = envd
            .unary(
                "/filesystem.Filesystem/Stat",
                &filesystem::StatRequest { path: path.into() },
                user_of(user),
            )
            .await?;
        Ok(Response::new(entry(st.entry.unwrap_or_default())))
    }
}

/// Serves the agent on `listen` until `shutdown` resolves (see [`wrenn_rpc::serve`]: TCP with
/// `TCP_NODELAY` and TLS when `tls` is given, or a Unix socket; TLS over a Unix socket is
/// refused).
pub async fn serve(
    listen: Listen,
    tls: Option<tonic::transport::ServerTlsConfig>,
    manager: Arc<Manager>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    let routes = tonic::service::Routes::new(AgentService::new(manager));
    Ok(wrenn_rpc::serve(listen, tls, routes, shutdown).await?)
}

fn tag_selector(tag: String) -> process::ProcessSelector {
    process::ProcessSelector {
        selector: Some(process::process_selector::Selector::Tag(tag)),
    }
}

/// Turns envd's process events into the agent's, as a gRPC stream.
fn forward_events(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &Status) -> Option<&str> {
        s.metadata().get(reason::KEY).and_then(|v| v.to_str().ok())
    }

    /// The capsule's troubles carry a reason, so the control plane does not take them for the
    /// host's; the host's own (capacity) carry none.
    #[test]
    fn capsule_errors_carry_their_reason() {
        let cases = [
            (
                AgentError::NoSpace("writing /x".into()),
                tonic::Code::ResourceExhausted,
                Some(reason::INSUFFICIENT_STORAGE),
            ),
            (
                AgentError::CapsuleLimit("the inotify watch limit is reached".into()),
                tonic::Code::ResourceExhausted,
                Some(reason::INSUFFICIENT_STORAGE),
            ),
            (
                AgentError::TooLarge("bigger than 16 MiB".into()),
                tonic::Code::ResourceExhausted,
                Some(reason::TOO_LARGE),
            ),
            (
                AgentError::Envd("POST /files: connection refused".into()),
                tonic::Code::Unavailable,
                Some(reason::CAPSULE),
            ),
            (
                AgentError::ResourceExhausted("no free network slot".into()),
                tonic::Code::ResourceExhausted,
                None,
            ),
            (
                AgentError::InvalidArgument("invalid environment variable".into()),
                tonic::Code::InvalidArgument,
                None,
            ),
        ];
        for (err, code, want) in cases {
            let what = err.to_string();
            let s = Status::from(err);
            assert_eq!((s.code(), why(&s)), (code, want), "{what}");
        }
    }
}
