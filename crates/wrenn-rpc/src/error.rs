//! The one error type of the transport.

/// What went wrong reaching, serving or securing an agent.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// A listen address or an agent address that does not parse.
    #[error("{0}")]
    BadAddress(String),
    /// Settings that do not go together (TLS over a Unix socket, `https://` without TLS, …).
    #[error("{0}")]
    BadSettings(String),
    /// The socket path is taken: a live server answers there, or it is another kind of file.
    #[error("{0}")]
    SocketTaken(String),
    /// Certificates, keys and TLS settings (the PKI).
    #[error("TLS: {0}")]
    Tls(String),
    /// Serving or reaching the gRPC service (listen sockets, connections).
    #[error("{0}")]
    Transport(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RpcError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RpcError::Io {
            context: context.into(),
            source,
        }
    }
}

/// `e` and its sources, `: `-separated (tonic's transport errors say little on their own).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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

pub type Result<T, E = RpcError> = std::result::Result<T, E>;
