//! The control plane's start, shared by `wrenn up` (agent in-process, over a Unix socket) and
//! `wrenn server` (agent elsewhere, over mTLS); `wrenn server` itself.

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use tonic::transport::ClientTlsConfig;
use wrenn_rpc::{client::AgentEndpoint, tls};
use wrenn_server::{
    accounts::SignupPolicy,
    https::{CertSource, Https, Listener},
    AdminKey,
};

use crate::args::ServerArgs;

/// A started control plane, bound, not yet serving.
pub struct Started {
    pub state: wrenn_server::AppState,
    pub listener: tokio::net::TcpListener,
    /// HTTPS (`--tls-listen`), with the task that renews its certificate.
    pub https: Option<(Listener, tokio::task::JoinHandle<()>)>,
}

/// Starts the control plane ([`wrenn_server::start`]), binds the API on `listen`, and says
/// where it is and how the admin gets in.
pub async fn start(
    config: &wrenn_server::Config,
    listen: SocketAddr,
    https: Option<(SocketAddr, CertSource)>,
    builtin: Option<wrenn_server::BuiltinAgent>,
) -> anyhow::Result<Started> {
    // A certificate problem stops the start before anything else does.
    let https = match https {
        None => None,
        Some((addr, source)) => {
            let h = tokio::task::spawn_blocking(move || Https::new(source))
                .await?
                .context("--tls-listen")?;
            Some((addr, h))
        }
    };
    let started = wrenn_server::start(config, builtin).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("Wrenn is up at http://{}", listener.local_addr()?);
    let https = match https {
        None => None,
        Some((addr, h)) => {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (--tls-listen)"))?;
            let port = tcp.local_addr()?.port();
            println!(
                "HTTPS at https://{} (the API also as https://api.{domain}:{port}, capsule ports \
                 as https://{{port}}-{{capsule id}}.{domain}:{port})",
                tcp.local_addr()?,
                domain = config.domain,
            );
            if let Some(ca) = h.source().ca_file() {
                println!(
                    "HTTPS certificate from Wrenn's CA: clients trust {} (the E2B SDK: \
                     SSL_CERT_FILE={})",
                    ca.display(),
                    ca.display()
                );
            }
            let refresh = h.spawn_refresh(wrenn_server::https::CHECK_EVERY);
            Some((h.listener(tcp)?, refresh))
        }
    };
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
        https,
    })
}

/// Serves until SIGINT or SIGTERM (printing `on_stop`); open streams get a few seconds.
pub async fn serve(started: Started, on_stop: &'static str) -> anyhow::Result<()> {
    let stop = crate::stop_signal(move |_| println!("{on_stop}"))?;
    let (https, refresh) = match started.https {
        Some((l, r)) => (Some(l), Some(r)),
        None => (None, None),
    };
    let served = wrenn_server::run(started.state, started.listener, https, stop)
        .await
        .context("serving");
    if let Some(r) = refresh {
        r.abort();
    }
    served
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
    let https = args.control.https(&pki_dir);
    config.pki_dir = Some(pki_dir);
    let started = start(&config, args.control.listen, https, builtin).await?;
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
