//! The gRPC service `agent.v1.Agent` over the [`Manager`], one file per area: `lifecycle`,
//! `processes`, `files`, `templates`; [`serve`] serves it. The tonic trait impl here only
//! delegates. Errors become gRPC statuses through `From<AgentError> for Status` (in
//! [`crate::error`]).

mod files;
mod lifecycle;
mod processes;
mod templates;
mod transfer;

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wrenn_proto::{
    agent::v1::{
        agent_server::{Agent, AgentServer},
        Capsule, CapsuleRef, ConnectProcessRequest, CreateCapsuleRequest, DestroyCapsuleResponse,
        ExecEvent, ExecRequest, ExecResponse, FileChunk, FileEntry, FileRequest, GetMetricsRequest,
        GetMetricsResponse, HostInfoRequest, HostInfoResponse, KillProcessRequest,
        KillProcessResponse, ListCapsulesRequest, ListCapsulesResponse, ListDirRequest,
        ListDirResponse, ListProcessesResponse, MoveRequest, PingResponse, PtyAttachRequest,
        PtyInputRequest, PtyInputResponse, PtyResizeRequest, PtyResizeResponse, ReadFileResponse,
        RemoveResponse, SetDefaultsRequest, SetDefaultsResponse, StartBackgroundRequest,
        StartBackgroundResponse, WriteFileRequest, WriteFileStreamRequest,
    },
    agent::v1::{
        DeleteTemplateRequest, DeleteTemplateResponse, ExportTemplateRequest, ForkCapsuleRequest,
        ForkCapsuleResponse, ImportImageRequest, ImportImageResponse, ListTemplatesRequest,
        ListTemplatesResponse, SetCapsuleNetworkRequest, SnapshotCapsuleRequest, Template,
        TransferChunk, WatchDirEvent, WatchDirRequest,
    },
};
use wrenn_types::{Id, IdKind};

use crate::{envd_client, error::AgentError, manager::Manager};

pub use wrenn_rpc::listen::Listen;

/// Most bytes of stdout plus stderr one unary `Exec` returns, and of a whole-file read/write.
const MAX_EXEC_OUTPUT: usize = 16 << 20;

const MAX_WHOLE_FILE: usize = 16 << 20;

const STREAM_CHUNK: usize = 256 * 1024;

/// A request for more than one answer may carry.
fn too_large(msg: String) -> Status {
    Status::from(AgentError::TooLarge(msg))
}

/// A capsule's envd stream broke off.
fn envd_broke(msg: String) -> Status {
    Status::from(AgentError::Envd(msg))
}

