//! The control plane's start and stop, shared by `wrenn up` (agent in-process, over a Unix
//! socket) and `wrenn server` (agent elsewhere, over mTLS).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use tonic::transport::Channel;
use wrenn_proto::agent::v1::agent_client::AgentClient;

pub struct ControlPlane {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub database_url: Option<String>,
    pub domain: String,
    /// The platform's default per-team quotas.
    pub quotas: wrenn_server::quotas::Limits,
    /// Who may sign up.
    pub signup: wrenn_server::accounts::SignupPolicy,
}

/// The platform's default per-team quotas (teams may have overrides: `PUT
/// /v1/teams/{id}/quotas`). A number, or `unlimited`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuotaArgs {
    /// Live capsules (pending, starting, running, paused) per team.
    #[arg(long, env = "WRENN_QUOTA_CAPSULES", default_value = "64", value_parser = parse_quota)]
    pub quota_capsules: Quota,
    /// vCPUs of a team's running capsules.
    #[arg(long, env = "WRENN_QUOTA_VCPUS", default_value = "64", value_parser = parse_quota)]
    pub quota_vcpus: Quota,
    /// Memory of a team's running capsules, MB.
    #[arg(long, env = "WRENN_QUOTA_MEMORY_MB", default_value = "131072", value_parser = parse_quota)]
    pub quota_memory_mb: Quota,
    /// Disk of a team's running and paused capsules, MB.
    #[arg(long, env = "WRENN_QUOTA_DISK_MB", default_value = "262144", value_parser = parse_quota)]
    pub quota_disk_mb: Quota,
    /// Snapshots (templates) per team.
    #[arg(long, env = "WRENN_QUOTA_SNAPSHOTS", default_value = "100", value_parser = parse_quota)]
    pub quota_snapshots: Quota,
}

/// A limit, or none.
#[derive(Debug, Clone, Copy)]
pub struct Quota(pub Option<i64>);

fn parse_quota(s: &str) -> Result<Quota, String> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(Quota(None));
    }
    s.parse::<u32>()
        .map(|n| Quota(Some(n.into())))
        .map_err(|_| format!("{s:?}: expected a number (0..=4294967295) or `unlimited`"))
}

impl QuotaArgs {
    pub fn limits(&self) -> wrenn_server::quotas::Limits {
        wrenn_server::quotas::Limits {
            capsules: self.quota_capsules.0,
            vcpus: self.quota_vcpus.0,
            memory_mb: self.quota_memory_mb.0,
            disk_mb: self.quota_disk_mb.0,
            snapshots: self.quota_snapshots.0,
        }
    }
}

/// A started control plane, not yet serving.
pub struct Started {
    pub state: wrenn_server::AppState,
    pub listener: tokio::net::TcpListener,
}

/// Opens the database (SQLite in the data folder unless `database_url`), makes the admin
/// team and key on first start, starts the reconciler, binds the API, and says where it is.
pub async fn start(cp: &ControlPlane, agent: AgentClient<Channel>) -> anyhow::Result<Started> {
    std::fs::create_dir_all(&cp.data_dir)
        .with_context(|| format!("creating {}", cp.data_dir.display()))?;
    let url = cp.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            cp.data_dir.join("wrenn.db").display()
        )
    });
    let db = wrenn_server::db::Db::open(&url)
        .await
        .context("opening the database")?;
    let key_file = cp.data_dir.join("admin-api-key");
    let password_file = cp.data_dir.join("admin-password");
    let admin_key = wrenn_server::bootstrap(&db, &key_file, &password_file)
        .await
        .context("creating the admin user, team and key")?;
    wrenn_server::quotas::set_defaults(&db, &cp.quotas)
        .await
        .context("storing the default quotas")?;
    let (events, _) = tokio::sync::broadcast::channel(1024);
    let state = wrenn_server::AppState {
        db,
        agent,
        events,
        domain: cp.domain.clone(),
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("the proxy's HTTP client")?,
        metrics: Default::default(),
        accounts: wrenn_server::accounts::Accounts::new(cp.signup),
    };
    wrenn_server::spawn_reconciler(state.clone(), Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind(cp.listen)
        .await
        .with_context(|| format!("binding {}", cp.listen))?;
    println!("Wrenn is up at http://{}", listener.local_addr()?);
    match admin_key {
        wrenn_server::AdminKey::Made(key) => println!(
            "admin API key (shown once; also in {}): {key}",
            key_file.display()
        ),
        wrenn_server::AdminKey::Replaced(key) => println!(
            "admin API key: {} was missing or its key no longer worked; made a new admin key \
             (the previous one is deleted; shown once, also in that file): {key}",
            key_file.display()
        ),
        wrenn_server::AdminKey::Kept => println!("admin API key: in {}", key_file.display()),
    }
    println!(
        "admin login: {} (password in {})",
        wrenn_server::ADMIN_EMAIL,
        password_file.display()
    );
    println!("sign-up: {} (--signup, WRENN_SIGNUP)", cp.signup.as_str());
    Ok(Started { state, listener })
}

/// Serves until SIGINT or SIGTERM; open streams get a few seconds, not forever.
pub async fn serve_until_signal(started: Started, on_stop: &str) -> anyhow::Result<()> {
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (stop_tx, mut stopping) = tokio::sync::watch::channel(false);
    let message = on_stop.to_string();
    let server = wrenn_server::serve(started.listener, started.state, async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        println!("{message}");
        let _ = stop_tx.send(true);
    });
    tokio::select! {
        r = server => r.context("serving")?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } => {}
    }
    Ok(())
}
