//! HTTPS for the API, the console and the port proxy (`--tls-listen`): the E2B SDK reaches
//! envd and `get_host()` ports only by `https://{port}-{id}.{domain}`, so the proxy's host
//! routing needs a certificate for `{domain}` and `*.{domain}`.
//!
//! The certificate comes from one of two places ([`CertSource`]):
//! - **Wrenn's own CA** in `PKI_DIR/https` (`ca.pem`, `ca.key`: made on first start, reused
//!   after; the folder 0700, keys 0600), a CA of its own, not the agents' one: clients trust
//!   it (`SSL_CERT_FILE=…/ca.pem`) for the web only. It issues `server.pem`/`server.key` for
//!   the names; a leaf that is missing, unreadable, not the CA's, for other names or within
//!   [`RENEW_BEFORE`] of its end is issued anew.
//! - **The operator's files** (`--tls-cert`, `--tls-key`), read again every check, so a
//!   renewed file is served without a restart.
//!
//! [`Https`] holds the rustls configuration; [`Https::spawn_refresh`] checks every
//! [`CHECK_EVERY`] and swaps it in for new connections. [`Listener`] is the TLS side of
//! `axum::serve`: each handshake in a task of its own (a slow client holds no one else up),
//! ALPN `h2` and `http/1.1`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        ServerConfig,
    },
    server::TlsStream,
    TlsAcceptor,
};
use wrenn_rpc::{
    pki::Pki,
    tls::{cert_info, signed_by, Identity},
};

use crate::{ApiError, Result};

/// The own CA's folder, under the control plane's PKI folder.
pub const CA_DIR: &str = "https";
/// The stem of the served certificate in that folder (`server.pem`, `server.key`).
pub const LEAF_STEM: &str = "server";
/// A leaf that ends sooner than this is issued anew (leaves last a year).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the certificate is checked (renewed or re-read) while serving.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_err(what: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("HTTPS: {what}"))
}

/// Where the served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Wrenn's own CA in `dir`; the leaf names `names`.
    Own { dir: PathBuf, names: Vec<String> },
    /// The operator's certificate chain and key (PEM).
    Files { cert: PathBuf, key: PathBuf },
}

impl CertSource {
    /// Wrenn's own CA in `pki_dir/https`, for `domain`, `*.domain` and the address HTTPS
    /// listens on when it is a specific one (`https://127.0.0.1:8443` then verifies too).
    pub fn own(pki_dir: &Path, domain: &str, listen: SocketAddr) -> CertSource {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut names = vec![domain.clone(), format!("*.{domain}")];
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        CertSource::Own {
            dir: pki_dir.join(CA_DIR),
            names,
        }
    }

    /// The CA certificate clients need to trust, for Wrenn's own CA.
    pub fn ca_file(&self) -> Option<PathBuf> {
        match self {
            CertSource::Own { dir, .. } => Some(dir.join(wrenn_rpc::tls::CA_CERT)),
            CertSource::Files { .. } => None,
        }
    }

    /// The identity to serve now.
    fn identity(&self) -> Result<Identity> {
        match self {
            CertSource::Own { dir, names } => Ok(own_leaf(dir, names, RENEW_BEFORE)?.0),
            CertSource::Files { cert, key } => {
                let read = |p: &Path| {
                    std::fs::read_to_string(p).map_err(|e| tls_err(format!("{}: {e}", p.display())))
                };
                let id = Identity {
                    cert_pem: read(cert)?,
                    key_pem: read(key)?,
                };
                id.check().map_err(|e| {
                    tls_err(format!("{} and {}: {e}", cert.display(), key.display()))
                })?;
                Ok(id)
            }
        }
    }
}

/// The own CA's leaf for `names` in `dir`: the one there when it is usable (the CA's, for
/// exactly these names, not ending within `renew_before`), else a new one, written 0600/0644.
/// Returns it and whether it was issued now. The CA is made on first use and reused after.
pub fn own_leaf(dir: &Path, names: &[String], renew_before: Duration) -> Result<(Identity, bool)> {
    let pki = Pki::load_or_create(dir).map_err(tls_err)?;
    if let Ok(id) = Identity::load(dir, LEAF_STEM) {
        let usable = cert_info(&id.cert_pem).is_ok_and(|info| {
            let left = info.not_after - time::OffsetDateTime::now_utc().unix_timestamp();
            let mut have = info.names.clone();
            let mut want = names.to_vec();
            have.sort();
            want.sort();
            have == want && left > renew_before.as_secs() as i64
        }) && signed_by(&id.cert_pem, pki.ca_pem()).unwrap_or(false);
        if usable {
            return Ok((id, false));
        }
    }
    let id = pki.issue_server(names).map_err(tls_err)?;
    id.write(dir, LEAF_STEM).map_err(tls_err)?;
    tracing::info!(dir = %dir.display(), ?names, "issued the HTTPS certificate");
    Ok((id, true))
}

