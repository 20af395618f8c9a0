//! The agent's small PKI and its TLS settings.
//!
//! A CA (`ca.pem` + `ca.key`, ECDSA P-256, 10 years) lives in one private folder; it issues the
//! agents' server certificates (`agent.pem` + `agent.key`, extended key usage *server auth*
//! only) and the control plane's client certificates (`client.pem` + `client.key`, *client
//! auth* only), so an agent's certificate cannot be used to call another agent. The agent
//! serves TLS and requires a client certificate from the same CA ([`server_tls_config`]).
//!
//! Files: folders we create are 0700, keys 0600, certificates 0644; every file is written to a
//! temporary file and renamed into place, so a crash never leaves half a key. Keys are PKCS#8
//! PEM.

use std::{
    fmt,
    fs::{self, File},
    io::Write,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;
use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};

use crate::error::{AgentError, Result};

/// The CA certificate in a PKI folder.
pub const CA_CERT: &str = "ca.pem";
/// The CA key in a PKI folder.
pub const CA_KEY: &str = "ca.key";
/// The stem of the agent's server identity (`agent.pem`, `agent.key`).
pub const AGENT_STEM: &str = "agent";
/// The stem of the control plane's client identity (`client.pem`, `client.key`).
pub const CLIENT_STEM: &str = "client";

