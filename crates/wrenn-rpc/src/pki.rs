//! The control plane's CA: it makes the certificates both ends of the agent's gRPC service
//! present. Making the CA and "issue a certificate for host X" are the control plane's
//! operations (`wrenn server`, `wrenn agent-cert`); an agent never signs anything, it loads what
//! it was given ([`crate::tls::load_server_tls`]).
//!
//! A CA (`ca.pem` + `ca.key`, ECDSA P-256, 10 years) lives in one private folder; it issues the
//! agents' server certificates (`agent.pem` + `agent.key`, extended key usage *server auth*
//! only) and the control plane's client certificates (`client.pem` + `client.key`, *client
//! auth* only), so an agent's certificate cannot be used to call another agent.
//!
//! Files: folders we create are 0700, keys 0600, certificates 0644; every file is written to a
//! temporary file and renamed into place, so a crash never leaves half a key. Keys are PKCS#8
//! PEM.

use std::{fmt, fs, net::IpAddr, path::Path, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::{
    error::Result,
    files::{ensure_private_dir, exists, lock_dir, read_text, write_atomic},
    tls::{parse_cert, parse_key, tls_err, Identity, CA_CERT},
};

/// The CA key in a PKI folder.
pub const CA_KEY: &str = "ca.key";

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates last a year (never past the CA); reissue with `wrenn agent-cert`.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start an hour in the past so hosts whose clocks differ a little agree.
const BACKDATE: Duration = Duration::from_secs(3600);

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

    /// A server certificate for `names`: DNS names (`*.example` wildcards too) and/or IP
    /// addresses (the first is also the common name).
    pub fn issue_server(&self, names: &[String]) -> Result<Identity> {
        let first = names
            .first()
            .ok_or_else(|| tls_err("a server certificate needs at least one name"))?;
        let sans = names.iter().map(|n| san(n)).collect::<Result<Vec<_>>>()?;
        self.issue(
            first,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            LEAF_VALIDITY,
        )
    }

    /// A registered host's server certificate: common name `host_id`, subject alternative
    /// names `names` (DNS names and/or IP addresses: where the control plane reaches it),
    /// extended key usage *server auth*, valid for `validity` (never past the CA).
    pub fn issue_host(
        &self,
        host_id: &str,
        names: &[String],
        validity: Duration,
    ) -> Result<Identity> {
        if names.is_empty() {
            return Err(tls_err("a host certificate needs at least one name"));
        }
        let sans = names.iter().map(|n| san(n)).collect::<Result<Vec<_>>>()?;
        self.issue(host_id, sans, ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    /// A client certificate whose common name is `name`.
    pub fn issue_client(&self, name: &str) -> Result<Identity> {
        if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(tls_err(format!(
                "invalid client name {name:?}: 1 to 64 printable characters"
            )));
        }
        self.issue(
            name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            LEAF_VALIDITY,
        )
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        validity: Duration,
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
        params.not_after = (now + validity).min(self.ca_not_after);
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

fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| tls_err(format!("generating a key: {e}")))
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
    // A wildcard (`*.example`) covers one label under a valid name.
    let plain = name.strip_prefix("*.").unwrap_or(name);
    if !valid_dns_name(plain) {
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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
        let web = pki
            .issue_server(&["wrenn.example".into(), "*.wrenn.example".into()])
            .unwrap();
        let info = crate::tls::cert_info(&web.cert_pem).unwrap();
        assert_eq!(info.names, ["wrenn.example", "*.wrenn.example"]);
        for bad in ["*", "*.", "a.*.example", "**.example"] {
            assert!(pki.issue_server(&[bad.into()]).is_err(), "{bad}");
        }
        let client = pki.issue_client("control-plane").unwrap();
        parse_cert(&client.cert_pem, |c| {
            let eku = c.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth);
            Ok(())
        })
        .unwrap();
    }
}
