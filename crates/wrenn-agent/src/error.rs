//! The one error type of the host agent: variants named by cause; [`AgentError`]'s
//! `From` impl for `tonic::Status` (in this file) is the one place they get gRPC codes.

use wrenn_types::CapsuleStatus;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    // Templates.
    #[error("invalid template name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9._-]{{0,63}}")]
    BadTemplateName(String),
    /// No image recipe of that name (`wrenn template build`).
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    #[error("building the image of template {template} failed: {reason}")]
    ImageBuild { template: String, reason: String },
    /// No ready template of that name and kind.
    #[error("template {name} not found")]
    TemplateNotFound { name: String },
    #[error("template {name} already exists")]
    TemplateExists { name: String },
    /// A capsule restores from the template (`snapshot_dir`).
    #[error("template {name} is in use by capsules; destroy them first")]
    TemplateInUse { name: String },
    /// Base templates are neither replaced nor deleted through the API.
    #[error("{name} is a base template; {refusal}")]
    BaseTemplate { name: String, refusal: &'static str },
    /// A snapshot template's capsules keep its source's shape.
    #[error(
        "template {name} is a snapshot of a {vcpus}-vCPU, {memory_mib} MiB capsule; its \
         capsules have that shape"
    )]
    SnapshotShape {
        name: String,
        vcpus: u32,
        memory_mib: u32,
    },
    /// A shape outside the host's [`crate::templates::ShapePolicy`].
    #[error(
        "{vcpus} vCPUs with {memory_mib} MiB is not a shape this host offers: vCPUs one of \
         {offered_vcpus}, memory (MiB) one of {offered_memory} (or template {name}'s own \
         {own_vcpus} vCPUs with {own_memory_mib} MiB)"
    )]
    ShapeNotOffered {
        name: String,
        vcpus: u32,
        memory_mib: u32,
        offered_vcpus: String,
        offered_memory: String,
        own_vcpus: u32,
        own_memory_mib: u32,
    },
    /// A shape's snapshot was evicted between making and using it.
    #[error("the {vcpus}-vCPU snapshot of {name} is gone")]
    ShapeGone { name: String, vcpus: u32 },
    /// The agent's shape options (`--shape-vcpus`, `--shape-memory`) do not parse.
    #[error("{option}: {why}")]
    BadShapeOption { option: String, why: String },
    /// `qemu-img convert` of a snapshot template's disk failed.
    #[error("flattening the disk failed: {stderr}")]
    DiskFlatten { stderr: String },

    // Capsules.
    #[error("capsule {id} not found")]
    CapsuleNotFound { id: String },
    /// The capsule's task ended while asked something.
    #[error("capsule {id} is gone")]
    CapsuleGone { id: String },
    #[error("capsule {}is {state}, not running", .id.as_ref().map(|i| format!("{i} ")).unwrap_or_default())]
    NotRunning {
        /// Named in the message where the caller names it.
        id: Option<String>,
        state: CapsuleStatus,
    },
    #[error("capsule is {state}, not paused")]
    NotPaused { state: CapsuleStatus },
    /// Only running or paused capsules may do `action` (a sentence saying so).
    #[error("capsule is {state}; {rule}")]
    NotRunningOrPaused {
        state: CapsuleStatus,
        rule: &'static str,
    },
    /// The capsule failed earlier (its VMM died, a resume failed): only destroy works.
    #[error("capsule is in error: {why}")]
    InError { why: String },
    #[error(transparent)]
    Transition(#[from] wrenn_types::TransitionError),
    /// After an agent restart: only running (with a VMM) or paused capsules are taken over.
    #[error("a {state} capsule cannot be adopted")]
    NotAdoptable { state: CapsuleStatus },
    /// A capsule folder with no record to adopt.
    #[error("nothing to adopt")]
    NothingToAdopt,
    /// A create's vCPUs, memory or disk outside what any capsule may ask.
    #[error("{0}")]
    BadShape(String),
    #[error("disk_mib must be at least the template's {template_mib} MiB")]
    DiskBelowTemplate { template_mib: u64 },
    /// An egress allow or deny list that does not parse.
    #[error(transparent)]
    BadEgress(#[from] wrenn_types::egress::RuleError),
    /// An `--egress-allow-private` entry that is not an IPv4 CIDR.
    #[error("{0}")]
    BadPrivateRange(String),

    /// A fork child's disk rests on its fork image, which only this host has.
    #[error("capsule {id} is a fork child: it cannot leave this host yet")]
    ForkChildStays { id: String },
    /// A fork's child count out of range.
    #[error("a fork makes 1 to {max} children, not {count}")]
    ForkCount { count: u32, max: u32 },
    // The host's capacity.
    #[error("this host already runs {running} capsules (its limit)")]
    CapsuleLimitReached { running: usize },
    #[error(
        "not enough memory on this host: {wanted_mib} MiB asked, {free_mib} MiB free of the \
         {budget_mib} MiB capsules may use"
    )]
    MemoryFull {
        wanted_mib: u64,
        free_mib: u64,
        budget_mib: u64,
    },
    #[error("no free network slot")]
    NoFreeSlot,
    /// More memory than the host has at all: the request's fault.
    #[error(
        "{memory_mib} MiB of memory can never fit on this host: capsules may use {budget_mib} \
         MiB in all, each {overhead_mib} MiB more for its VMM"
    )]
    MemoryNeverFits {
        memory_mib: u32,
        budget_mib: u64,
        overhead_mib: u64,
    },
    /// More disk than the capsule storage holds at all: the request's fault.
    #[error(
        "a {disk_mib} MiB disk (with {memory_mib} MiB of memory) can never fit on this host: \
         its capsule storage holds {capacity_mib} MiB in all"
    )]
    DiskNeverFits {
        disk_mib: u64,
        memory_mib: u32,
        capacity_mib: u64,
    },
    /// The host's disk under the data folder is full now.
    #[error(
        "the host is out of disk space now: {wanted_mib} MiB asked, {free_mib} MiB free once \
         running capsules' disks and memory may fill; try again later or ask for a smaller disk"
    )]
    HostDiskFull { wanted_mib: u64, free_mib: u64 },
    /// What the host lacks to start (programs, devices, templates), as one line.
    #[error("{0}")]
    Prerequisites(String),

    // The capsule's envd.
    /// The capsule's envd failed or could not be reached (the capsule's fault, not the host's).
    #[error("envd: {0}")]
    Envd(String),
    /// envd refused the request (a missing file, a bad argument, …): its answer, by kind.
    #[error("{message}")]
    Guest { refusal: Refusal, message: String },
    /// The capsule's own disk is full (envd answered 507 / `ENOSPC`).
    #[error("the capsule's disk is full: {0}")]
    CapsuleDiskFull(String),
    /// A limit inside the capsule was reached (envd's `resource_exhausted`).
    #[error("{0}")]
    CapsuleLimit(String),
    /// The request asks for more than one answer may carry.
    #[error("{0}")]
    TooLarge(String),

    // The host's identity (registration, credentials, heartbeats).
    /// The credentials file or an identity the control plane answered is unusable.
    #[error("host identity: {0}")]
    Identity(String),
    /// The control plane refused or could not be reached.
    #[error("the control plane: {0}")]
    ControlPlane(#[from] wrenn_client::ClientError),

    // The host itself.
    #[error("network: {0}")]
    Network(String),
    /// Serving the gRPC service: listen addresses and sockets, TLS, connections.
    #[error(transparent)]
    Rpc(#[from] wrenn_rpc::RpcError),
    // Transfers between hosts (`crate::transfer`).
    /// A transfer stream that breaks the protocol (order, paths, sizes, offsets).
    #[error("bad transfer: {0}")]
    BadTransfer(String),
    /// A file whose bytes do not match the sender's SHA-256.
    #[error("transfer corrupted: {path} does not match its checksum")]
    TransferCorrupt { path: String },
    /// The stream ended (or broke off) before its trailer.
    #[error("transfer cut off: {0}")]
    TransferCut(String),
    #[error("capsule {id} already exists on this host")]
    CapsuleExists { id: String },
    /// Pulling or unpacking an OCI image (`crate::oci_template`).
    #[error(transparent)]
    Oci(#[from] wrenn_oci::OciError),
    #[error(transparent)]
    Vmm(#[from] wrenn_vmm::VmmError),
    #[error(transparent)]
    Random(#[from] wrenn_types::secret::RandomError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// How envd refused a request (its HTTP status or Connect code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Invalid,
    PermissionDenied,
    AlreadyExists,
    FailedPrecondition,
}

impl Refusal {
    /// envd's refusal of this kind with its message.
    pub fn error(self, message: String) -> AgentError {
        AgentError::Guest {
            refusal: self,
            message,
        }
    }
}

/// `e` and its sources, `: `-separated.
pub(crate) use wrenn_rpc::error::chain;
/// Why a gRPC error happened when its code alone cannot say (the `wrenn-reason` metadata).
pub use wrenn_rpc::reason;

impl AgentError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AgentError::Io {
            context: context.into(),
            source,
        }
    }
}

impl AgentError {
    /// How envd refused the request, if it did.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            AgentError::Guest { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }

    /// A full disk somewhere in the error or its sources (`ENOSPC`, `EDQUOT`), by errno.
    pub fn is_no_space(&self) -> bool {
        if matches!(self, AgentError::HostDiskFull { .. }) {
            return true;
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    return true;
                }
            }
            cur = e.source();
        }
        false
    }
}

