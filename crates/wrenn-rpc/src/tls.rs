//! Loading what a CA issued, and the TLS settings of both ends of the agent's gRPC service.
//!
//! An agent only loads the files it was given (`ca.pem`, `agent.pem`, `agent.key`): it serves
//! TLS and requires a client certificate from the same CA ([`server_tls_config`]). The control
//! plane presents `client.pem` + `client.key` and trusts only the CA ([`client_tls_config`]).
//! Making the CA and issuing certificates is the control plane's ([`crate::pki`]).

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{KeyPair, PublicKeyData};
use time::OffsetDateTime;
use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};

use crate::{
    error::{Result, RpcError},
    files::{ensure_private_dir, read_text, write_atomic},
};

/// The CA certificate in a PKI folder.
pub const CA_CERT: &str = "ca.pem";
/// The CA key in a PKI folder.
/// The stem of the agent's server identity (`agent.pem`, `agent.key`).
pub const AGENT_STEM: &str = "agent";
/// The stem of the control plane's client identity (`client.pem`, `client.key`).
pub const CLIENT_STEM: &str = "client";

const DAY: Duration = Duration::from_secs(24 * 3600);
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn tls_err(msg: impl Into<String>) -> RpcError {
    RpcError::Tls(msg.into())
}

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// `dir/<stem>.pem` and `dir/<stem>.key`.
    pub fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        )
    }

    /// Writes `dir/<stem>.key` (0600) and `dir/<stem>.pem` (0644), each atomically; creates
    /// `dir` (0700) when missing.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        ensure_private_dir(dir)?;
        let (cert, key) = Identity::paths(dir, stem);
        write_atomic(&key, self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&cert, self.cert_pem.as_bytes(), 0o644)
    }

    /// Reads `dir/<stem>.pem` and `dir/<stem>.key` and checks that they belong together.
    pub fn load(dir: &Path, stem: &str) -> Result<Identity> {
        let (cert, key) = Identity::paths(dir, stem);
        let id = Identity {
            cert_pem: read_text(&cert)?,
            key_pem: read_text(&key)?,
        };
        id.check()
            .map_err(|e| tls_err(format!("{} and {}: {e}", cert.display(), key.display())))?;
        Ok(id)
    }

    /// Checks that the certificate parses and that the key is the certificate's.
    pub fn check(&self) -> Result<()> {
        let spki = parse_cert(&self.cert_pem, |c| Ok(c.public_key().raw.to_vec()))?;
        let key = parse_key(&self.key_pem)?;
        if key.subject_public_key_info() != spki {
            return Err(tls_err("the key does not belong to the certificate"));
        }
        Ok(())
    }

    /// When the certificate stops being valid (Unix seconds).
    pub fn not_after(&self) -> Result<i64> {
        parse_cert(&self.cert_pem, |c| Ok(c.validity().not_after.timestamp()))
    }

    fn to_tonic(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// The agent's TLS: its own identity, and client certificates signed by `ca_pem` required.
pub fn server_tls_config(ca_pem: &str, identity: &Identity) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(identity.to_tonic())
        .client_ca_root(Certificate::from_pem(ca_pem))
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// A client's TLS: trusts only `ca_pem`, presents `identity`, and expects the server's
/// certificate to name `domain` (a DNS name or an IP address).
pub fn client_tls_config(ca_pem: &str, identity: &Identity, domain: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(identity.to_tonic())
        .domain_name(domain)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// The agent's TLS from a PKI folder: `ca.pem`, `agent.pem`, `agent.key`. Warns when the
/// agent's certificate expires within 30 days.
pub fn load_server_tls(dir: &Path) -> Result<ServerTlsConfig> {
    let ca_pem = read_text(&dir.join(CA_CERT))?;
    parse_cert(&ca_pem, |_| Ok(()))
        .map_err(|e| tls_err(format!("{}: {e}", dir.join(CA_CERT).display())))?;
    let identity = Identity::load(dir, AGENT_STEM)?;
    let not_after = identity.not_after()?;
    let left = not_after - OffsetDateTime::now_utc().unix_timestamp();
    if left <= 0 {
        tracing::error!(dir = %dir.display(), "the agent's certificate has expired: reissue it");
    } else if left < 30 * DAY.as_secs() as i64 {
        tracing::warn!(
            dir = %dir.display(),
            days = left / DAY.as_secs() as i64,
            "the agent's certificate expires soon: reissue it"
        );
    }
    Ok(server_tls_config(&ca_pem, &identity))
}

/// A client's TLS from a PKI folder: `ca.pem`, `client.pem`, `client.key`.
pub fn load_client_tls(dir: &Path, domain: &str) -> Result<ClientTlsConfig> {
    let ca_pem = read_text(&dir.join(CA_CERT))?;
    let identity = Identity::load(dir, CLIENT_STEM)?;
    Ok(client_tls_config(&ca_pem, &identity, domain))
}

/// What a certificate says: for the control plane's records and for checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    /// Its subject alternative names (DNS names and IP addresses), as text.
    pub names: Vec<String>,
    pub server_auth: bool,
    pub client_auth: bool,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// SHA-256 of its DER, lowercase hex.
    pub sha256: String,
}

/// Reads the first certificate of `pem`.
pub fn cert_info(pem: &str) -> Result<CertInfo> {
    use sha2::Digest;
    use x509_parser::extensions::GeneralName;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| tls_err(format!("not a PEM certificate: {e}")))?;
    let sha256 = sha2::Sha256::digest(&block.contents)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    parse_cert(pem, |c| {
        let common_name = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|n| n.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut names = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            names.push(std::net::IpAddr::from(a).to_string());
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            names.push(std::net::IpAddr::from(a).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let (server_auth, client_auth) = match c.extended_key_usage() {
            Ok(Some(e)) => (e.value.server_auth, e.value.client_auth),
            _ => (false, false),
        };
        Ok(CertInfo {
            common_name,
            names,
            server_auth,
            client_auth,
            not_after: c.validity().not_after.timestamp(),
            sha256,
        })
    })
}

/// Whether the CA certificate `ca_pem` signed the certificate `cert_pem`.
pub fn signed_by(cert_pem: &str, ca_pem: &str) -> Result<bool> {
    let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| tls_err(format!("the CA: not a PEM certificate: {e}")))?;
    let ca = ca_block
        .parse_x509()
        .map_err(|e| tls_err(format!("the CA: not an X.509 certificate: {e}")))?;
    parse_cert(cert_pem, |c| {
        Ok(c.issuer() == ca.subject() && c.verify_signature(Some(ca.public_key())).is_ok())
    })
}

pub(crate) fn parse_key(pem: &str) -> Result<KeyPair> {
    KeyPair::from_pem(pem).map_err(|e| tls_err(format!("not a usable PKCS#8 private key: {e}")))
}

/// Parses the first certificate of `pem` and hands it to `f`.
pub(crate) fn parse_cert<T>(
    pem: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> Result<T>,
) -> Result<T> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| tls_err(format!("not a PEM certificate: {e}")))?;
    if block.label != "CERTIFICATE" {
        return Err(tls_err(format!(
            "expected a CERTIFICATE PEM block, found {:?}",
            block.label
        )));
    }
    let cert = block
        .parse_x509()
        .map_err(|e| tls_err(format!("not an X.509 certificate: {e}")))?;
    f(&cert)
}
