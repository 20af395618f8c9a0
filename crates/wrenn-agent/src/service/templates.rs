//! Templates: `SnapshotCapsule`, `ListTemplates`, `DeleteTemplate`.

use tonic::{Request, Response, Status};

use super::{capsule_id, AgentService};
use wrenn_proto::agent::v1::{
    DeleteTemplateRequest, DeleteTemplateResponse, ImportImageRequest, ImportImageResponse,
    ListTemplatesRequest, ListTemplatesResponse, SnapshotCapsuleRequest, Template, TemplateKind,
};

pub(super) fn template_pb(t: crate::templates::TemplateInfo) -> Template {
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

pub(super) async fn snapshot_capsule(
    svc: &AgentService,
    req: Request<SnapshotCapsuleRequest>,
) -> Result<Response<Template>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    let fresh = match r.fresh {
        Some(f) if !f.workdir.is_empty() && !f.workdir.starts_with('/') => {
            return Err(Status::invalid_argument("workdir must be absolute"))
        }
        Some(f) => Some(crate::templates::FreshDefaults {
            env: f.env,
            user: f.user,
            workdir: f.workdir,
        }),
        None => None,
    };
    let made = svc
        .manager
        .snapshot(&id, &r.name, r.overwrite, fresh)
        .await?;
    Ok(Response::new(template_pb(made)))
}

pub(super) async fn list_templates(
    svc: &AgentService,
    _req: Request<ListTemplatesRequest>,
) -> Result<Response<ListTemplatesResponse>, Status> {
    Ok(Response::new(ListTemplatesResponse {
        templates: svc
            .manager
            .templates()
            .into_iter()
            .map(template_pb)
            .collect(),
    }))
}

pub(super) async fn delete_template(
    svc: &AgentService,
    req: Request<DeleteTemplateRequest>,
) -> Result<Response<DeleteTemplateResponse>, Status> {
    svc.manager.delete_template(&req.into_inner().name)?;
    Ok(Response::new(DeleteTemplateResponse {}))
}

pub(super) async fn import_image(
    svc: &AgentService,
    req: Request<ImportImageRequest>,
) -> Result<Response<ImportImageResponse>, Status> {
    let reference = req.into_inner().reference;
    let made = svc.manager.import_image(&reference).await?;
    let run = made.image.config.config.clone().unwrap_or_default();
    Ok(Response::new(ImportImageResponse {
        template: made.name,
        digest: made.image.digest,
        env: run.env.unwrap_or_default(),
        user: run.user.unwrap_or_default(),
        workdir: run.working_dir.unwrap_or_default(),
        cached: made.cached,
    }))
}
