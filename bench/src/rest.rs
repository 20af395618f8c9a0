//! The control plane's REST API as the benches drive it: an API key, JSON in and out.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The REST API at `base` with an API key.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    pub base: String,
    key: String,
}

impl Rest {
    pub fn new(base: String, key: String) -> Result<Rest> {
        Ok(Rest {
            http: reqwest::Client::builder().tcp_nodelay(true).build()?,
            base,
            key,
        })
    }

    /// `method path` with `body`: the answer's JSON (`null` when empty); an error answer is
    /// an error naming the path and status.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// Creates a capsule from `body`; its id.
    pub async fn create(&self, body: Value) -> Result<String> {
        let c = self
            .call(reqwest::Method::POST, "/v1/capsules", Some(body))
            .await?;
        c["id"].as_str().map(str::to_string).context("no id")
    }

    /// Runs `true` in capsule `id` (it must exit 0).
    pub async fn exec_true(&self, id: &str) -> Result<()> {
        let out = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/capsules/{id}/exec"),
                Some(json!({ "cmd": "true" })),
            )
            .await?;
        if out["exit_code"] != json!(0) {
            bail!("exec failed: {out}");
        }
        Ok(())
    }

    pub async fn destroy(&self, id: &str) -> Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/v1/capsules/{id}"), None)
            .await
            .map(|_| ())
    }
}
