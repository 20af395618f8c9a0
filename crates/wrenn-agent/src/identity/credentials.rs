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
        .map_err(|e| AgentError::Identity(format!("{what} {rfc3339:?} is not an RFC 3339 time: {e}")))
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
