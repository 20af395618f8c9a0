//! The distribution API v2 client: manifests and blobs of one repository, through the
//! configured mirrors then the registry itself, answering authentication challenges.

use std::{io::Write, path::Path, sync::Mutex};

use futures_util::StreamExt;
use reqwest::{header, Method, StatusCode};

use crate::{
    auth::{self, Authorization, Challenge},
    config::OciConfig,
    digest::{Digest, Hasher},
    error::{OciError, Result},
    manifest,
    reference::{Reference, DOCKER_HUB},
};

/// Manifests larger than this are refused (real ones are a few KiB).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// One place to ask: a base URL and the host its settings are keyed by.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base: String,
    pub host: String,
}

/// Where `reference`'s registry is reached: its mirrors in order, then itself.
pub fn endpoints(config: &OciConfig, reference: &Reference) -> Vec<Endpoint> {
    let settings = config.registry(&reference.registry);
    let mut out: Vec<Endpoint> = settings
        .mirrors
        .iter()
        .map(|m| {
            let base = m.trim_end_matches('/').to_string();
            let host = base
                .split_once("://")
                .map_or(base.as_str(), |(_, h)| h)
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            Endpoint { base, host }
        })
        .collect();
    let host = if reference.registry == DOCKER_HUB {
        "registry-1.docker.io".to_string()
    } else {
        reference.registry.clone()
    };
    let scheme = if settings.insecure { "http" } else { "https" };
    out.push(Endpoint {
        base: format!("{scheme}://{host}"),
        host: reference.registry.clone(),
    });
    out
}

/// A manifest as fetched: its bytes, digest and content type.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub digest: Digest,
    pub content_type: String,
}

/// A client of one repository on one endpoint.
pub struct Repository<'a> {
    http: &'a reqwest::Client,
    config: &'a OciConfig,
    pub endpoint: Endpoint,
    pub repository: String,
    auth: Mutex<Authorization>,
}

impl<'a> Repository<'a> {
    pub fn new(
        http: &'a reqwest::Client,
        config: &'a OciConfig,
        endpoint: Endpoint,
        repository: &str,
    ) -> Self {
        Repository {
            http,
            config,
            endpoint,
            repository: repository.to_string(),
            auth: Mutex::new(Authorization::Anonymous),
        }
    }

    fn registry_err(&self, reason: impl Into<String>) -> OciError {
        OciError::Registry {
            registry: self.endpoint.base.clone(),
            reason: reason.into(),
        }
    }

    fn current_auth(&self) -> Authorization {
        self.auth
            .lock()
            .map(|a| a.clone())
            .unwrap_or(Authorization::Anonymous)
    }

