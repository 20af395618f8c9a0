//! The gRPC service `agent.v1.Agent` over the [`Manager`].

use std::{sync::Arc, time::Instant};

use tonic::{Request, Response, Status};
use wrenn_proto::agent::v1::{
    agent_server::{Agent, AgentServer},
    Capsule, CapsuleRef, CapsuleState as PbState, CreateCapsuleRequest, DestroyCapsuleResponse,
    ExecRequest, ExecResponse, HostInfoRequest, HostInfoResponse, ListCapsulesRequest,
    ListCapsulesResponse,
};
use wrenn_types::{CapsuleState, Id, IdKind};

use crate::{
    capsule::CreateSpec, envd_client, error::AgentError, manager::Manager, netslot::SlotAddrs,
    record::CapsuleRecord,
};

/// Most bytes of stdout plus stderr one unary `Exec` returns.
const MAX_EXEC_OUTPUT: usize = 16 << 20;

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        let msg = e.to_string();
        match e {
            AgentError::NotFound(_) | AgentError::UnknownTemplate(_) => Status::not_found(msg),
            AgentError::InvalidArgument(_) | AgentError::BadTemplateName(_) => {
                Status::invalid_argument(msg)
            }
            AgentError::FailedPrecondition(_) => Status::failed_precondition(msg),
            AgentError::ResourceExhausted(_) => Status::resource_exhausted(msg),
            AgentError::Envd(_) => Status::unavailable(msg),
            AgentError::ImageBuild { .. }
            | AgentError::Network(_)
            | AgentError::Vmm(_)
            | AgentError::Io { .. } => {
                tracing::error!(error = %msg, "agent request failed");
                Status::internal(msg)
            }
        }
    }
}

fn pb_state(s: CapsuleState) -> PbState {
    match s {
        CapsuleState::Pending => PbState::Pending,
        CapsuleState::Starting => PbState::Starting,
        CapsuleState::Running => PbState::Running,
        CapsuleState::Paused => PbState::Paused,
        CapsuleState::Stopped => PbState::Stopped,
        CapsuleState::Error => PbState::Error,
    }
}

fn to_pb(rec: CapsuleRecord) -> Capsule {
    let address = SlotAddrs::new(rec.slot)
        .map(|a| a.capsule_ip.to_string())
        .unwrap_or_default();
    Capsule {
        id: rec.id,
        template: rec.template,
        state: pb_state(rec.state) as i32,
        vcpus: rec.vcpus,
        memory_mib: rec.memory_mib,
        egress: rec.egress,
        created_at_unix: rec.created_at_unix,
        metadata: rec.metadata,
        address,
        error: rec.error.unwrap_or_default(),
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
                env_vars: r.env_vars,
                metadata: r.metadata,
                egress: r.egress,
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

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = req.into_inner();
        let id = capsule_id(&r.capsule_id)?;
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is empty"));
        }
        let started = Instant::now();
        let out = self
            .manager
            .exec(
                &id,
                envd_client::ExecRequest {
                    cmd: r.cmd,
                    args: r.args,
                    env: r.env,
                    cwd: (!r.cwd.is_empty()).then_some(r.cwd),
                    user: (!r.user.is_empty()).then_some(r.user),
                    timeout: (r.timeout_ms > 0)
                        .then(|| std::time::Duration::from_millis(u64::from(r.timeout_ms))),
                },
            )
            .await?;
        if out.stdout.len() + out.stderr.len() > MAX_EXEC_OUTPUT {
            return Err(Status::resource_exhausted(format!(
                "the command wrote more than {MAX_EXEC_OUTPUT} bytes; use the streaming exec"
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
}

/// Serves the agent on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    manager: Arc<Manager>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(AgentService::new(manager))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
