//! The host identity's settings and the control plane's PKI (a leaf module: [`crate::state`]
//! holds a [`HostIdentity`]).

use std::{path::Path, sync::Arc, time::Duration};

use wrenn_rpc::{pki::Pki, tls};

use crate::error::{ApiError, Result};

/// The common name of the control plane's client certificate (`client.pem`).
pub const CONTROL_PLANE_CN: &str = "wrenn-control-plane";

/// How hosts are kept: their heartbeat window and the lifetimes of what they are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSettings {
    /// A host silent this long is `unreachable` (its capsules `missing`).
    pub timeout: Duration,
    /// A host token's lifetime.
    pub token_ttl: Duration,
    /// A host certificate's lifetime.
    pub cert_ttl: Duration,
}

impl Default for HostSettings {
    fn default() -> HostSettings {
        HostSettings {
            timeout: Duration::from_secs(30),
            token_ttl: Duration::from_secs(3600),
            cert_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What the hosts' routes share: the settings, and the CA that issues host certificates
/// (`None`: the server has no PKI, so registration answers an error).
#[derive(Clone, Default)]
pub struct HostIdentity {
    pub settings: HostSettings,
    pub pki: Option<Arc<Pki>>,
}

impl HostIdentity {
    /// With the PKI in `dir` (see [`control_plane_pki`]).
    pub fn with_pki(settings: HostSettings, dir: &Path) -> Result<HostIdentity> {
        Ok(HostIdentity {
            settings,
            pki: Some(Arc::new(control_plane_pki(dir)?)),
        })
    }

    /// The CA, or an error saying there is none.
    pub fn pki(&self) -> Result<&Pki> {
        self.pki.as_deref().ok_or_else(|| {
            ApiError::Internal("this control plane has no PKI to issue host certificates".into())
        })
    }
}

/// The control plane's PKI in `dir` (0700): its CA (made on first use) and its client
/// certificate `client.pem` + `client.key` (CN [`CONTROL_PLANE_CN`], made when missing), with
/// which it reaches the agents.
pub fn control_plane_pki(dir: &Path) -> Result<Pki> {
    let pki_err =
        |e: wrenn_rpc::RpcError| ApiError::Internal(format!("the PKI in {}: {e}", dir.display()));
    let pki = Pki::load_or_create(dir).map_err(pki_err)?;
    if tls::Identity::load(dir, tls::CLIENT_STEM).is_err() {
        pki.issue_client(CONTROL_PLANE_CN)
            .and_then(|id| id.write(dir, tls::CLIENT_STEM))
            .map_err(pki_err)?;
        tracing::info!(dir = %dir.display(), "made the control plane's client certificate");
    }
    Ok(pki)
}