    /// Sends a GET of `path` (under `/v2/<repository>/`), answering one auth challenge.
    async fn get(&self, path: &str, accept: Option<&str>) -> Result<reqwest::Response> {
        let url = format!("{}/v2/{}/{}", self.endpoint.base, self.repository, path);
        let mut answered = false;
        loop {
            let mut req = self.http.request(Method::GET, &url);
            if let Some(a) = accept {
                req = req.header(header::ACCEPT, a);
            }
            if let Some(h) = self.current_auth().header() {
                req = req.header(header::AUTHORIZATION, h);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| self.registry_err(format!("GET {url}: {}", error_chain(&e))))?;
            if resp.status() != StatusCode::UNAUTHORIZED || answered {
                if resp.status() == StatusCode::UNAUTHORIZED
                    || resp.status() == StatusCode::FORBIDDEN
                {
                    return Err(self.unauthorized(format!("GET {path}: {}", resp.status())));
                }
                return Ok(resp);
            }
            answered = true;
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge)
                .ok_or_else(|| self.unauthorized("401 without a usable WWW-Authenticate"))?;
            let next = self.answer(challenge).await?;
            if let Ok(mut a) = self.auth.lock() {
                *a = next;
            }
        }
    }

    fn unauthorized(&self, reason: impl Into<String>) -> OciError {
        OciError::Unauthorized {
            registry: self.endpoint.base.clone(),
            repository: self.repository.clone(),
            reason: reason.into(),
        }
    }

    /// What to send after `challenge`: Basic credentials, or a token from the realm.
    async fn answer(&self, challenge: Challenge) -> Result<Authorization> {
        let settings = self.config.registry(&self.endpoint.host);
        let creds = settings.credentials();
        match challenge {
            Challenge::Basic => {
                let (u, p) = creds.ok_or_else(|| {
                    self.unauthorized(format!(
                        "it asks for a password and none is configured for {}",
                        self.endpoint.host
                    ))
                })?;
                Ok(Authorization::Basic(auth::basic(u, p)))
            }
            Challenge::Bearer {
                realm,
                service,
                scope: _,
            } => {
                if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                    return Err(self.unauthorized(format!("bad token realm '{realm}'")));
                }
                let mut query = vec![("scope", format!("repository:{}:pull", self.repository))];
                if let Some(s) = service {
                    query.push(("service", s));
                }
                let mut req = self.http.get(&realm).query(&query);
                if let Some((u, p)) = creds {
                    req = req.basic_auth(u, Some(p));
                }
                tracing::debug!(realm, repository = %self.repository, "asking for a registry token");
                let resp = req.send().await.map_err(|e| {
                    self.unauthorized(format!("token endpoint {realm}: {}", error_chain(&e)))
                })?;
                if !resp.status().is_success() {
                    return Err(self.unauthorized(format!(
                        "token endpoint {realm} answered {}",
                        resp.status()
                    )));
                }
                let body = read_limited(resp, 1 << 20, "a token answer")
                    .await
                    .map_err(|e| self.unauthorized(e.to_string()))?;
                let t: auth::TokenAnswer = serde_json::from_slice(&body)
                    .map_err(|e| self.unauthorized(format!("bad token answer: {e}")))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.unauthorized("the token answer holds no token"))?;
                Ok(Authorization::Bearer(token))
            }
        }
    }

    /// Fetches a manifest by tag or digest; a digest reference is verified.
    pub async fn manifest(&self, reference: &str) -> Result<Fetched> {
        let resp = self
            .get(&format!("manifests/{reference}"), Some(manifest::ACCEPT))
            .await?;
        self.check_status(&resp, || format!("manifest {reference}"))?;
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = read_limited(resp, MAX_MANIFEST, "a manifest").await?;
        let digest = Digest::of(&body);
        if let Ok(expected) = Digest::parse(reference) {
            expected.verify(&digest, format!("manifest {reference}"))?;
        }
        Ok(Fetched {
            body,
            digest,
            content_type,
        })
    }

    fn check_status(&self, resp: &reqwest::Response, what: impl FnOnce() -> String) -> Result<()> {
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(OciError::NotFound {
                registry: self.endpoint.base.clone(),
                repository: self.repository.clone(),
                what: what(),
            }),
            s => Err(self.registry_err(format!("{} answered {s}", what()))),
        }
    }

    /// Downloads blob `digest` into `dest` (created), hashing while it streams; fails on a
    /// digest mismatch or when it grows past `limit`. Returns the bytes written.
    pub async fn blob_to_file(&self, digest: &Digest, limit: u64, dest: &Path) -> Result<u64> {
        let resp = self.get(&format!("blobs/{digest}"), None).await?;
        self.check_status(&resp, || format!("blob {digest}"))?;
        let mut file =
            std::fs::File::create(dest).map_err(|e| OciError::io("creating", dest, e))?;
        let mut hasher = Hasher::default();
        let mut written = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| self.registry_err(format!("blob {digest}: {}", error_chain(&e))))?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(OciError::TooLarge {
                    what: format!("blob {digest}"),
                    limit,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| OciError::io("writing", dest, e))?;
        }
        file.sync_all()
            .map_err(|e| OciError::io("syncing", dest, e))?;
        digest.verify(
            &hasher.finish(),
            format!("blob from {}", self.endpoint.base),
        )?;
        Ok(written)
    }
}

/// Reads a whole body, refusing more than `limit` bytes.
async fn read_limited(resp: reqwest::Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OciError::Registry {
            registry: String::new(),
            reason: format!("reading {what}: {}", error_chain(&e)),
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(OciError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error with its causes, for messages (reqwest's own Display hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
