//! Registration: the agent's first call to its control plane.

use std::path::Path;

use wrenn_client::{
    hosts::{HostSpecs, RegisterHostBody},
    HostClient,
};

use super::credentials::StoredCredentials;
use crate::error::Result;

/// Registers this host with the control plane at `control_plane` using the single-use
/// registration `token`, as reachable at `address` (`host:port`, the certificate's SAN), and
/// writes the identity it answers to `data_dir`'s credentials file. A refusal is
/// [`crate::AgentError::ControlPlane`] with the control plane's code and message.
pub async fn register(
    data_dir: &Path,
    control_plane: &str,
    token: &str,
    address: &str,
    specs: HostSpecs,
) -> Result<StoredCredentials> {
    let client = HostClient::new(control_plane)?;
    let credentials = client
        .register(&RegisterHostBody {
            token: token.to_string(),
            address: address.to_string(),
            specs,
        })
        .await?;
    let stored = StoredCredentials::new(client.base_url(), address, credentials)?;
    stored.save(data_dir)?;
    tracing::info!(host_id = stored.host_id(), %address, "registered with the control plane");
    Ok(stored)
}