/// `status` with its [`reason`] in the metadata.
fn with_reason(mut status: tonic::Status, why: &'static str) -> tonic::Status {
    status.metadata_mut().insert(
        reason::KEY,
        tonic::metadata::MetadataValue::from_static(why),
    );
    status
}

/// Every variant's gRPC code (and [`reason`] where the code cannot tell), in one place; the
/// message is the error's text.
impl From<AgentError> for tonic::Status {
    fn from(e: AgentError) -> tonic::Status {
        use tonic::Status;
        use AgentError as E;
        let msg = e.to_string();
        if e.is_no_space() {
            tracing::warn!(error = %msg, "the host's disk is full");
            let msg = match e {
                E::HostDiskFull { .. } | E::CapsuleDiskFull(_) => msg,
                _ => format!("the host is out of disk space: {msg}"),
            };
            return with_reason(
                Status::resource_exhausted(msg),
                reason::INSUFFICIENT_STORAGE,
            );
        }
        match e {
            E::TemplateNotFound { .. }
            | E::UnknownTemplate(_)
            | E::CapsuleNotFound { .. }
            | E::CapsuleGone { .. }
            | E::Guest {
                refusal: Refusal::NotFound,
                ..
            } => Status::not_found(msg),
            E::BadTemplateName(_)
            | E::SnapshotShape { .. }
            | E::ShapeNotOffered { .. }
            | E::BadShapeOption { .. }
            | E::BadShape(_)
            | E::DiskBelowTemplate { .. }
            | E::BadEgress(_)
            | E::BadPrivateRange(_)
            | E::MemoryNeverFits { .. }
            | E::DiskNeverFits { .. }
            | E::BadTransfer(_)
            | E::ForkCount { .. }
            | E::Guest {
                refusal: Refusal::Invalid,
                ..
            } => Status::invalid_argument(msg),
            E::TemplateInUse { .. }
            | E::ForkChildStays { .. }
            | E::BaseTemplate { .. }
            | E::ShapeGone { .. }
            | E::DiskFlatten { .. }
            | E::NotRunning { .. }
            | E::NotPaused { .. }
            | E::NotRunningOrPaused { .. }
            | E::InError { .. }
            | E::Transition(_)
            | E::NotAdoptable { .. }
            | E::NothingToAdopt
            | E::Prerequisites(_)
            | E::Guest {
                refusal: Refusal::FailedPrecondition,
                ..
            } => Status::failed_precondition(msg),
            E::TransferCorrupt { .. } => Status::data_loss(msg),
            E::TransferCut(_) => Status::aborted(msg),
            E::TemplateExists { .. }
            | E::CapsuleExists { .. }
            | E::Guest {
                refusal: Refusal::AlreadyExists,
                ..
            } => Status::already_exists(msg),
            E::Guest {
                refusal: Refusal::PermissionDenied,
                ..
            } => Status::permission_denied(msg),
            E::CapsuleLimitReached { .. } | E::MemoryFull { .. } | E::NoFreeSlot => {
                Status::resource_exhausted(msg)
            }
            E::CapsuleDiskFull(_) | E::CapsuleLimit(_) | E::HostDiskFull { .. } => with_reason(
                Status::resource_exhausted(msg),
                reason::INSUFFICIENT_STORAGE,
            ),
            E::TooLarge(_) => with_reason(Status::resource_exhausted(msg), reason::TOO_LARGE),
            E::Envd(_) => with_reason(Status::unavailable(msg), reason::CAPSULE),
            E::Rpc(wrenn_rpc::RpcError::BadAddress(_) | wrenn_rpc::RpcError::BadSettings(_)) => {
                Status::invalid_argument(msg)
            }
            E::Rpc(wrenn_rpc::RpcError::SocketTaken(_)) => Status::failed_precondition(msg),
            E::Oci(o) => oci_status(&o, msg),
            E::ImageBuild { .. }
            | E::Network(_)
            | E::Vmm(_)
            | E::Rpc(_)
            | E::Random(_)
            | E::Identity(_)
            | E::ControlPlane(_)
            | E::Io { .. } => {
                tracing::error!(error = %msg, "agent request failed");
                Status::internal(msg)
            }
        }
    }
}

