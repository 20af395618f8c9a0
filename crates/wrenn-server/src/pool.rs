//! The host pool: an agent.v1 client per host, made from the host's row on first use, kept
//! while its address and certificate stay the same. Nothing here is state another control-plane
//! replica needs: each builds the same clients from the database.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::transport::Channel;
use wrenn_proto::agent::v1::agent_client::AgentClient;
use wrenn_rpc::AgentEndpoint;
use wrenn_types::api::hosts::HostStatus;

use crate::{
    db::{CapsuleRow, Db, HostRecord},
    error::{ApiError, Result},
};

/// How long a call waits for a connection to a host: a silent host answers
/// `host_unavailable` after this, never a hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One host's client, and what it was made from.
struct Cached {
    address: String,
    fingerprint: Option<String>,
    client: AgentClient<Channel>,
}

/// A client per host id.
#[derive(Clone)]
pub struct HostPool {
    clients: Arc<Mutex<HashMap<String, Cached>>>,
    /// The control plane's PKI (`ca.pem`, `client.pem`, `client.key`): TCP hosts are reached
    /// over mutual TLS with it. `None`: plaintext (tests, `http://` agents).
    pki_dir: Option<PathBuf>,
}

impl HostPool {
    pub fn new(pki_dir: Option<PathBuf>) -> HostPool {
        HostPool {
            clients: Arc::default(),
            pki_dir,
        }
    }

    /// Keeps `client` (already connected: the built-in host) for `host_id` at `address`.
    pub fn insert(&self, host_id: &str, address: &str, client: AgentClient<Channel>) {
        self.lock().insert(
            host_id.to_string(),
            Cached {
                address: address.to_string(),
                fingerprint: None,
                client,
            },
        );
    }

    /// Forgets a host's client (the host was deleted).
    pub fn forget(&self, host_id: &str) {
        self.lock().remove(host_id);
    }

    /// The client of `host`: the kept one, or a new one (connecting on its first call) when
    /// there is none or the host's address or certificate changed.
    pub fn client(&self, host: &HostRecord) -> Result<AgentClient<Channel>> {
        if let Some(c) = self.lock().get(&host.id) {
            // A built-in host's kept client has no fingerprint; its row has none either.
            if c.address == host.address && c.fingerprint == host.cert_fingerprint {
                return Ok(c.client.clone());
            }
        }
        let client = self.connect(host)?;
        self.lock().insert(
            host.id.clone(),
            Cached {
                address: host.address.clone(),
                fingerprint: host.cert_fingerprint.clone(),
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// A new client of `host`, over mutual TLS for a TCP address when the PKI is known.
    fn connect(&self, host: &HostRecord) -> Result<AgentClient<Channel>> {
        let unusable = |why: String| {
            ApiError::HostUnavailable(format!("host {} cannot be reached: {why}", host.id))
        };
        if host.address.is_empty() {
            return Err(unusable("it has no address (not registered)".into()));
        }
        let endpoint: AgentEndpoint = host.address.parse().map_err(|e| unusable(format!("{e}")))?;
        let tls = match (&endpoint, &self.pki_dir) {
            (AgentEndpoint::Https(a) | AgentEndpoint::HostPort(a), Some(dir)) => {
                let name = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
                Some(
                    wrenn_rpc::tls::load_client_tls(dir, name.trim_matches(['[', ']']))
                        .map_err(|e| unusable(format!("the control plane's certificate: {e}")))?,
                )
            }
            _ => None,
        };
        wrenn_rpc::connect_lazy(&endpoint, tls, CONNECT_TIMEOUT)
            .map_err(|e| unusable(e.to_string()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The host a capsule is on, if it can be reached now: `host_unavailable` when it is
/// unreachable, being registered, or gone.
pub async fn host_of(db: &Db, c: &CapsuleRow) -> Result<HostRecord> {
    // A row from before hosts is the built-in host's.
    let builtin;
    let host_id = match c.host_id.as_deref() {
        Some(h) => h,
        None => {
            builtin = db.builtin_host_id().await?.ok_or_else(|| {
                ApiError::HostUnavailable(format!("capsule {} has no host", c.id))
            })?;
            &builtin
        }
    };
    let host = db.host_record(host_id).await?.ok_or_else(|| {
        ApiError::HostUnavailable(format!(
            "capsule {}'s host {host_id} no longer exists",
            c.id
        ))
    })?;
    match host.status {
        HostStatus::Online => Ok(host),
        HostStatus::Unreachable => Err(ApiError::HostUnavailable(format!(
            "capsule {}'s host {host_id} is unreachable (it missed its heartbeats); \
             the capsule is back when the host is",
            c.id
        ))),
        HostStatus::Pending => Err(ApiError::HostUnavailable(format!(
            "capsule {}'s host {host_id} is not registered",
            c.id
        ))),
    }
}
