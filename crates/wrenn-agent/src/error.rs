//! The one error type of the host agent.

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid template name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9._-]{{0,63}}")]
    BadTemplateName(String),
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    #[error("building the image of template {template} failed: {reason}")]
    ImageBuild { template: String, reason: String },
    /// The capsule's envd failed or could not be reached (the capsule's fault, not the host's).
    #[error("envd: {0}")]
    Envd(String),
    /// The capsule's own disk is full (envd answered 507 / `ENOSPC`).
    #[error("the capsule's disk is full: {0}")]
    NoSpace(String),
    /// A limit inside the capsule was reached (envd's `resource_exhausted`).
    #[error("{0}")]
    CapsuleLimit(String),
    /// The request asks for more than one answer may carry.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("network: {0}")]
    Network(String),
    /// Certificates, keys and TLS settings (the agent's PKI).
    #[error("TLS: {0}")]
    Tls(String),
    /// Serving or reaching the gRPC service (listen sockets, connections).
    #[error("{0}")]
    Transport(String),
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

/// Why a gRPC error happened when its code alone cannot say: the metadata entry [`reason::KEY`]
/// of the status. The control plane picks its answer by it (never by message text): a
/// capsule's full disk is not a host out of capacity, and a capsule whose envd fails is not an
/// unreachable host.
pub mod reason {
    /// The metadata key.
    pub const KEY: &str = "wrenn-reason";
    /// The capsule's disk is full, or another limit inside it was reached.
    pub const INSUFFICIENT_STORAGE: &str = "insufficient_storage";
    /// The request asks for more than one answer may carry.
    pub const TOO_LARGE: &str = "too_large";
    /// The capsule (its envd) failed or did not answer; the host is fine.
    pub const CAPSULE: &str = "capsule";
}

impl AgentError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AgentError::Io {
            context: context.into(),
            source,
        }
    }
}

/// `e` and its sources, `: `-separated (tonic's transport errors say little on their own).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
