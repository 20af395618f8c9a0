//! `/v1/hosts`: the hosts a control plane places capsules on. Two sides:
//! - an operator's ([`Client`]'s methods, with a user's key): create, list, get, new
//!   registration token, tags, drain, delete;
//! - an agent's ([`HostClient`], no API key): register with a registration token, refresh its
//!   identity with its refresh token, heartbeat with its host token (`X-Host-Token`).

use std::time::Duration;

use reqwest::Method;

use crate::{parse_base, Client, ClientError, Result};

pub use wrenn_types::api::hosts::{
    CreateHostBody as CreateHost, DrainBody, DrainResult, HeartbeatBody, Host, HostCredentials,
    HostDeletePreview, HostKind, HostLoad, HostSpecs, HostStatus, HostWithToken, RegisterHostBody,
    TemplatePresence,
};

/// The header that carries a host token.
pub const HOST_TOKEN_HEADER: &str = "X-Host-Token";

/// How long an agent's call to the control plane may take.
const HOST_CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Makes a host (`regular`: platform admins; `byoc`: a BYOC team's owner or admin) and its
    /// one-hour, single-use registration token.
    pub async fn create_host(&self, body: &CreateHost) -> Result<HostWithToken> {
        self.call_json(Method::POST, &["v1", "hosts"], body).await
    }

    /// Every host the caller may see (platform admins: all; a BYOC team: its own).
    pub async fn list_hosts(&self) -> Result<Vec<Host>> {
        self.call(Method::GET, &["v1", "hosts"]).await
    }

    pub async fn get_host(&self, id: &str) -> Result<Host> {
        self.call(Method::GET, &["v1", "hosts", id]).await
    }

    /// A new registration token for a host still `pending` (the old ones stop working).
    pub async fn new_host_token(&self, id: &str) -> Result<HostWithToken> {
        self.call(Method::POST, &["v1", "hosts", id, "token"]).await
    }

    pub async fn host_tags(&self, id: &str) -> Result<Vec<String>> {
        self.call(Method::GET, &["v1", "hosts", id, "tags"]).await
    }

    /// Adds a tag (adding one it has changes nothing).
    pub async fn add_host_tag(&self, id: &str, tag: &str) -> Result<()> {
        self.send(
            self.request(Method::POST, &["v1", "hosts", id, "tags"])
                .timeout(HOST_CALL_TIMEOUT)
                .json(&wrenn_types::api::hosts::TagBody { tag: tag.into() }),
        )
        .await?;
        Ok(())
    }

    pub async fn remove_host_tag(&self, id: &str, tag: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &["v1", "hosts", id, "tags", tag])
            .await
    }

    /// No new capsules go to the host; with `move_paused`, its paused capsules move to others.
    pub async fn drain_host(&self, id: &str, move_paused: bool) -> Result<DrainResult> {
        self.call_json(
            Method::POST,
            &["v1", "hosts", id, "drain"],
            &DrainBody { move_paused },
        )
        .await
    }

    /// The host takes new capsules again.
    pub async fn undrain_host(&self, id: &str) -> Result<Host> {
        self.call(Method::POST, &["v1", "hosts", id, "undrain"])
            .await
    }

    /// What deleting the host would end: its capsules that are not stopped.
    pub async fn host_delete_preview(&self, id: &str) -> Result<HostDeletePreview> {
        self.call(Method::GET, &["v1", "hosts", id, "delete-preview"])
            .await
    }

    /// Deletes the host and revokes its identity (its agent pauses its capsules and stops).
    /// A host with live capsules is refused unless `force` (which ends them).
    pub async fn delete_host(&self, id: &str, force: bool) -> Result<()> {
        let mut req = self
            .request(Method::DELETE, &["v1", "hosts", id])
            .timeout(HOST_CALL_TIMEOUT);
        if force {
            req = req.query(&[("force", "true")]);
        }
        self.send(req).await?;
        Ok(())
    }
}

/// An agent's client of the control plane's host endpoints. Holds no secret: each call is
/// given the token it needs.
#[derive(Clone)]
pub struct HostClient {
    http: reqwest::Client,
    base: url::Url,
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl HostClient {
    /// A client of the control plane at `base_url` (`http://` or `https://`).
    pub fn new(base_url: &str) -> Result<HostClient> {
        let base = parse_base(base_url)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("wrenn-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(HOST_CALL_TIMEOUT)
            .build()?;
        Ok(HostClient { http, base })
    }

    /// The control plane's base URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    async fn post(
        &self,
        segments: &[&str],
        host_token: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response> {
        let mut req = self.http.post(crate::join(&self.base, segments)).json(body);
        if let Some(t) = host_token {
            let mut v = reqwest::header::HeaderValue::from_str(t)
                .map_err(|_| ClientError::InvalidApiKey)?;
            v.set_sensitive(true);
            req = req.header(HOST_TOKEN_HEADER, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(ClientError::from_response(status, &body));
        }
        Ok(resp)
    }

    async fn credentials(resp: reqwest::Response) -> Result<HostCredentials> {
        let body = resp.bytes().await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /v1/hosts/register`: trades a registration token for the host's identity.
    pub async fn register(&self, body: &RegisterHostBody) -> Result<HostCredentials> {
        let resp = self.post(&["v1", "hosts", "register"], None, body).await?;
        Self::credentials(resp).await
    }

    /// `POST /v1/hosts/auth/refresh`: a whole new identity; `refresh_token` stops working.
    pub async fn refresh(&self, refresh_token: &str) -> Result<HostCredentials> {
        let body = wrenn_types::api::hosts::RefreshHostBody {
            refresh_token: refresh_token.into(),
        };
        let resp = self
            .post(&["v1", "hosts", "auth", "refresh"], None, &body)
            .await?;
        Self::credentials(resp).await
    }

    /// `POST /v1/hosts/{id}/heartbeat` with the host token.
    pub async fn heartbeat(
        &self,
        host_id: &str,
        host_token: &str,
        body: &HeartbeatBody,
    ) -> Result<()> {
        self.post(
            &["v1", "hosts", host_id, "heartbeat"],
            Some(host_token),
            body,
        )
        .await?;
        Ok(())
    }
}
