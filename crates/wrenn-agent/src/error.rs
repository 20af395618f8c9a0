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
    /// What the host lacks to start (programs, devices, templates), as one line.
    #[error("{0}")]
    Prerequisites(String),
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
