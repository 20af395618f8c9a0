// Over 600 lines: one fake of the whole agent.v1 service (every RPC), kept in one place.
//! A fake host agent: agent.v1 served in-process on a loopback port, with capsules kept in
//! memory. It stands for the hosts a test does not boot (no QEMU, no network slots) behind the
//! server's real gRPC client, so the control plane's own logic runs unchanged. It keeps the
//! real agent's state rules (pause needs `running`, resume needs `paused`, an unknown capsule is
//! `NotFound`), and a test can make any call fail once ([`FakeAgent::fail_next`]) or change a
//! capsule behind the server's back ([`FakeAgent::set_state`], [`FakeAgent::forget`]).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
};

use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::{
    transport::{server::TcpIncoming, Channel, Endpoint, Server},
    Request, Response, Status, Streaming,
};
use wrenn_proto::agent::v1::{
    agent_client::AgentClient,
    agent_server::{Agent, AgentServer},
    Capsule, CapsuleRef, CapsuleState, ConnectProcessRequest, CreateCapsuleRequest,
    DeleteTemplateRequest, DeleteTemplateResponse, DestroyCapsuleResponse, ExecEvent, ExecRequest,
    ExecResponse, FileChunk, FileEntry, FileRequest, GetMetricsRequest, GetMetricsResponse,
    HostInfoRequest, HostInfoResponse, KillProcessRequest, KillProcessResponse,
    ListCapsulesRequest, ListCapsulesResponse, ListDirRequest, ListDirResponse,
    ListProcessesResponse, ListTemplatesRequest, ListTemplatesResponse, MoveRequest, PingResponse,
    PtyAttachRequest, PtyInputRequest, PtyInputResponse, PtyResizeRequest, PtyResizeResponse,
    ReadFileResponse, RemoveResponse, SetCapsuleNetworkRequest, SnapshotCapsuleRequest,
    StartBackgroundRequest, StartBackgroundResponse, Template, WatchDirEvent, WatchDirRequest,
    WriteFileRequest, WriteFileStreamRequest,
};
use wrenn_proto::agent::v1::{
    transfer_chunk::{Data, Header, Part, Trailer},
    ExportTemplateRequest, ImportImageRequest, ImportImageResponse, TransferChunk, TransferKind,
};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Default)]
struct Inner {
    capsules: HashMap<String, Capsule>,
    /// Call name → the error its next call answers.
    failures: HashMap<&'static str, Status>,
    /// Every call, by name, in order.
    calls: Vec<(&'static str, String)>,
    next: u64,
    /// Snapshot templates it received (`ImportTemplate`) or was given ([`FakeAgent::add_template`]).
    templates: Vec<String>,
    /// How long the next create answers after it made the capsule ([`FakeAgent::slow_create`]).
    slow_create: Option<std::time::Duration>,
}

/// The fake agent's memory, shared with the test.
#[derive(Clone, Default)]
pub struct FakeAgent(Arc<Mutex<Inner>>);

impl FakeAgent {
    /// Serves agent.v1 on a loopback port; the client the server's `AppState` holds.
    #[allow(dead_code)]
    pub async fn start() -> (FakeAgent, AgentClient<Channel>) {
        let (fake, address) = FakeAgent::serve().await;
        let channel = Endpoint::from_shared(address).unwrap().connect_lazy();
        (fake, AgentClient::new(channel))
    }

    /// Serves agent.v1 on a loopback port: the fake, and its address (`http://127.0.0.1:…`),
    /// for a host row (several fakes are several hosts).
    pub async fn serve() -> (FakeAgent, String) {
        let fake = FakeAgent::default();
        // Ids unique across fakes too (several replicas' agents, one database).
        let mut seed = [0u8; 4];
        getrandom::fill(&mut seed).unwrap();
        fake.inner().next = u64::from(u32::from_le_bytes(seed)) * 1_000_000;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = fake.clone();
        tokio::spawn(async move {
            Server::builder()
                .add_service(AgentServer::new(served))
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
        });
        (fake, format!("http://{addr}"))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap()
    }

    /// The next call of `call` (the agent.v1 method's snake_case name) answers `status`.
    pub fn fail_next(&self, call: &'static str, status: Status) {
        self.inner().failures.insert(call, status);
    }

    /// The capsules the fake holds, by id.
    pub fn capsules(&self) -> HashMap<String, Capsule> {
        self.inner().capsules.clone()
    }

