//! The control plane's start, shared by `wrenn up` (agent in-process, over a Unix socket) and
//! `wrenn server` (agent elsewhere, over mTLS); `wrenn server` itself.

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use tonic::transport::ClientTlsConfig;
use wrenn_rpc::{client::AgentEndpoint, tls};
use wrenn_server::{accounts::SignupPolicy, AdminKey};

use crate::args::ServerArgs;

/// A started control plane, bound, not yet serving.
pub struct Started {
    pub state: wrenn_server::AppState,
    pub listener: tokio::net::TcpListener,
}

/// Starts the control plane ([`wrenn_server::start`]), binds the API on `listen`, and says
/// where it is and how the admin gets in.
pub async fn start(
    config: &wrenn_server::Config,
    listen: SocketAddr,
    builtin: Option<wrenn_server::BuiltinAgent>,
) -> anyhow::Result<Started> {
    let started = wrenn_server::start(config, builtin).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("Wrenn is up at http://{}", listener.local_addr()?);
    let key_file = config.key_file();
    match started.admin_key {
        AdminKey::Made(key) => println!(
            "admin API key (shown once; also in {}): {key}",
            key_file.display()
        ),
        AdminKey::Replaced(key) => println!(
            "admin API key: {} was missing or its key no longer worked; made a new admin key \
             (the previous one is deleted; shown once, also in that file): {key}",
            key_file.display()
        ),
        AdminKey::Kept => println!("admin API key: in {}", key_file.display()),
    }
    println!(
        "admin login: {} (password in {})",
        wrenn_server::ADMIN_EMAIL,
        config.password_file().display()
    );
    println!(
        "sign-up: {} (--signup, WRENN_SIGNUP)",
        config.signup.as_str()
    );
    Ok(Started {
        state: started.state,
        listener,
    })
}

/// Serves until SIGINT or SIGTERM (printing `on_stop`); open streams get a few seconds.
pub async fn serve(started: Started, on_stop: &'static str) -> anyhow::Result<()> {
    let stop = crate::stop_signal(move |_| println!("{on_stop}"))?;
    wrenn_server::run(started.state, started.listener, stop)
        .await
        .context("serving")
}

/// `wrenn server`: the control plane in front of the hosts that register, and of the agent
/// `--agent` if given (the built-in host).
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = &args.common.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    crate::private::check_and_fix(data_dir)?;
    let pki_dir = args.pki_dir.clone().unwrap_or_else(|| data_dir.join("pki"));
    let builtin = match &args.agent {
        None => None,
        Some(agent) => {
            let endpoint: AgentEndpoint = agent.parse().context("--agent")?;
            let tls = match &endpoint {
                AgentEndpoint::Unix(_) | AgentEndpoint::Http(_) => None,
                AgentEndpoint::Https(host) | AgentEndpoint::HostPort(host) => {
                    Some(client_tls(&pki_dir, host)?)
                }
            };
            let client = wrenn_rpc::connect(&endpoint, tls)
                .await
                .with_context(|| format!("connecting to the agent at {endpoint}"))?;
            Some(wrenn_server::BuiltinAgent {
                address: endpoint.to_string(),
                client,
            })
        }
    };
    let mut config = args
        .control
        .server_config(data_dir.clone(), SignupPolicy::Invite);
    config.pki_dir = Some(pki_dir);
    let started = start(&config, args.control.listen, builtin).await?;
    serve(started, "stopping (capsules stay with their agent)").await
}

/// The control plane's side of the PKI in `dir`: its CA (made on first start) and its client
/// certificate, and the TLS to reach the agent at `host` (`name:port`).
fn client_tls(dir: &Path, host: &str) -> anyhow::Result<ClientTlsConfig> {
    if dir.exists() {
        crate::private::check_and_fix(dir)?;
    }
    let made = tls::Identity::load(dir, tls::CLIENT_STEM).is_err();
    wrenn_server::hosts::control_plane_pki(dir).context("the server's PKI")?;
    if made {
        println!(
            "made the PKI in {}: issue the agent's certificate with \
             `wrenn agent-cert --dir {}` and copy it to the agent",
            dir.display(),
            dir.display()
        );
    }
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    // Certificates are written 0644 by their maker; the PKI folder is ours.
    crate::private::make_private(dir)
        .with_context(|| format!("making {} private", dir.display()))?;
    Ok(tls::load_client_tls(dir, name.trim_matches(['[', ']']))?)
}
