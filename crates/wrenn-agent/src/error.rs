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
    /// What the host lacks to start (programs, devices, templates), as one line.
    #[error("{0}")]
    Prerequisites(String),
    /// The host's disk under the data folder is full.
    #[error("{0}")]
    InsufficientStorage(String),
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
    /// A full disk somewhere in the error or its sources (`ENOSPC`, `EDQUOT`), by errno.
    pub fn is_no_space(&self) -> bool {
        if matches!(self, AgentError::InsufficientStorage(_)) {
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

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// The transport's errors, by the same causes as before it was its own crate.
impl From<wrenn_rpc::RpcError> for AgentError {
    fn from(e: wrenn_rpc::RpcError) -> Self {
        use wrenn_rpc::RpcError as R;
        match e {
            R::BadAddress(m) | R::BadSettings(m) => AgentError::InvalidArgument(m),
            R::SocketTaken(m) => AgentError::FailedPrecondition(m),
            R::Tls(m) => AgentError::Tls(m),
            R::Transport(m) => AgentError::Transport(m),
            R::Io { context, source } => AgentError::Io { context, source },
        }
    }
}