    /// How many times `call` was made.
    pub fn calls(&self, call: &str) -> Vec<String> {
        self.inner()
            .calls
            .iter()
            .filter(|(c, _)| *c == call)
            .map(|(_, arg)| arg.clone())
            .collect()
    }

    /// Changes a capsule's state on the "host" (a timeout, a crash), with an error text.
    pub fn set_state(&self, id: &str, state: CapsuleState, error: &str) {
        let mut inner = self.inner();
        let c = inner.capsules.get_mut(id).expect("a capsule of the fake");
        c.state = state as i32;
        c.error = error.into();
    }

    /// Capsule `id`'s address (where the proxy reaches its ports): a loopback server stands
    /// for its guest.
    #[allow(dead_code)] // used by the HTTPS tests only
    pub fn set_address(&self, id: &str, address: &str) {
        let mut inner = self.inner();
        let c = inner.capsules.get_mut(id).expect("a capsule of the fake");
        c.address = address.into();
    }

    /// The fake holds snapshot template `name` (it can export it).
    #[allow(dead_code)] // used by the transfer tests only
    pub fn add_template(&self, name: &str) {
        self.inner().templates.push(name.into());
    }

    /// The snapshot templates the fake holds.
    #[allow(dead_code)] // used by the transfer tests only
    pub fn templates(&self) -> Vec<String> {
        self.inner().templates.clone()
    }

    /// Puts a capsule on the "host".
    #[allow(dead_code)] // used by the transfer and handler tests only
    pub fn put(&self, c: Capsule) {
        self.inner().capsules.insert(c.id.clone(), c);
    }

    /// The next create makes its capsule at once and answers `after` later, as a real
    /// agent's finishes its work when its caller has gone.
    #[allow(dead_code)] // used by the handler tests only
    pub fn slow_create(&self, after: std::time::Duration) {
        self.inner().slow_create = Some(after);
    }

    /// The host loses a capsule.
    pub fn forget(&self, id: &str) {
        self.inner().capsules.remove(id);
    }

    /// Records the call; its planned failure, if any.
    fn enter(&self, call: &'static str, arg: &str) -> Result<(), Status> {
        let mut inner = self.inner();
        inner.calls.push((call, arg.to_string()));
        match inner.failures.remove(call) {
            Some(s) => Err(s),
            None => Ok(()),
        }
    }

    /// `id`'s capsule changed by `f`, or `NotFound`.
    fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Capsule) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut inner = self.inner();
        let c = inner
            .capsules
            .get_mut(id)
            .ok_or_else(|| Status::not_found(format!("capsule {id} not found")))?;
        f(c)
    }

    /// Moves `id` from `from` to `to`, as the real agent does (`capsule is X, not Y` otherwise).
    fn transition(
        &self,
        id: &str,
        from: CapsuleState,
        to: CapsuleState,
    ) -> Result<Response<Capsule>, Status> {
        self.with(id, |c| {
            if c.state != from as i32 {
                let now = CapsuleState::try_from(c.state).unwrap_or(CapsuleState::Unspecified);
                return Err(Status::failed_precondition(format!(
                    "capsule is {}, not {}",
                    now.as_str_name().to_lowercase(),
                    from.as_str_name().to_lowercase()
                )));
            }
            c.state = to as i32;
            Ok(Response::new(c.clone()))
        })
    }
}

