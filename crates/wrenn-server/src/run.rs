//! Starting and serving the control plane: the one entry point `wrenn up` and `wrenn server`
//! share ([`start`], then [`run`]).

use std::{fmt, future::Future, path::PathBuf, time::Duration};

use tonic::transport::Channel;
use wrenn_proto::agent::v1::agent_client::AgentClient;

use crate::{accounts, bootstrap, db, hosts, quotas, router, ApiError, AppState, Result};

/// How long open streams (WebSockets, event streams) may go on after the stop was asked for.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often the reconciler compares the database with the agent.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// The control plane's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// The database (SQLite, unless `database_url`), the admin's key and password live here.
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the embedded SQLite (`postgres://…`); may hold a password.
    pub database_url: Option<String>,
    /// The port proxy's domain: `{port}-{capsule id}.{domain}`.
    pub domain: String,
    /// The platform's default per-team quotas.
    pub quotas: quotas::Limits,
    /// Who may sign up.
    pub signup: accounts::SignupPolicy,
    /// The control plane's CA and client certificate (default `data_dir/pki`).
    pub pki_dir: Option<PathBuf>,
    /// The heartbeat window and the lifetimes of host tokens and certificates.
    pub hosts: hosts::HostSettings,
    /// Builds this control plane runs at once (`--max-builds`); the rest wait `pending`.
    pub max_builds: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("domain", &self.domain)
            .field("quotas", &self.quotas)
            .field("signup", &self.signup)
            .field("pki_dir", &self.pki_dir)
            .field("hosts", &self.hosts)
            .field("max_builds", &self.max_builds)
            .finish()
    }
}

/// `url` without its password (`postgres://user:<redacted>@host/db`); the rest stays readable.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    if user.len() == userinfo.len() {
        return url.to_string();
    }
    format!("{scheme}://{user}:<redacted>@{host}{tail}")
}

impl Config {
    /// The admin's API key file.
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join("admin-api-key")
    }

    /// The control plane's PKI folder.
    pub fn pki_dir(&self) -> PathBuf {
        self.pki_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("pki"))
    }

    /// The admin's password file.
    pub fn password_file(&self) -> PathBuf {
        self.data_dir.join("admin-password")
    }
}

/// A started control plane, not yet serving.
pub struct Started {
    pub state: AppState,
    /// What the start did about the admin's API key.
    pub admin_key: bootstrap::AdminKey,
}

/// The agent a control plane starts with (`wrenn up`'s own, `wrenn server --agent`): the
/// built-in host.
pub struct BuiltinAgent {
    /// Where it is reached (`unix:/path`, `host:port`, …), as its host row says.
    pub address: String,
    /// Its client, already connected.
    pub client: AgentClient<Channel>,
}

/// Opens the database (SQLite in the data folder unless `database_url`), makes the admin
/// user, team and key on first start, stores the default quotas, loads (or makes) the PKI,
/// makes `builtin` the built-in host (with its heartbeats) and starts the reconciler and the
/// host monitor. Without `builtin`, capsules go to the hosts that register.
pub async fn start(config: &Config, builtin: Option<BuiltinAgent>) -> Result<Started> {
    let step = |what: &str, e: ApiError| ApiError::Internal(format!("{what}: {e}"));
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ApiError::Internal(format!("creating {}: {e}", config.data_dir.display())))?;
    let url = config.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("wrenn.db").display()
        )
    });
    let db = db::Db::open(&url)
        .await
        .map_err(|e| step("opening the database", e))?;
    let admin_key = bootstrap::bootstrap(&db, &config.key_file(), &config.password_file())
        .await
        .map_err(|e| step("creating the admin user, team and key", e))?;
    quotas::set_defaults(&db, &config.quotas)
        .await
        .map_err(|e| step("storing the default quotas", e))?;
    let state = AppState::new(
        db,
        crate::pool::HostPool::new(Some(config.pki_dir())),
        accounts::Accounts::new(config.signup),
        hosts::HostIdentity::with_pki(config.hosts, &config.pki_dir())
            .map_err(|e| step("the control plane's PKI", e))?,
        &config.domain,
    )?;
    crate::events::relay::start(&state)
        .await
        .map_err(|e| step("relaying events through PostgreSQL", e))?;
    if let Some(b) = builtin {
        crate::builtin::attach(
            &state,
            &b.address,
            b.client,
            crate::builtin::heartbeat_every(state.hosts.settings.timeout),
        )
        .await
        .map_err(|e| step("recording the built-in host", e))?;
    }
    crate::spawn_reconciler(state.clone(), RECONCILE_EVERY);
    hosts::spawn_host_monitor(state.clone());
    crate::e2b::deadline::spawn(state.clone());
    crate::builds::queue::spawn(state.clone(), config.max_builds.max(1));
    Ok(Started { state, admin_key })
}

/// Serves the API on `listener` (a `TcpListener`, or HTTPS: [`crate::https::Listener`])
/// until `shutdown`.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    use axum::serve::ListenerExt;
    // The peer's address reaches the handlers (log-in limits per client address); through
    // `tap_io`, which gives any listener's address as the connection's.
    axum::serve(
        listener.tap_io(|_| ()),
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves the API on `listener`, and on `https` too when given, until `shutdown` resolves;
/// open streams then get a few seconds, not forever.
pub async fn run(
    state: AppState,
    listener: tokio::net::TcpListener,
    https: Option<crate::https::Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let plain = serve(listener, state.clone(), stopped(stop.subscribe()));
    let secure = {
        let rx = stop.subscribe();
        async move {
            match https {
                Some(l) => serve(l, state, stopped(rx)).await,
                None => Ok(()),
            }
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    tokio::select! {
        r = async { tokio::try_join!(plain, secure) } => {
            r.map_err(|e| ApiError::Internal(format!("serving: {e}")))?;
        }
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(STOP_GRACE).await;
        } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_database_password() {
        let config = Config {
            data_dir: "/var/lib/wrenn".into(),
            database_url: Some(
                "postgres://wrenn:s3cret@db.example:5432/wrenn?sslmode=require".into(),
            ),
            domain: "wrenn.localhost".into(),
            quotas: Default::default(),
            signup: accounts::SignupPolicy::Invite,
            pki_dir: None,
            hosts: Default::default(),
            max_builds: 2,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://wrenn:<redacted>@db.example:5432/wrenn?sslmode=require"),
            "{shown}"
        );
    }

    #[test]
    fn urls_without_a_password_stay_as_they_are() {
        for url in [
            "sqlite:///var/lib/wrenn/wrenn.db?mode=rwc",
            "postgres://wrenn@db/wrenn",
            "postgres://db/wrenn",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
        assert_eq!(
            redact_url("postgres://u:p@ss@h/d"),
            "postgres://u:<redacted>@h/d"
        );
    }
}
