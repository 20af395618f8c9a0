//! What every request handler shares.

use std::sync::Arc;

use tokio::sync::broadcast;
use tonic::transport::Channel;
use wrenn_proto::agent::v1::agent_client::AgentClient;

use crate::{
    accounts::policy::Accounts,
    db::{CapsuleRow, Db},
    error::{ApiError, Result},
    events::event::Event,
    hosts::settings::HostIdentity,
    metrics::Metrics,
    pool::{self, HostPool},
};

/// The control plane's shared state.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// The host agents: a client per host, made from its row.
    pub pool: HostPool,
    /// Lifecycle events, for `/v1/events/stream`.
    pub events: broadcast::Sender<Event>,
    /// The port proxy's domain: `{port}-{capsule id}.{domain}`.
    pub domain: String,
    /// The port proxy's HTTP client.
    pub http: reqwest::Client,
    /// The API's request counters and durations, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The sign-up policy and the log-in limits.
    pub accounts: Arc<Accounts>,
    /// The hosts' settings and the CA that issues their certificates.
    pub hosts: HostIdentity,
}

impl AppState {
    /// The state of a control plane on `db`, reaching hosts through `pool`, with the port
    /// proxy on `domain`: a fresh event channel, proxy HTTP client and metrics.
    pub fn new(
        db: Db,
        pool: HostPool,
        accounts: Arc<Accounts>,
        hosts: HostIdentity,
        domain: &str,
    ) -> Result<AppState> {
        let (events, _) = broadcast::channel(1024);
        Ok(AppState {
            db,
            pool,
            events,
            domain: domain.to_string(),
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                // No idle connections kept: a destroyed capsule's slot (and its address) is
                // reused by the next capsule, and a kept connection to the old one would take
                // the new one's first request down with it.
                .pool_max_idle_per_host(0)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| ApiError::Internal(format!("the proxy's HTTP client: {e}")))?,
            metrics: Default::default(),
            accounts,
            hosts,
        })
    }

    /// The agent of the host capsule `c` is on; `host_unavailable` when that host cannot be
    /// reached now.
    pub async fn agent_for(&self, c: &CapsuleRow) -> Result<AgentClient<Channel>> {
        let host = pool::host_of(&self.db, c).await?;
        self.pool.client(&host)
    }

    /// The agent of host `host_id` (online), or `host_unavailable`.
    pub async fn agent_on(&self, host_id: &str) -> Result<AgentClient<Channel>> {
        match self.db.host_record(host_id).await? {
            Some(h) if h.status == wrenn_types::api::hosts::HostStatus::Online => {
                self.pool.client(&h)
            }
            Some(_) => Err(ApiError::HostUnavailable(format!(
                "host {host_id} is not online"
            ))),
            None => Err(ApiError::HostUnavailable(format!(
                "host {host_id} no longer exists"
            ))),
        }
    }

    /// `call` on every online host at once: the answers of those that answered. Hosts that
    /// fail are left out (their heartbeats tell their story); if every one fails, the first
    /// failure.
    pub async fn on_online_hosts<T, F, Fut>(&self, call: F) -> Result<Vec<T>>
    where
        F: Fn(AgentClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let hosts = self.db.host_records().await?;
        let calls = hosts
            .iter()
            .filter(|h| h.status == wrenn_types::api::hosts::HostStatus::Online)
            .map(|h| {
                let client = self.pool.client(h);
                let call = &call;
                async move { call(client?).await.map_err(ApiError::from) }
            });
        let mut first_error = None;
        let mut answers = Vec::new();
        for r in futures_util::future::join_all(calls).await {
            match r {
                Ok(a) => answers.push(a),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if answers.is_empty() => Err(e),
            _ => Ok(answers),
        }
    }
}
