//! The one error type of the host agent.

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid template name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9._-]{{0,63}}")]
    BadTemplateName(String),
    #[error("unknown template {0:?}")]
    UnknownTemplate(String),
    #[error("building the image of template {template} failed: {reason}")]
    ImageBuild { template: String, reason: String },
    #[error("envd: {0}")]
    Envd(String),
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
