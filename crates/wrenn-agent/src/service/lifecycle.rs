//! Capsule lifecycle: host info; create, get, list, pause, resume, destroy, ping; egress
//! changes and metrics. These go through the capsule's queue (the manager).

use tonic::{Request, Response, Status};
use wrenn_proto::{
    agent::v1::{
        Capsule, CapsuleRef, CapsuleState as PbState, CreateCapsuleRequest, DestroyCapsuleResponse,
        ForkCapsuleRequest, ForkCapsuleResponse, GetMetricsRequest, GetMetricsResponse,
        HostInfoRequest, HostInfoResponse, ListCapsulesRequest, ListCapsulesResponse, MetricPoint,
        PingResponse, TimeoutAction,
    },
    agent::v1::{EgressPolicy as PbEgressPolicy, SetCapsuleNetworkRequest, TemplateKind},
};

use super::{capsule_id, AgentService};
use crate::{capsule::CreateSpec, netslot::SlotAddrs, record::CapsuleRecord};

pub(super) fn pb_action(a: crate::record::TimeoutAction) -> TimeoutAction {
    match a {
        crate::record::TimeoutAction::Pause => TimeoutAction::Pause,
        crate::record::TimeoutAction::Destroy => TimeoutAction::Destroy,
    }
}

pub(super) fn to_pb(rec: CapsuleRecord) -> Capsule {
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
        envd_access_token: rec.access_token,
    }
}

pub(super) fn policy_of(p: Option<PbEgressPolicy>) -> wrenn_types::egress::EgressPolicy {
    let p = p.unwrap_or_default();
    wrenn_types::egress::EgressPolicy {
        allow: p.allow,
        deny: p.deny,
    }
}

pub(super) async fn host_info(
    svc: &AgentService,
    _req: Request<HostInfoRequest>,
) -> Result<Response<HostInfoResponse>, Status> {
    Ok(Response::new(svc.manager.host_info()))
}

pub(super) async fn create_capsule(
    svc: &AgentService,
    req: Request<CreateCapsuleRequest>,
) -> Result<Response<Capsule>, Status> {
    let r = req.into_inner();
    let rec = svc
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

pub(super) async fn get_capsule(
    svc: &AgentService,
    req: Request<CapsuleRef>,
) -> Result<Response<Capsule>, Status> {
    let id = capsule_id(&req.into_inner().id)?;
    Ok(Response::new(to_pb(svc.manager.get(&id)?)))
}

pub(super) async fn list_capsules(
    svc: &AgentService,
    _req: Request<ListCapsulesRequest>,
) -> Result<Response<ListCapsulesResponse>, Status> {
    Ok(Response::new(ListCapsulesResponse {
        capsules: svc.manager.list().into_iter().map(to_pb).collect(),
    }))
}

pub(super) async fn pause_capsule(
    svc: &AgentService,
    req: Request<CapsuleRef>,
) -> Result<Response<Capsule>, Status> {
    let id = capsule_id(&req.into_inner().id)?;
    Ok(Response::new(to_pb(svc.manager.pause(&id).await?)))
}

pub(super) async fn resume_capsule(
    svc: &AgentService,
    req: Request<CapsuleRef>,
) -> Result<Response<Capsule>, Status> {
    let id = capsule_id(&req.into_inner().id)?;
    Ok(Response::new(to_pb(svc.manager.resume(&id).await?)))
}

pub(super) async fn destroy_capsule(
    svc: &AgentService,
    req: Request<CapsuleRef>,
) -> Result<Response<DestroyCapsuleResponse>, Status> {
    let id = capsule_id(&req.into_inner().id)?;
    svc.manager.destroy(&id).await?;
    Ok(Response::new(DestroyCapsuleResponse {}))
}

pub(super) async fn fork_capsule(
    svc: &AgentService,
    req: Request<ForkCapsuleRequest>,
) -> Result<Response<ForkCapsuleResponse>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.id)?;
    let forked = svc.manager.fork(&id, r.count).await?;
    Ok(Response::new(ForkCapsuleResponse {
        children: forked.children.into_iter().map(to_pb).collect(),
        source_paused_us: forked.source_paused_for.as_micros() as u64,
    }))
}

pub(super) async fn set_capsule_network(
    svc: &AgentService,
    req: Request<SetCapsuleNetworkRequest>,
) -> Result<Response<Capsule>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    let rec = svc
        .manager
        .set_network(&id, r.egress, &policy_of(r.egress_policy))
        .await?;
    Ok(Response::new(to_pb(rec)))
}

pub(super) async fn get_metrics(
    svc: &AgentService,
    req: Request<GetMetricsRequest>,
) -> Result<Response<GetMetricsResponse>, Status> {
    let r = req.into_inner();
    let id = capsule_id(&r.capsule_id)?;
    if r.range_secs == 0 || r.range_secs > 24 * 3600 {
        return Err(Status::invalid_argument("range_secs must be 1..=86400"));
    }
    let points = svc
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

pub(super) async fn ping(
    svc: &AgentService,
    req: Request<CapsuleRef>,
) -> Result<Response<PingResponse>, Status> {
    let id = capsule_id(&req.into_inner().id)?;
    svc.manager.ping(&id)?;
    Ok(Response::new(PingResponse {}))
}