fn unused<T>(call: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "the fake agent has no {call}"
    )))
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    async fn host_info(
        &self,
        _: Request<HostInfoRequest>,
    ) -> Result<Response<HostInfoResponse>, Status> {
        self.enter("host_info", "")?;
        Ok(Response::new(HostInfoResponse {
            arch: "x86_64".into(),
            cpus: 2,
            ..Default::default()
        }))
    }

    async fn create_capsule(
        &self,
        req: Request<CreateCapsuleRequest>,
    ) -> Result<Response<Capsule>, Status> {
        let r = req.into_inner();
        self.enter("create_capsule", &r.template)?;
        // Its base templates, and the snapshot templates it holds.
        if r.template != "minimal"
            && r.template != "python"
            && !self.inner().templates.contains(&r.template)
        {
            return Err(Status::not_found(format!(
                "template {} not found",
                r.template
            )));
        }
        // A capsule id, unique across fakes (several fakes are several hosts).
        let id = wrenn_types::Id::new(wrenn_types::IdKind::Capsule).to_string();
        let c = Capsule {
            id: id.clone(),
            template: r.template,
            state: CapsuleState::Running as i32,
            vcpus: if r.vcpus == 0 { 1 } else { r.vcpus },
            memory_mib: if r.memory_mib == 0 { 512 } else { r.memory_mib },
            disk_mib: if r.disk_mib == 0 { 2048 } else { r.disk_mib },
            egress: r.egress,
            metadata: r.metadata,
            timeout_secs: r.timeout_secs,
            egress_policy: r.egress_policy,
            envd_access_token: format!("envd-token-of-{id}"),
            ..Default::default()
        };
        let slow = {
            let mut inner = self.inner();
            inner.capsules.insert(id, c.clone());
            inner.slow_create.take()
        };
        if let Some(after) = slow {
            tokio::time::sleep(after).await;
        }
        Ok(Response::new(c))
    }

    async fn get_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        let id = req.into_inner().id;
        self.enter("get_capsule", &id)?;
        self.with(&id, |c| Ok(Response::new(c.clone())))
    }

    async fn list_capsules(
        &self,
        _: Request<ListCapsulesRequest>,
    ) -> Result<Response<ListCapsulesResponse>, Status> {
        self.enter("list_capsules", "")?;
        Ok(Response::new(ListCapsulesResponse {
            capsules: self.capsules().into_values().collect(),
        }))
    }

    async fn pause_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        let id = req.into_inner().id;
        self.enter("pause_capsule", &id)?;
        self.transition(&id, CapsuleState::Running, CapsuleState::Paused)
    }

    async fn resume_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        let id = req.into_inner().id;
        self.enter("resume_capsule", &id)?;
        self.transition(&id, CapsuleState::Paused, CapsuleState::Running)
    }

    async fn destroy_capsule(
        &self,
        req: Request<CapsuleRef>,
    ) -> Result<Response<DestroyCapsuleResponse>, Status> {
        let id = req.into_inner().id;
        self.enter("destroy_capsule", &id)?;
        match self.inner().capsules.remove(&id) {
            Some(_) => Ok(Response::new(DestroyCapsuleResponse {})),
            None => Err(Status::not_found(format!("capsule {id} not found"))),
        }
    }

    async fn fork_capsule(
        &self,
        req: Request<wrenn_proto::agent::v1::ForkCapsuleRequest>,
    ) -> Result<Response<wrenn_proto::agent::v1::ForkCapsuleResponse>, Status> {
        let id = req.into_inner().id;
        self.enter("fork_capsule", &id)?;
        // A fake: forks need real VMs (the agent's `fork` tests and the CLI's).
        Err(Status::unimplemented("the fake agent does not fork"))
    }

    async fn set_capsule_network(
        &self,
        req: Request<SetCapsuleNetworkRequest>,
    ) -> Result<Response<Capsule>, Status> {
        let r = req.into_inner();
        self.enter("set_capsule_network", &r.capsule_id)?;
        self.with(&r.capsule_id, |c| {
            c.egress = r.egress;
            c.egress_policy = r.egress_policy;
            Ok(Response::new(c.clone()))
        })
    }

    async fn get_metrics(
        &self,
        req: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let id = req.into_inner().capsule_id;
        self.enter("get_metrics", &id)?;
        let unix = wrenn_server::db::now_ms() / 1000;
        // One sample a second ago, of a known capsule.
        self.with(&id, |_| {
            Ok(Response::new(GetMetricsResponse {
                points: vec![wrenn_proto::agent::v1::MetricPoint {
                    unix: unix - 1,
                    cpu_pct: 12.5,
                    mem_bytes: 64 << 20,
                    disk_bytes: 100 << 20,
                }],
            }))
        })
    }

    async fn ping(&self, req: Request<CapsuleRef>) -> Result<Response<PingResponse>, Status> {
        let id = req.into_inner().id;
        self.enter("ping", &id)?;
        self.with(&id, |_| Ok(Response::new(PingResponse {})))
    }

    async fn exec(&self, _: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        unused("exec")
    }

    type ExecStreamStream = Stream_<ExecEvent>;

    async fn exec_stream(
        &self,
        _: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        unused("exec_stream")
    }

    async fn start_background(
        &self,
        _: Request<StartBackgroundRequest>,
    ) -> Result<Response<StartBackgroundResponse>, Status> {
        unused("start_background")
    }

    async fn set_defaults(
        &self,
        _: Request<wrenn_proto::agent::v1::SetDefaultsRequest>,
    ) -> Result<Response<wrenn_proto::agent::v1::SetDefaultsResponse>, Status> {
        unused("set_defaults")
    }

    async fn list_processes(
        &self,
        _: Request<CapsuleRef>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        unused("list_processes")
    }

    async fn kill_process(
        &self,
        _: Request<KillProcessRequest>,
    ) -> Result<Response<KillProcessResponse>, Status> {
        unused("kill_process")
    }

    type PtyAttachStream = Stream_<ExecEvent>;

    async fn pty_attach(
        &self,
        _: Request<PtyAttachRequest>,
    ) -> Result<Response<Self::PtyAttachStream>, Status> {
        unused("pty_attach")
    }

    async fn pty_input(
        &self,
        _: Request<PtyInputRequest>,
    ) -> Result<Response<PtyInputResponse>, Status> {
        unused("pty_input")
    }

    async fn pty_resize(
        &self,
        _: Request<PtyResizeRequest>,
    ) -> Result<Response<PtyResizeResponse>, Status> {
        unused("pty_resize")
    }

    type ConnectProcessStream = Stream_<ExecEvent>;

    async fn connect_process(
        &self,
        _: Request<ConnectProcessRequest>,
    ) -> Result<Response<Self::ConnectProcessStream>, Status> {
        unused("connect_process")
    }

    async fn read_file(
        &self,
        _: Request<FileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        unused("read_file")
    }

    async fn write_file(
        &self,
        _: Request<WriteFileRequest>,
    ) -> Result<Response<FileEntry>, Status> {
        unused("write_file")
    }

    type ReadFileStreamStream = Stream_<FileChunk>;

    async fn read_file_stream(
        &self,
        _: Request<FileRequest>,
    ) -> Result<Response<Self::ReadFileStreamStream>, Status> {
        unused("read_file_stream")
    }

    async fn write_file_stream(
        &self,
        _: Request<Streaming<WriteFileStreamRequest>>,
    ) -> Result<Response<FileEntry>, Status> {
        unused("write_file_stream")
    }

    async fn list_dir(
        &self,
        _: Request<ListDirRequest>,
    ) -> Result<Response<ListDirResponse>, Status> {
        unused("list_dir")
    }

    async fn stat(&self, _: Request<FileRequest>) -> Result<Response<FileEntry>, Status> {
        unused("stat")
    }

    async fn make_dir(&self, _: Request<FileRequest>) -> Result<Response<FileEntry>, Status> {
        unused("make_dir")
    }

    async fn r#move(&self, _: Request<MoveRequest>) -> Result<Response<FileEntry>, Status> {
        unused("move")
    }

    async fn remove(&self, _: Request<FileRequest>) -> Result<Response<RemoveResponse>, Status> {
        unused("remove")
    }

    type WatchDirStream = Stream_<WatchDirEvent>;

    async fn watch_dir(
        &self,
        _: Request<WatchDirRequest>,
    ) -> Result<Response<Self::WatchDirStream>, Status> {
        unused("watch_dir")
    }

    async fn snapshot_capsule(
        &self,
        _: Request<SnapshotCapsuleRequest>,
    ) -> Result<Response<Template>, Status> {
        unused("snapshot_capsule")
    }

    async fn list_templates(
        &self,
        _: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        self.enter("list_templates", "")?;
        let t = |name: &str| Template {
            name: name.into(),
            vcpus: 1,
            memory_mib: 512,
            disk_bytes: 2048 << 20,
            ..Default::default()
        };
        let base = |name: &str| Template {
            kind: wrenn_proto::agent::v1::TemplateKind::Base as i32,
            ..t(name)
        };
        let mut templates = vec![base("minimal"), base("python")];
        templates.extend(self.inner().templates.iter().map(|n| Template {
            kind: wrenn_proto::agent::v1::TemplateKind::Snapshot as i32,
            ..t(n)
        }));
        Ok(Response::new(ListTemplatesResponse { templates }))
    }

    async fn import_image(
        &self,
        _req: Request<ImportImageRequest>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        // This fake has no registry nor images to make templates of.
        Err(Status::unimplemented("the fake agent imports no images"))
    }

    async fn delete_template(
        &self,
        req: Request<DeleteTemplateRequest>,
    ) -> Result<Response<DeleteTemplateResponse>, Status> {
        let name = req.into_inner().name;
        self.enter("delete_template", &name)?;
        let mut inner = self.inner();
        let before = inner.templates.len();
        inner.templates.retain(|t| *t != name);
        if inner.templates.len() == before {
            return Err(Status::not_found(format!("template {name} not found")));
        }
        Ok(Response::new(DeleteTemplateResponse {}))
    }

    type ExportTemplateStream = Stream_<TransferChunk>;

    async fn export_template(
        &self,
        req: Request<ExportTemplateRequest>,
    ) -> Result<Response<Self::ExportTemplateStream>, Status> {
        let name = req.into_inner().name;
        self.enter("export_template", &name)?;
        if !self.inner().templates.contains(&name) {
            return Err(Status::not_found(format!("template {name} not found")));
        }
        Ok(Response::new(fake_stream(
            TransferKind::Template,
            &name,
            Vec::new(),
        )))
    }

    async fn import_template(
        &self,
        req: Request<Streaming<TransferChunk>>,
    ) -> Result<Response<Template>, Status> {
        let (name, _) = fake_receive(req.into_inner(), TransferKind::Template).await?;
        self.enter("import_template", &name)?;
        let mut inner = self.inner();
        if !inner.templates.contains(&name) {
            inner.templates.push(name.clone());
        }
        Ok(Response::new(Template {
            name,
            ..Default::default()
        }))
    }

    type ExportCapsuleStream = Stream_<TransferChunk>;

    async fn export_capsule(
        &self,
        req: Request<CapsuleRef>,
    ) -> Result<Response<Self::ExportCapsuleStream>, Status> {
        let id = req.into_inner().id;
        self.enter("export_capsule", &id)?;
        let c = self.with(&id, |c| {
            if c.state != CapsuleState::Paused as i32 {
                return Err(Status::failed_precondition("capsule is not paused"));
            }
            Ok(c.clone())
        })?;
        let body = prost::Message::encode_to_vec(&c);
        Ok(Response::new(fake_stream(TransferKind::Capsule, &id, body)))
    }

    async fn import_capsule(
        &self,
        req: Request<Streaming<TransferChunk>>,
    ) -> Result<Response<Capsule>, Status> {
        let (id, body) = fake_receive(req.into_inner(), TransferKind::Capsule).await?;
        self.enter("import_capsule", &id)?;
        let c: Capsule = prost::Message::decode(body.as_slice())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut inner = self.inner();
        if inner.capsules.contains_key(&id) {
            return Err(Status::already_exists(format!(
                "capsule {id} already exists"
            )));
        }
        inner.capsules.insert(id, c.clone());
        Ok(Response::new(c))
    }
}

