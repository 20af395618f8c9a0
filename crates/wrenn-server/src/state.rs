//! What every request handler shares, and who is calling.

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use tokio::sync::broadcast;
use tonic::transport::Channel;
use wrenn_proto::agent::v1::agent_client::AgentClient;

use crate::{
    db::{Caller, Db},
    error::ApiError,
    events::Event,
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
    pub accounts: Arc<crate::accounts::Accounts>,
}

impl AppState {
    pub fn agent(&self) -> AgentClient<Channel> {
        self.agent.clone()
    }
}

/// A request's caller: an API key (`X-API-Key` or `Authorization: Bearer wrn_…`) or a
/// signed-in user (`Authorization: Bearer <token>`, in `X-Team-Id` or their first team); see
/// [`crate::accounts::authenticate`].
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        crate::accounts::authenticate(state, &parts.headers).await
    }
}