const DAY: Duration = Duration::from_secs(24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates last a year (never past the CA); reissue with `wrenn agent-cert`.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start an hour in the past so hosts whose clocks differ a little agree.
const BACKDATE: Duration = Duration::from_secs(3600);
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_err(msg: impl Into<String>) -> AgentError {
    AgentError::Tls(msg.into())
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

/// A CA that issues server and client certificates.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's end of validity; issued certificates never outlive it.
    ca_not_after: OffsetDateTime,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("ca_not_after", &self.ca_not_after)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the CA in `dir` (`ca.pem`, `ca.key`), creating it on first use: `dir` 0700 when
    /// created here, `ca.key` 0600. Holds an exclusive lock on `dir` meanwhile, so two
    /// processes starting together end with one CA.
    pub fn load_or_create(dir: &Path) -> Result<Pki> {
        ensure_private_dir(dir)?;
        let _lock = lock_dir(dir)?;
        let cert = dir.join(CA_CERT);
        let key = dir.join(CA_KEY);
        match (exists(&cert)?, exists(&key)?) {
            (true, true) => Pki::load(dir),
            (true, false) => Err(tls_err(format!(
                "{} exists but {} does not: restore the key, or remove the certificate to start \
                 a new CA (every certificate the old one issued stops working)",
                cert.display(),
                key.display()
            ))),
            // A key without a certificate is an interrupted first start: no certificate was
            // ever issued with it, so a new CA replaces it.
            (false, _) => Pki::create(dir),
        }
    }

    /// Loads an existing CA from `dir`.
    pub fn load(dir: &Path) -> Result<Pki> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let ca_pem = read_text(&cert_path)?;
        let key = parse_key(&read_text(&key_path)?)
            .map_err(|e| tls_err(format!("{}: {e}", key_path.display())))?;
        let (spki, is_ca, not_after) = parse_cert(&ca_pem, |c| {
            Ok((
                c.public_key().raw.to_vec(),
                c.is_ca(),
                c.validity().not_after.timestamp(),
            ))
        })
        .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?;
        if !is_ca {
            return Err(tls_err(format!(
                "{} is not a CA certificate",
                cert_path.display()
            )));
        }
        if key.subject_public_key_info() != spki {
            return Err(tls_err(format!(
                "{} does not belong to {}",
                key_path.display(),
                cert_path.display()
            )));
        }
        let ca_not_after = OffsetDateTime::from_unix_timestamp(not_after)
            .map_err(|e| tls_err(format!("{}: end of validity: {e}", cert_path.display())))?;
        if ca_not_after <= OffsetDateTime::now_utc() {
            return Err(tls_err(format!(
                "the CA in {} expired on {ca_not_after}",
                cert_path.display()
            )));
        }
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?;
        Ok(Pki {
            ca_pem,
            issuer,
            ca_not_after,
        })
    }

    fn create(dir: &Path) -> Result<Pki> {
        let key = new_key()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut suffix = [0u8; 4];
        random(&mut suffix)?;
        params.distinguished_name = dn(&format!("Wrenn CA {}", hex(&suffix)));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(|e| tls_err(format!("signing the CA certificate: {e}")))?;
        let ca_pem = cert.pem();
        // The key first: a crash in between leaves a key without a certificate, which the next
        // start replaces.
        write_atomic(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&dir.join(CA_CERT), ca_pem.as_bytes(), 0o644)?;
        tracing::info!(dir = %dir.display(), "created a new CA");
        let ca_not_after = params.not_after;
        Ok(Pki {
            ca_pem,
            issuer: Issuer::new(params, key),
            ca_not_after,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for `names`: DNS names and/or IP addresses (the first is also the
    /// common name).
    pub fn issue_server(&self, names: &[String]) -> Result<Identity> {
        let first = names
            .first()
            .ok_or_else(|| tls_err("a server certificate needs at least one name"))?;
        let sans = names.iter().map(|n| san(n)).collect::<Result<Vec<_>>>()?;
        self.issue(first, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose common name is `name`.
    pub fn issue_client(&self, name: &str) -> Result<Identity> {
        if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(tls_err(format!(
                "invalid client name {name:?}: 1 to 64 printable characters"
            )));
        }
        self.issue(name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Identity> {
        let key = new_key()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = (now + LEAF_VALIDITY).min(self.ca_not_after);
        params.serial_number = Some(serial()?);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_err(format!("signing a certificate for {common_name:?}: {e}")))?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The names an agent's certificate carries by default: `localhost`, `127.0.0.1` and this
/// host's name (when it is a valid DNS name).
pub fn default_server_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if valid_dns_name(host) && !names.iter().any(|n| n == host) {
        names.push(host.to_string());
    }
    names
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

fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| tls_err(format!("generating a key: {e}")))
}

fn parse_key(pem: &str) -> Result<KeyPair> {
    KeyPair::from_pem(pem).map_err(|e| tls_err(format!("not a usable PKCS#8 private key: {e}")))
}

/// Parses the first certificate of `pem` and hands it to `f`.
fn parse_cert<T>(
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

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Wrenn");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn san(name: &str) -> Result<SanType> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !valid_dns_name(name) {
        return Err(tls_err(format!(
            "{name:?} is neither an IP address nor a DNS name"
        )));
    }
    let ia5 = name
        .try_into()
        .map_err(|e| tls_err(format!("{name:?}: {e}")))?;
    Ok(SanType::DnsName(ia5))
}

/// Letters, digits and `-` in dot-separated labels of 1 to 63 characters, 253 at most in all.
fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn random(buf: &mut [u8]) -> Result<()> {
    wrenn_types::secret::fill(buf).map_err(|e| tls_err(e.to_string()))
}

/// A random positive 127-bit serial number.
fn serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    random(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .map_err(|e| AgentError::io(format!("checking {}", path.display()), e))
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| AgentError::io(format!("reading {}", path.display()), e))
}

/// Creates `dir` (and missing parents) with mode 0700; an existing folder is left as it is.
fn ensure_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| AgentError::io(format!("creating {}", dir.display()), e))
}

/// An exclusive `flock` on the folder itself, released when dropped.
fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>> {
    let f = File::open(dir).map_err(|e| AgentError::io(format!("opening {}", dir.display()), e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| AgentError::io(format!("locking {}", dir.display()), errno.into()))
}

/// Writes `data` to `path` with `mode` through a temporary file in the same folder, synced and
/// renamed into place.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| AgentError::io(ctx("writing"), e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| AgentError::io(ctx("setting the mode of"), e))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| AgentError::io(ctx("writing"), e))?;
    tmp.persist(path)
        .map_err(|e| AgentError::io(ctx("renaming into"), e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for ok in ["localhost", "a.b-c.example", "host1", "x.example."] {
            assert!(valid_dns_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a",
            "a-",
            "a b",
            "*.example",
            "ä.example",
            "a/b",
        ] {
            assert!(!valid_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn bad_names_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let e = pki.issue_server(&[]).unwrap_err().to_string();
        assert!(e.contains("at least one name"), "{e}");
        let e = pki
            .issue_server(&["ok".into(), "not a name".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither an IP address nor a DNS name"), "{e}");
        assert!(pki.issue_client("").is_err());
        assert!(pki.issue_client("a\nb").is_err());
    }

    #[test]
    fn identity_round_trip_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(&dir.path().join("pki")).unwrap();
        let a = pki
            .issue_server(&["localhost".into(), "::1".into()])
            .unwrap();
        a.write(dir.path(), "a").unwrap();
        assert_eq!(Identity::load(dir.path(), "a").unwrap(), a);
        let mode = |p: &str| {
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("a.key"), 0o600);
        assert_eq!(mode("a.pem"), 0o644);
        assert!(!format!("{a:?}").contains("PRIVATE"), "Debug hides the key");

        let b = pki.issue_client("cp").unwrap();
        let mixed = Identity {
            cert_pem: a.cert_pem.clone(),
            key_pem: b.key_pem,
        };
        let e = mixed.check().unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        let garbage = Identity {
            cert_pem: "hello".into(),
            key_pem: a.key_pem,
        };
        assert!(garbage.check().is_err());
        let e = Identity::load(dir.path(), "missing")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn ca_problems_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        // A CA key from another CA.
        let other = tempfile::tempdir().unwrap();
        Pki::load_or_create(other.path()).unwrap();
        fs::copy(other.path().join(CA_KEY), dir.path().join(CA_KEY)).unwrap();
        let e = Pki::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        // A leaf certificate where the CA should be.
        let leaf = pki.issue_server(&["localhost".into()]).unwrap();
        leaf.write(dir.path(), "ca").unwrap();
        let e = Pki::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a CA"), "{e}");
        // A certificate without its key.
        fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        let e = Pki::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not"), "{e}");
    }

    #[test]
    fn leaf_certificates_carry_their_usage_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let server = pki
            .issue_server(&["agent-1.example".into(), "10.0.0.7".into()])
            .unwrap();
        parse_cert(&server.cert_pem, |c| {
            assert!(!c.is_ca());
            let eku = c.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && !eku.client_auth);
            let sans = c.subject_alternative_name().unwrap().unwrap().value;
            let text = format!("{:?}", sans.general_names);
            assert!(text.contains("agent-1.example"), "{text}");
            Ok(())
        })
        .unwrap();
        let client = pki.issue_client("control-plane").unwrap();
        parse_cert(&client.cert_pem, |c| {
            let eku = c.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth);
            Ok(())
        })
        .unwrap();
    }
}
