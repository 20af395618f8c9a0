//! What every request handler shares.

use std::sync::Arc;

use tokio::sync::broadcast;
use tonic::transport::Channel;
use wrenn_proto::agent::v1::agent_client::AgentClient;

use crate::{
    accounts::policy::Accounts, db::Db, events::event::Event, hosts::settings::HostIdentity,
    metrics::Metrics,
};

/// The control plane's shared state.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// The host agent (single-node: the one on this machine).
    pub agent: AgentClient<Channel>,
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
    pub fn agent(&self) -> AgentClient<Channel> {
        self.agent.clone()
    }
}