/// A fake transfer: header, one data chunk of `body` (if any), trailer (no files, no hashes).
fn fake_stream(kind: TransferKind, name: &str, body: Vec<u8>) -> Stream_<TransferChunk> {
    let mut parts = vec![Part::Header(Header {
        kind: kind as i32,
        name: name.into(),
        files: Vec::new(),
    })];
    if !body.is_empty() {
        parts.push(Part::Data(Data {
            file: 0,
            offset: 0,
            bytes: body,
        }));
    }
    parts.push(Part::Trailer(Trailer { sha256: Vec::new() }));
    Box::pin(tokio_stream::iter(
        parts
            .into_iter()
            .map(|p| Ok(TransferChunk { part: Some(p) })),
    ))
}

/// Reads a fake transfer: its name and data; a stream without a trailer is `Aborted`.
async fn fake_receive(
    mut s: Streaming<TransferChunk>,
    kind: TransferKind,
) -> Result<(String, Vec<u8>), Status> {
    use tokio_stream::StreamExt;
    let mut name = None;
    let mut body = Vec::new();
    while let Some(chunk) = s.next().await {
        match chunk?.part {
            Some(Part::Header(h)) if h.kind == kind as i32 => name = Some(h.name),
            Some(Part::Data(d)) => body.extend_from_slice(&d.bytes),
            Some(Part::Trailer(_)) => {
                let name = name.ok_or_else(|| Status::invalid_argument("no header"))?;
                return Ok((name, body));
            }
            _ => return Err(Status::invalid_argument("bad transfer stream")),
        }
    }
    Err(Status::aborted("the stream ended before its trailer"))
}
