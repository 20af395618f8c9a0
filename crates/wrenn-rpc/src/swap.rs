//! Mutual TLS whose certificate can be replaced while serving: a registered agent's
//! certificate is short-lived and renewed by the control plane ([`SwappableTls::swap`]), and
//! the listener keeps running. Each new connection's handshake uses the configuration current
//! at its accept; connections already open keep theirs.
//!
//! The handshakes happen here (rustls through `tokio-rustls`), not in tonic: tonic's own TLS
//! is fixed at start. Clients must present a certificate from the CA given; the ALPN is `h2`.

use std::{
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        server::WebPkiClientVerifier,
        RootCertStore, ServerConfig,
    },
    TlsAcceptor,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::{
    error::Result,
    tls::{tls_err, Identity, HANDSHAKE_TIMEOUT},
};

/// A server TLS configuration (the CA clients must come from, and this server's identity)
/// that [`SwappableTls::swap`] replaces in place. Clones share it.
#[derive(Clone)]
pub struct SwappableTls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for SwappableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwappableTls").finish_non_exhaustive()
    }
}

impl SwappableTls {
    /// Clients need a certificate signed by `ca_pem`; the server presents `identity`.
    pub fn new(ca_pem: &str, identity: &Identity) -> Result<SwappableTls> {
        Ok(SwappableTls {
            current: Arc::new(RwLock::new(Arc::new(server_config(ca_pem, identity)?))),
        })
    }

    /// Replaces the CA and the identity for the connections accepted from now on. Nothing
    /// changes when they are unusable.
    pub fn swap(&self, ca_pem: &str, identity: &Identity) -> Result<()> {
        let next = Arc::new(server_config(ca_pem, identity)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn server_config(ca_pem: &str, identity: &Identity) -> Result<ServerConfig> {
    identity.check()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| tls_err(format!("the CA certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| tls_err(format!("the CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(tls_err("the CA PEM holds no certificate"));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_err(format!("the client certificate check: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("the server certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| tls_err(format!("the server key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(format!("the server identity: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// One accepted TLS connection, as tonic serves it.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// The TLS connections of `listener`: each accepted socket (`TCP_NODELAY`) is handshaken in a
/// task of its own (at most [`HANDSHAKE_TIMEOUT`]) with the configuration of that moment.
/// Refused handshakes (a client without a certificate of the CA) are logged and dropped. The
/// accepting stops when the stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: SwappableTls,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(Ok(TlsConn(conn))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
