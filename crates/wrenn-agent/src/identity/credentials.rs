//! `WRENN_DIR/host-credentials.json`: the host's identity, as the control plane issued it at
//! registration or at the last refresh, with the control plane's URL and the agent's address.
//! 0600 in the 0700 data folder, replaced atomically (temporary file + rename), never logged.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wrenn_client::hosts::HostCredentials;
use wrenn_rpc::tls::Identity;

use crate::error::{AgentError, Result};

/// The file's name in the data folder.
pub const FILE_NAME: &str = "host-credentials.json";

/// What the file holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredentials {
    /// The control plane's base URL (`http(s)://host:port`): later starts need no
    /// `--control-plane`.
    pub control_plane: String,
    /// `host:port` where the control plane reaches this agent (the certificate's SAN).
    pub address: String,
    /// When these credentials were received (Unix seconds): the start of their lifetimes.
    pub received_at_unix: i64,
    #[serde(flatten)]
    pub credentials: HostCredentials,
}

impl std::fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("control_plane", &self.control_plane)
            .field("address", &self.address)
            .field("host_id", &self.credentials.host_id)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

/// Unix seconds of an RFC 3339 time.
fn unix(what: &str, rfc3339: &str) -> Result<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            AgentError::Identity(format!("{what} {rfc3339:?} is not an RFC 3339 time: {e}"))
        })
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl StoredCredentials {
    /// Credentials just received from `control_plane` for the agent at `address`; their
    /// certificate and key are checked to belong together.
    pub fn new(
        control_plane: &str,
        address: &str,
        credentials: HostCredentials,
    ) -> Result<StoredCredentials> {
        let stored = StoredCredentials {
            control_plane: control_plane.to_string(),
            address: address.to_string(),
            received_at_unix: now_unix(),
            credentials,
        };
        stored.check()?;
        Ok(stored)
    }

    fn check(&self) -> Result<()> {
        if self.credentials.host_id.is_empty() {
            return Err(AgentError::Identity("no host id".into()));
        }
        self.identity()
            .check()
            .map_err(|e| AgentError::Identity(format!("the host certificate: {e}")))?;
        self.refresh_at()?;
        Ok(())
    }

    /// The path of the file in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// The file in `data_dir`, or `None` when there is none.
    pub fn load(data_dir: &Path) -> Result<Option<StoredCredentials>> {
        let path = StoredCredentials::path(data_dir);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::io(format!("reading {}", path.display()), e)),
        };
        let stored: StoredCredentials = serde_json::from_slice(&text).map_err(|e| {
            AgentError::Identity(format!(
                "{} is not a credentials file: {e} (delete it and register again)",
                path.display()
            ))
        })?;
        stored
            .check()
            .map_err(|e| AgentError::Identity(format!("{}: {e}", path.display())))?;
        Ok(Some(stored))
    }

    /// Writes the file in `data_dir` (0600; atomically: a reader sees the old or the new one).
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| AgentError::Identity(format!("encoding the credentials: {e}")))?;
        Ok(wrenn_rpc::write_atomic(
            &StoredCredentials::path(data_dir),
            &json,
            0o600,
        )?)
    }

    /// Removes the file in `data_dir` (none there is fine).
    pub fn remove(data_dir: &Path) -> Result<()> {
        let path = StoredCredentials::path(data_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::io(format!("removing {}", path.display()), e)),
        }
    }

    pub fn host_id(&self) -> &str {
        &self.credentials.host_id
    }

    /// The agent's TLS server identity.
    pub fn identity(&self) -> Identity {
        Identity {
            cert_pem: self.credentials.cert_pem.clone(),
            key_pem: self.credentials.key_pem.clone(),
        }
    }

    /// When to refresh (Unix seconds): once the host token or the certificate, whichever ends
    /// first, has used half its lifetime.
    pub fn refresh_at(&self) -> Result<i64> {
        let c = &self.credentials;
        let token = unix("host_token_expires_at", &c.host_token_expires_at)?;
        let cert = unix("cert_expires_at", &c.cert_expires_at)?;
        let first = token.min(cert);
        Ok(self.received_at_unix + (first - self.received_at_unix).max(0) / 2)
    }

    /// Whether the refresh token has expired (then only a new registration helps).
    pub fn refresh_token_expired(&self) -> bool {
        unix(
            "refresh_token_expires_at",
            &self.credentials.refresh_token_expires_at,
        )
        .is_ok_and(|t| t <= now_unix())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn rfc3339(unix: i64) -> String {
        time::OffsetDateTime::from_unix_timestamp(unix)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    fn issued(dir: &Path, token_secs: i64, cert_secs: i64) -> HostCredentials {
        let pki = wrenn_rpc::pki::Pki::load_or_create(&dir.join("pki")).unwrap();
        let id = pki.issue_server(&["127.0.0.2".into()]).unwrap();
        let now = now_unix();
        HostCredentials {
            host_id: "host-1".into(),
            host_token: "jwt-secret".into(),
            host_token_expires_at: rfc3339(now + token_secs),
            refresh_token: "wrnr_secret".into(),
            refresh_token_expires_at: rfc3339(now + 30 * 86400),
            cert_pem: id.cert_pem,
            key_pem: id.key_pem,
            cert_expires_at: rfc3339(now + cert_secs),
            ca_cert_pem: pki.ca_pem().to_string(),
        }
    }

    #[test]
    fn saved_privately_loaded_back_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        assert!(StoredCredentials::load(dir.path()).unwrap().is_none());
        let stored = StoredCredentials::new(
            "http://cp:8000",
            "127.0.0.2:9090",
            issued(dir.path(), 3600, 7 * 86400),
        )
        .unwrap();
        stored.save(dir.path()).unwrap();
        let path = StoredCredentials::path(dir.path());
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            StoredCredentials::load(dir.path()).unwrap(),
            Some(stored.clone())
        );
        let shown = format!("{stored:?}");
        assert!(shown.contains("host-1"), "{shown}");
        for secret in ["jwt-secret", "wrnr_secret", "PRIVATE KEY"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        StoredCredentials::remove(dir.path()).unwrap();
        assert!(!path.exists());
        StoredCredentials::remove(dir.path()).unwrap();
    }

    #[test]
    fn refreshes_at_half_the_shorter_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let s = StoredCredentials::new("http://cp", "a:1", issued(dir.path(), 3600, 7 * 86400))
            .unwrap();
        assert_eq!(s.refresh_at().unwrap(), s.received_at_unix + 1800);
        let s =
            StoredCredentials::new("http://cp", "a:1", issued(dir.path(), 7 * 86400, 600)).unwrap();
        assert_eq!(s.refresh_at().unwrap(), s.received_at_unix + 300);
        assert!(!s.refresh_token_expired());
    }

    #[test]
    fn a_broken_file_or_a_mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(StoredCredentials::path(dir.path()), "{").unwrap();
        let e = StoredCredentials::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("register again"), "{e}");
        let mut creds = issued(dir.path(), 3600, 3600);
        creds.key_pem = wrenn_rpc::pki::Pki::load_or_create(&dir.path().join("other"))
            .unwrap()
            .issue_server(&["x".into()])
            .unwrap()
            .key_pem;
        assert!(StoredCredentials::new("http://cp", "a:1", creds).is_err());
    }
}