/// The gRPC code of an OCI pull's failure: the image's or the reference's fault, or ours.
fn oci_status(e: &wrenn_oci::OciError, msg: String) -> tonic::Status {
    use tonic::Status;
    use wrenn_oci::OciError as O;
    match e {
        O::BadReference { .. }
        | O::NoPlatform { .. }
        | O::BadManifest(_)
        | O::BadLayer { .. }
        | O::PathEscape { .. }
        | O::BadDigest(_)
        | O::Config(_) => Status::invalid_argument(msg),
        O::NotFound { .. } => Status::not_found(msg),
        O::Unauthorized { .. } => Status::permission_denied(msg),
        O::TooLarge { .. } => with_reason(Status::resource_exhausted(msg), reason::TOO_LARGE),
        O::DigestMismatch { .. } => Status::data_loss(msg),
        O::Registry { .. } => Status::unavailable(msg),
        O::Io { .. } => {
            tracing::error!(error = %msg, "OCI image failed");
            Status::internal(msg)
        }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Status;

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
                AgentError::CapsuleDiskFull("writing /x".into()),
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
            (AgentError::NoFreeSlot, tonic::Code::ResourceExhausted, None),
            (
                AgentError::BadShape("vcpus must be 1..=32, not 33".into()),
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

    /// The messages and codes by cause are the ones the String variants carried before (the
    /// control plane shows them; tests and clients match on them).
    #[test]
    fn causes_keep_their_messages_and_codes() {
        use tonic::Code;
        let state = CapsuleStatus::Paused;
        let cases = [
            (
                AgentError::NotRunning { id: None, state },
                "capsule is paused, not running",
                Code::FailedPrecondition,
            ),
            (
                AgentError::NotRunning {
                    id: Some("cl-1".into()),
                    state,
                },
                "capsule cl-1 is paused, not running",
                Code::FailedPrecondition,
            ),
            (
                AgentError::CapsuleNotFound { id: "cl-1".into() },
                "capsule cl-1 not found",
                Code::NotFound,
            ),
            (
                AgentError::TemplateNotFound { name: "t".into() },
                "template t not found",
                Code::NotFound,
            ),
            (
                AgentError::SnapshotShape {
                    name: "t".into(),
                    vcpus: 2,
                    memory_mib: 512,
                },
                "template t is a snapshot of a 2-vCPU, 512 MiB capsule; its capsules have that \
                 shape",
                Code::InvalidArgument,
            ),
            (
                AgentError::BaseTemplate {
                    name: "minimal".into(),
                    refusal: "base templates are not deleted through the API",
                },
                "minimal is a base template; base templates are not deleted through the API",
                Code::FailedPrecondition,
            ),
            (
                AgentError::CapsuleLimitReached { running: 3 },
                "this host already runs 3 capsules (its limit)",
                Code::ResourceExhausted,
            ),
            (
                Refusal::AlreadyExists.error("exists".into()),
                "exists",
                Code::AlreadyExists,
            ),
        ];
        for (err, message, code) in cases {
            let s = Status::from(err);
            assert_eq!((s.code(), s.message()), (code, message));
        }
    }
}