fn capsule_id(raw: &str) -> Result<String, Status> {
    Id::parse(IdKind::Capsule, raw)
        .map(|id| id.to_string())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn user_of(u: &str) -> Option<&str> {
    (!u.is_empty()).then_some(u)
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

impl AgentService {
    /// The envd of the running capsule `raw_id` names.
    fn envd(&self, raw_id: &str) -> Result<envd_client::EnvdClient, Status> {
        Ok(self.manager.envd(&capsule_id(raw_id)?)?)
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type ExecStreamStream = ReceiverStream<Result<ExecEvent, Status>>;
    type PtyAttachStream = ReceiverStream<Result<ExecEvent, Status>>;
    type ConnectProcessStream = ReceiverStream<Result<ExecEvent, Status>>;
    type ReadFileStreamStream = ReceiverStream<Result<FileChunk, Status>>;
    type WatchDirStream = ReceiverStream<Result<WatchDirEvent, Status>>;
    type ExportTemplateStream = transfer::Chunks;
    type ExportCapsuleStream = transfer::Chunks;

    async fn host_info(
        &self,
        req: Request<HostInfoRequest>,
    ) -> Result<Response<HostInfoResponse>, Status> {
        lifecycle::host_info(self, req).await
    }

    async fn create_capsule(
        &self,
        req: Request<CreateCapsuleRequest>,
    ) -> Result<Response<Capsule>, Status> {
        lifecycle::create_capsule(self, req).await
    }

    async fn get_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        lifecycle::get_capsule(self, req).await
    }

    async fn list_capsules(
        &self,
        req: Request<ListCapsulesRequest>,
    ) -> Result<Response<ListCapsulesResponse>, Status> {
        lifecycle::list_capsules(self, req).await
    }

    async fn pause_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        lifecycle::pause_capsule(self, req).await
    }

    async fn resume_capsule(&self, req: Request<CapsuleRef>) -> Result<Response<Capsule>, Status> {
        lifecycle::resume_capsule(self, req).await
    }

    async fn destroy_capsule(
        &self,
        req: Request<CapsuleRef>,
    ) -> Result<Response<DestroyCapsuleResponse>, Status> {
        lifecycle::destroy_capsule(self, req).await
    }

    async fn fork_capsule(
        &self,
        req: Request<ForkCapsuleRequest>,
    ) -> Result<Response<ForkCapsuleResponse>, Status> {
        lifecycle::fork_capsule(self, req).await
    }

    async fn set_capsule_network(
        &self,
        req: Request<SetCapsuleNetworkRequest>,
    ) -> Result<Response<Capsule>, Status> {
        lifecycle::set_capsule_network(self, req).await
    }

    async fn get_metrics(
        &self,
        req: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        lifecycle::get_metrics(self, req).await
    }

    async fn ping(&self, req: Request<CapsuleRef>) -> Result<Response<PingResponse>, Status> {
        lifecycle::ping(self, req).await
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        processes::exec(self, req).await
    }

    async fn exec_stream(
        &self,
        req: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        processes::exec_stream(self, req).await
    }

    async fn pty_attach(
        &self,
        req: Request<PtyAttachRequest>,
    ) -> Result<Response<Self::PtyAttachStream>, Status> {
        processes::pty_attach(self, req).await
    }

    async fn pty_input(
        &self,
        req: Request<PtyInputRequest>,
    ) -> Result<Response<PtyInputResponse>, Status> {
        processes::pty_input(self, req).await
    }

    async fn pty_resize(
        &self,
        req: Request<PtyResizeRequest>,
    ) -> Result<Response<PtyResizeResponse>, Status> {
        processes::pty_resize(self, req).await
    }

    async fn connect_process(
        &self,
        req: Request<ConnectProcessRequest>,
    ) -> Result<Response<Self::ConnectProcessStream>, Status> {
        processes::connect_process(self, req).await
    }

    async fn start_background(
        &self,
        req: Request<StartBackgroundRequest>,
    ) -> Result<Response<StartBackgroundResponse>, Status> {
        processes::start_background(self, req).await
    }

    async fn set_defaults(
        &self,
        req: Request<SetDefaultsRequest>,
    ) -> Result<Response<SetDefaultsResponse>, Status> {
        processes::set_defaults(self, req).await
    }

    async fn list_processes(
        &self,
        req: Request<CapsuleRef>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        processes::list_processes(self, req).await
    }

    async fn kill_process(
        &self,
        req: Request<KillProcessRequest>,
    ) -> Result<Response<KillProcessResponse>, Status> {
        processes::kill_process(self, req).await
    }

    async fn read_file(
        &self,
        req: Request<FileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        files::read_file(self, req).await
    }

    async fn write_file(
        &self,
        req: Request<WriteFileRequest>,
    ) -> Result<Response<FileEntry>, Status> {
        files::write_file(self, req).await
    }

    async fn read_file_stream(
        &self,
        req: Request<FileRequest>,
    ) -> Result<Response<Self::ReadFileStreamStream>, Status> {
        files::read_file_stream(self, req).await
    }

    async fn write_file_stream(
        &self,
        req: Request<tonic::Streaming<WriteFileStreamRequest>>,
    ) -> Result<Response<FileEntry>, Status> {
        files::write_file_stream(self, req).await
    }

    async fn list_dir(
        &self,
        req: Request<ListDirRequest>,
    ) -> Result<Response<ListDirResponse>, Status> {
        files::list_dir(self, req).await
    }

    async fn stat(&self, req: Request<FileRequest>) -> Result<Response<FileEntry>, Status> {
        files::stat(self, req).await
    }

    async fn make_dir(&self, req: Request<FileRequest>) -> Result<Response<FileEntry>, Status> {
        files::make_dir(self, req).await
    }

    async fn r#move(&self, req: Request<MoveRequest>) -> Result<Response<FileEntry>, Status> {
        files::r#move(self, req).await
    }

    async fn watch_dir(
        &self,
        req: Request<WatchDirRequest>,
    ) -> Result<Response<Self::WatchDirStream>, Status> {
        files::watch_dir(self, req).await
    }

    async fn snapshot_capsule(
        &self,
        req: Request<SnapshotCapsuleRequest>,
    ) -> Result<Response<Template>, Status> {
        templates::snapshot_capsule(self, req).await
    }

    async fn list_templates(
        &self,
        req: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        templates::list_templates(self, req).await
    }

    async fn delete_template(
        &self,
        req: Request<DeleteTemplateRequest>,
    ) -> Result<Response<DeleteTemplateResponse>, Status> {
        templates::delete_template(self, req).await
    }

    async fn import_image(
        &self,
        req: Request<ImportImageRequest>,
    ) -> Result<Response<ImportImageResponse>, Status> {
        templates::import_image(self, req).await
    }

    async fn remove(&self, req: Request<FileRequest>) -> Result<Response<RemoveResponse>, Status> {
        files::remove(self, req).await
    }

    async fn export_template(
        &self,
        req: Request<ExportTemplateRequest>,
    ) -> Result<Response<Self::ExportTemplateStream>, Status> {
        transfer::export_template(self, req).await
    }

    async fn import_template(
        &self,
        req: Request<tonic::Streaming<TransferChunk>>,
    ) -> Result<Response<Template>, Status> {
        transfer::import_template(self, req).await
    }

    async fn export_capsule(
        &self,
        req: Request<CapsuleRef>,
    ) -> Result<Response<Self::ExportCapsuleStream>, Status> {
        transfer::export_capsule(self, req).await
    }

    async fn import_capsule(
        &self,
        req: Request<tonic::Streaming<TransferChunk>>,
    ) -> Result<Response<Capsule>, Status> {
        transfer::import_capsule(self, req).await
    }
}

/// Serves the agent on `listen` until `shutdown` resolves (see [`wrenn_rpc::serve`]: TCP with
/// `TCP_NODELAY` and TLS when `tls` is given, or a Unix socket; TLS over a Unix socket is
/// refused).
pub async fn serve(
    listen: Listen,
    tls: Option<wrenn_rpc::ServerTls>,
    manager: Arc<Manager>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    let routes = tonic::service::Routes::new(AgentService::new(manager));
    Ok(wrenn_rpc::serve(listen, tls, routes, shutdown).await?)
}
