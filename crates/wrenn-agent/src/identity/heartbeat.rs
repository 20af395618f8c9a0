//! The registered agent's loop: a heartbeat (specs and load) every interval, the identity
//! refreshed at half its lifetime or when a heartbeat is refused (401/403), and the end of the
//! agent when the control plane no longer knows the host (404: deleted).

use std::{path::PathBuf, sync::Arc, time::Duration};

use wrenn_client::{hosts::HeartbeatBody, ClientError, HostClient};
use wrenn_rpc::SwappableTls;

use super::credentials::{now_unix, StoredCredentials};
use crate::{error::Result, manager::Manager, AgentError};

/// The longest wait between two tries while the control plane cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why [`Heartbeats::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The control plane deleted this host: its running capsules were paused (how many) and
    /// the credentials file removed. The agent should stop.
    Deleted { paused: usize },
}

/// Where the control plane stands, as the last heartbeat saw it (logged once per change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Unreachable,
    Refused,
}

/// The heartbeat loop of one registered agent.
pub struct Heartbeats {
    data_dir: PathBuf,
    client: HostClient,
    stored: StoredCredentials,
    tls: SwappableTls,
    manager: Arc<Manager>,
    every: Duration,
}

impl Heartbeats {
    /// A loop for the identity `stored` (kept in `data_dir`), whose certificate `tls` serves,
    /// reporting `manager`'s host every `every`.
    pub fn new(
        data_dir: PathBuf,
        stored: StoredCredentials,
        tls: SwappableTls,
        manager: Arc<Manager>,
        every: Duration,
    ) -> Result<Heartbeats> {
        Ok(Heartbeats {
            client: HostClient::new(&stored.control_plane)?,
            data_dir,
            stored,
            tls,
            manager,
            every: every.max(Duration::from_millis(100)),
        })
    }

    /// Gets a new identity with the refresh token: saves it (the old refresh token is spent),
    /// then serves its certificate to new connections.
    async fn refresh(&mut self, why: &str) -> Result<()> {
        let creds = self
            .client
            .refresh(&self.stored.credentials.refresh_token)
            .await?;
        let next = StoredCredentials::new(&self.stored.control_plane, &self.stored.address, creds)?;
        if next.host_id() != self.stored.host_id() {
            return Err(AgentError::Identity(format!(
                "the refresh answered host {}, not {}",
                next.host_id(),
                self.stored.host_id()
            )));
        }
        next.save(&self.data_dir)?;
        self.tls
            .swap(&next.credentials.ca_cert_pem, &next.identity())?;
        self.stored = next;
        tracing::info!(
            host_id = self.stored.host_id(),
            why,
            cert_expires_at = %self.stored.credentials.cert_expires_at,
            "host identity refreshed"
        );
        Ok(())
    }

    /// Sends one heartbeat with the host's specs and load.
    async fn beat(&self) -> std::result::Result<(), ClientError> {
        let body = HeartbeatBody {
            specs: self.manager.host_specs(),
            load: self.manager.host_load(),
        };
        self.client
            .heartbeat(
                self.stored.host_id(),
                &self.stored.credentials.host_token,
                &body,
            )
            .await
    }

    /// Beats until the host is deleted (never returns otherwise: cancel it to stop). The
    /// first heartbeat goes at once.
    pub async fn run(mut self) -> Ending {
        let mut link = Link::Up;
        let mut backoff = self.every;
        loop {
            let due = self.stored.refresh_at().unwrap_or(0);
            if now_unix() >= due {
                if let Err(e) = self.refresh("half its lifetime used").await {
                    tracing::warn!(error = %e, "refreshing the host identity (retrying)");
                }
            }
            let result = match self.beat().await {
                Err(e) if matches!(e.status(), Some(401 | 403)) => {
                    // The host token ran out or was refused: a new identity, then once more.
                    match self.refresh("a heartbeat was refused").await {
                        Ok(()) => self.beat().await,
                        Err(refresh) => {
                            if link != Link::Refused {
                                tracing::error!(
                                    heartbeat = %e,
                                    refresh = %refresh,
                                    "the control plane refuses this host's identity (delete \
                                     the credentials file and register again with a new token)"
                                );
                                link = Link::Refused;
                            }
                            Err(e)
                        }
                    }
                }
                other => other,
            };
            match result {
                Ok(()) => {
                    if link != Link::Up {
                        tracing::warn!(
                            host_id = self.stored.host_id(),
                            "the control plane answers heartbeats again"
                        );
                    }
                    link = Link::Up;
                    backoff = self.every;
                }
                // The API's own `not_found` only: a proxy's bare 404 is not a deletion.
                Err(e) if e.status() == Some(404) && e.code() == "not_found" => {
                    tracing::warn!(
                        host_id = self.stored.host_id(),
                        "the control plane deleted this host: pausing its capsules, removing \
                         its credentials and stopping"
                    );
                    let paused = self.manager.pause_all().await;
                    if let Err(e) = StoredCredentials::remove(&self.data_dir) {
                        tracing::error!(error = %e, "removing the credentials file");
                    }
                    return Ending::Deleted { paused };
                }
                Err(e) => {
                    if link == Link::Up {
                        tracing::warn!(error = %e.message(), "the control plane cannot be reached: retrying with backoff");
                        link = Link::Unreachable;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF).max(self.every);
                }
            }
            let wait = if link == Link::Up {
                self.every
            } else {
                backoff
            };
            let until_refresh = self.stored.refresh_at().unwrap_or(0) - now_unix();
            let wait = if until_refresh > 0 {
                wait.min(Duration::from_secs(until_refresh as u64))
            } else {
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }
}
