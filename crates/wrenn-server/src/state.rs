//! What every request handler shares, and who is calling.

use axum::{extract::FromRequestParts, http::request::Parts};
use tokio::sync::broadcast;
use tonic::transport::Channel;
use wrenn_proto::agent::v1::agent_client::AgentClient;

use crate::{
    db::{Caller, Db},
    error::ApiError,
    events::Event,
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
}

impl AppState {
    pub fn agent(&self) -> AgentClient<Channel> {
        self.agent.clone()
    }
}

/// A request's caller, from `X-API-Key` or `Authorization: Bearer wrn_…`.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let key = header("x-api-key").or_else(|| {
            header("authorization").and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .map(str::trim)
            })
        });
        let Some(key) = key else {
            return Err(ApiError::Unauthorized(
                "an API key is required (X-API-Key or Authorization: Bearer)".into(),
            ));
        };
        state
            .db
            .authenticate_key(key)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))
    }
}