fn server_config(id: &Identity) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("the certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
        .map_err(|e| tls_err(format!("the key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(format!("the certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The served TLS configuration and where its certificate comes from. Clones share it.
#[derive(Clone)]
pub struct Https {
    source: CertSource,
    current: Arc<RwLock<(Identity, Arc<ServerConfig>)>>,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Https {
    /// Loads (or makes) the certificate: an unusable one is an error here, at start.
    pub fn new(source: CertSource) -> Result<Https> {
        let id = source.identity()?;
        let config = server_config(&id)?;
        Ok(Https {
            source,
            current: Arc::new(RwLock::new((id, config))),
        })
    }

    pub fn source(&self) -> &CertSource {
        &self.source
    }

    /// The certificate served now (PEM).
    pub fn cert_pem(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .cert_pem
            .clone()
    }

    /// Renews (own CA) or re-reads (files) the certificate; connections accepted from now on
    /// get it. Returns whether it changed. On an error the served one stays.
    pub fn refresh(&self) -> Result<bool> {
        let id = self.source.identity()?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).0 == id {
            return Ok(false);
        }
        let config = server_config(&id)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (id, config);
        Ok(true)
    }

    /// Refreshes every `every` while the returned task runs.
    pub fn spawn_refresh(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let https = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let h = https.clone();
                match tokio::task::spawn_blocking(move || h.refresh()).await {
                    Ok(Ok(true)) => tracing::info!("serving a renewed HTTPS certificate"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "renewing the HTTPS certificate"),
                    Err(e) => tracing::error!(error = %e, "renewing the HTTPS certificate"),
                }
            }
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone(),
        )
    }

    /// Serves TLS on `listener`: the accepted, handshaken connections, for `axum::serve`.
    pub fn listener(&self, listener: TcpListener) -> std::io::Result<Listener> {
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let https = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = tx.closed() => break,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting an HTTPS connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = https.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(conn)) => {
                            let _ = tx.send((conn, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Listener { rx, local })
    }
}

/// TLS connections for `axum::serve`, from [`Https::listener`].
pub struct Listener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accepting task ended: nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names() -> Vec<String> {
        vec!["wrenn.example".into(), "*.wrenn.example".into()]
    }

    #[test]
    fn the_ca_is_kept_and_the_leaf_renewed_before_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let https = dir.path().join("pki").join(CA_DIR);
        let (a, made) = own_leaf(&https, &names(), RENEW_BEFORE).unwrap();
        assert!(made);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&https), 0o700);
        assert_eq!(mode(&https.join("ca.key")), 0o600);
        assert_eq!(mode(&https.join("server.key")), 0o600);
        let ca = std::fs::read_to_string(https.join("ca.pem")).unwrap();
        // A second start: the same CA, the same leaf.
        let (b, made) = own_leaf(&https, &names(), RENEW_BEFORE).unwrap();
        assert!(!made);
        assert_eq!(a, b);
        // Within the renewal window (a year's leaf, renewed when less than 400 days are left):
        // a new leaf from the same CA.
        let (c, made) = own_leaf(&https, &names(), Duration::from_secs(400 * 86400)).unwrap();
        assert!(made && c != a);
        assert_eq!(std::fs::read_to_string(https.join("ca.pem")).unwrap(), ca);
        assert!(signed_by(&c.cert_pem, &ca).unwrap());
        // Other names (the domain changed): a new leaf for them.
        let other = vec!["other.example".to_string(), "*.other.example".to_string()];
        let (d, made) = own_leaf(&https, &other, RENEW_BEFORE).unwrap();
        assert!(made);
        assert_eq!(cert_info(&d.cert_pem).unwrap().names, other);
        // A leaf of another CA in its place is replaced.
        let stranger = Pki::load_or_create(&dir.path().join("other")).unwrap();
        stranger
            .issue_server(&other)
            .unwrap()
            .write(&https, LEAF_STEM)
            .unwrap();
        let (e, made) = own_leaf(&https, &other, RENEW_BEFORE).unwrap();
        assert!(made && signed_by(&e.cert_pem, &ca).unwrap());
    }

    #[test]
    fn own_names_cover_the_domain_its_subdomains_and_a_specific_address() {
        let pki = Path::new("/p");
        let own = CertSource::own(pki, "Wrenn.Example.", "127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            own,
            CertSource::Own {
                dir: "/p/https".into(),
                names: vec![
                    "wrenn.example".into(),
                    "*.wrenn.example".into(),
                    "127.0.0.1".into()
                ]
            }
        );
        let CertSource::Own { names, .. } =
            CertSource::own(pki, "wrenn.example", "0.0.0.0:8443".parse().unwrap())
        else {
            unreachable!()
        };
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn operator_files_are_checked_and_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(&dir.path().join("ca")).unwrap();
        let (cert, key) = Identity::paths(dir.path(), "op");
        let source = CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        let e = Https::new(source.clone()).unwrap_err().to_string();
        assert!(e.contains("op.pem"), "{e}");
        let first = pki.issue_server(&names()).unwrap();
        first.write(dir.path(), "op").unwrap();
        let https = Https::new(source).unwrap();
        assert!(!https.refresh().unwrap());
        // A renewed file is served after the next check.
        let second = pki.issue_server(&names()).unwrap();
        second.write(dir.path(), "op").unwrap();
        assert!(https.refresh().unwrap());
        assert_eq!(https.cert_pem(), second.cert_pem);
        // A key that is not the certificate's: refused, and the served one stays.
        std::fs::write(&key, first.key_pem).unwrap();
        let e = https.refresh().unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        assert_eq!(https.cert_pem(), second.cert_pem);
    }
}
