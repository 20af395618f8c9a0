//! What envd keeps between requests: defaults set by `/init`, the access token, and the
//! registries of processes and watchers.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use subtle::ConstantTimeEq;

use crate::{
    error::Result,
    filesystem::watch::Watchers,
    metrics::Sampler,
    process::{reaper::Reaper, table::ProcessTable},
    users::{User, UserDb},
};

/// Settings fixed when envd starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// User for requests that name none, until `/init` changes it.
    pub default_user: String,
    /// Whether `/init` may set the system clock (only inside a capsule).
    pub set_clock: bool,
}

/// Defaults applied to every process and path, set through `/init`.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub env_vars: BTreeMap<String, String>,
    pub user: String,
    pub workdir: Option<PathBuf>,
}

/// The access token, kept out of `Debug` output.
#[derive(Clone)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(token: String) -> Self {
        AccessToken(token)
    }
    /// Constant-time comparison with what a client sent.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

/// The whole of envd's state, shared by all handlers.
#[derive(Debug)]
pub struct Envd {
    pub config: Config,
    defaults: RwLock<Defaults>,
    token: RwLock<Option<AccessToken>>,
    pub processes: Arc<ProcessTable>,
    pub watchers: Watchers,
    pub reaper: Arc<Reaper>,
    pub metrics: Sampler,
}

impl Envd {
    pub fn new(config: Config, reaper: Arc<Reaper>, metrics: Sampler) -> Envd {
        let defaults = Defaults {
            env_vars: BTreeMap::new(),
            user: config.default_user.clone(),
            workdir: None,
        };
        Envd {
            config,
            defaults: RwLock::new(defaults),
            token: RwLock::new(None),
            processes: Arc::default(),
            watchers: Watchers::default(),
            reaper,
            metrics,
        }
    }

    pub fn defaults(&self) -> Defaults {
        self.defaults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_defaults(&self, f: impl FnOnce(&mut Defaults)) {
        f(&mut self.defaults.write().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn token(&self) -> Option<AccessToken> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_token(&self, token: Option<AccessToken>) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// The user a request acts as: `name` if given, else the default user.
    pub fn user(&self, name: Option<&str>) -> Result<(User, UserDb)> {
        let db = UserDb::load()?;
        let name = match name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => self.defaults().user,
        };
        Ok((db.user(&name)?, db))
    }
}

/// Handlers share envd through this.
pub type SharedEnvd = Arc<Envd>;
