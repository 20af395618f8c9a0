//! Transfers between hosts: `ExportTemplate`, `ImportTemplate`, `ExportCapsule`,
//! `ImportCapsule` (see [`crate::transfer`]).

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wrenn_proto::agent::v1::{Capsule, CapsuleRef, ExportTemplateRequest, Template, TransferChunk};

use super::{capsule_id, lifecycle::to_pb, templates::template_pb, AgentService};
use crate::manager::Imported;

pub(super) type Chunks = ReceiverStream<Result<TransferChunk, Status>>;

pub(super) async fn export_template(
    svc: &AgentService,
    req: Request<ExportTemplateRequest>,
) -> Result<Response<Chunks>, Status> {
    let rx = svc.manager.export_template(&req.into_inner().name)?;
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn import_template(
    svc: &AgentService,
    req: Request<Streaming<TransferChunk>>,
) -> Result<Response<Template>, Status> {
    let got = svc.manager.import_template(req.into_inner()).await?;
    let info = match got {
        Imported::New(info, _) => info,
        Imported::AlreadyPresent(info) => {
            tracing::info!(template = %info.name, "template already present");
            info
        }
    };
    Ok(Response::new(template_pb(info)))
}

pub(super) async fn export_capsule(
    svc: &AgentService,
    req: Request<CapsuleRef>,
) -> Result<Response<Chunks>, Status> {
    let id = capsule_id(&req.into_inner().id)?;
    let rx = svc.manager.export_capsule(&id).await?;
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn import_capsule(
    svc: &AgentService,
    req: Request<Streaming<TransferChunk>>,
) -> Result<Response<Capsule>, Status> {
    let rec = svc.manager.import_capsule(req.into_inner()).await?;
    Ok(Response::new(to_pb(rec)))
}
