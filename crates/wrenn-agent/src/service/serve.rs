//! Serving the agent on a listen address.

use std::sync::Arc;

use super::AgentService;
use crate::listen::Listen;
use crate::{
    error::{chain, AgentError},
    manager::Manager,
};

/// Serves the agent on `listen` until `shutdown` resolves: TCP (with `TCP_NODELAY`, and TLS
/// when `tls` is given) or a Unix socket (whose file is removed when serving ends). TLS over a
/// Unix socket is refused: the socket file is 0600, so only its owner can connect anyway.
pub async fn serve(
    listen: Listen,
    tls: Option<tonic::transport::ServerTlsConfig>,
    manager: Arc<Manager>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        if let Listen::Unix(sock) = &listen {
            return Err(AgentError::TlsOverUnix {
                path: sock.path().to_path_buf(),
            });
        }
        builder = builder.tls_config(tls).map_err(|e| {
            AgentError::Tls(format!("the server's TLS configuration: {}", chain(&e)))
        })?;
    }
    let router = builder.add_service(AgentService::new(manager));
    let served = match listen {
        Listen::Tcp(listener) => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Listen::Unix(sock) => {
            let (listener, _file) = sock.into_parts();
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    shutdown,
                )
                .await
        }
    };
    served.map_err(|e| AgentError::Transport(format!("serving gRPC: {}", chain(&e))))
}
