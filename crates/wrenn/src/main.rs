//! `wrenn`: `wrenn up` (single node), `wrenn agent`, `wrenn agent-cert` and `wrenn template
//! build`; the API's verbs (`wrenn capsule …`, `wrenn snapshot create`, `wrenn template
//! list|delete`) are in [`cli`].

use std::path::PathBuf;

mod cli;
mod control;
mod private;
mod shapes;
mod up;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wrenn_rpc::{
    client::AgentEndpoint,
    listen::{Listen, ListenAddr},
    pki, tls,
};

#[derive(Debug, Parser)]
#[command(version, about = "Wrenn: secure sandboxes (capsules) for AI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single-node Wrenn: the control plane (REST API) and a host agent in one process.
    Up {
        /// Where Wrenn keeps everything (database, capsules, images, the admin API key).
        #[arg(long, env = "WRENN_DIR", default_value = "/var/lib/wrenn")]
        data_dir: PathBuf,
        /// Address of the REST API.
        #[arg(long, env = "WRENN_LISTEN", default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        /// Where guest images live (default: DATA_DIR/images).
        #[arg(long, env = "WRENN_IMAGES")]
        images: Option<PathBuf>,
        /// The static envd binary, to build missing guest images on first start.
        #[arg(long, env = "WRENN_ENVD")]
        envd: Option<PathBuf>,
        /// PostgreSQL instead of the embedded SQLite (`postgres://…`).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Templates to build on first start.
        #[arg(
            long,
            env = "WRENN_TEMPLATES",
            default_value = "minimal,python",
            value_delimiter = ','
        )]
        templates: Vec<String>,
        /// Most capsules this host runs at once.
        #[arg(long, default_value_t = 64)]
        max_capsules: usize,
        /// The network slots the built-in agent owns, `FIRST-LAST`.
        #[arg(long, env = "WRENN_AGENT_SLOTS", default_value = "1-16000", value_parser = parse_slots)]
        slots: std::ops::RangeInclusive<u32>,
        /// The port proxy's domain: `{port}-{capsule id}.{domain}` reaches a capsule's port
        /// (`*.localhost` resolves to this machine in browsers and curl).
        #[arg(long, env = "WRENN_DOMAIN", default_value = "wrenn.localhost")]
        domain: String,
        #[command(flatten)]
        quotas: control::QuotaArgs,
        /// Who may sign up: `open` (anyone), `invite` (with a team's invitation) or `closed`
        /// (nobody; `wrenn up` makes its own admin, who adds users).
        #[arg(long, env = "WRENN_SIGNUP", default_value = "closed")]
        signup: wrenn_server::accounts::SignupPolicy,
        #[command(flatten)]
        shapes: shapes::ShapeArgs,
        /// Private IPv4 ranges capsules may reach, `CIDR,...` (by default none: RFC 1918,
        /// link-local, CGNAT and loopback are denied to every capsule).
        #[arg(
            long,
            env = "WRENN_EGRESS_ALLOW_PRIVATE",
            value_delimiter = ',',
            value_name = "CIDR"
        )]
        egress_allow_private: Vec<String>,
        /// Name servers the capsules' slot resolvers forward to, `IP[:PORT],...` (default:
        /// the host's /etc/resolv.conf).
        #[arg(long, env = "WRENN_DNS_UPSTREAM", value_delimiter = ',', value_parser = parse_dns, value_name = "ADDR")]
        dns_upstream: Vec<std::net::SocketAddr>,
    },
    /// Run the control plane alone, in front of a host agent elsewhere (mTLS).
    Server {
        /// Where the server keeps its database, admin key and PKI.
        #[arg(long, env = "WRENN_DIR", default_value = "/var/lib/wrenn")]
        data_dir: PathBuf,
        /// Address of the REST API.
        #[arg(long, env = "WRENN_LISTEN", default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        /// The host agent: `host:port` or `https://host:port` (mTLS), or `unix:/path`.
        #[arg(long, env = "WRENN_AGENT")]
        agent: String,
        /// The PKI folder (default DATA_DIR/pki): its CA is made on first start, with this
        /// server's client certificate; issue the agent's with `wrenn agent-cert --dir`.
        #[arg(long, env = "WRENN_PKI_DIR")]
        pki_dir: Option<PathBuf>,
        /// PostgreSQL instead of the embedded SQLite (`postgres://…`).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// The port proxy's domain.
        #[arg(long, env = "WRENN_DOMAIN", default_value = "wrenn.localhost")]
        domain: String,
        #[command(flatten)]
        quotas: control::QuotaArgs,
        /// Who may sign up: `open` (anyone), `invite` (only with an invitation a team's owner
        /// or admin made: the default, so nobody joins unasked) or `closed` (nobody).
        #[arg(long, env = "WRENN_SIGNUP", default_value = "invite")]
        signup: wrenn_server::accounts::SignupPolicy,
    },
    /// Run the host agent: capsules on this host, served over gRPC (`agent.v1`).
    Agent {
        /// Address of the gRPC service: `host:port` or `unix:/path/to.sock` (a 0600 socket).
        #[arg(long, env = "WRENN_AGENT_LISTEN", default_value = "127.0.0.1:9090")]
        listen: ListenAddr,
        /// Serve mutual TLS with `DIR/ca.pem`, `DIR/agent.pem` and `DIR/agent.key`: clients
        /// need a certificate from that CA (`wrenn agent-cert` makes them). TCP only.
        #[arg(long, env = "WRENN_AGENT_TLS_DIR", value_name = "DIR")]
        tls_dir: Option<PathBuf>,
        /// Where capsules live (`capsules/<id>/`).
        #[arg(long, env = "WRENN_DIR", default_value = "/var/lib/wrenn")]
        data_dir: PathBuf,
        /// Where built templates live.
        #[arg(long, env = "WRENN_IMAGES", default_value = "/var/lib/wrenn/images")]
        images: PathBuf,
        /// Most capsules this host runs at once.
        #[arg(long, default_value_t = 64)]
        max_capsules: usize,
        /// The network slots this agent owns and cleans up, `FIRST-LAST` (one agent per host
        /// normally owns them all).
        #[arg(long, env = "WRENN_AGENT_SLOTS", default_value = "1-16000", value_parser = parse_slots)]
        slots: std::ops::RangeInclusive<u32>,
        #[command(flatten)]
        shapes: shapes::ShapeArgs,
        /// Private IPv4 ranges capsules may reach, `CIDR,...` (by default none: RFC 1918,
        /// link-local, CGNAT and loopback are denied to every capsule).
        #[arg(
            long,
            env = "WRENN_EGRESS_ALLOW_PRIVATE",
            value_delimiter = ',',
            value_name = "CIDR"
        )]
        egress_allow_private: Vec<String>,
        /// Name servers the capsules' slot resolvers forward to, `IP[:PORT],...` (default:
        /// the host's /etc/resolv.conf).
        #[arg(long, env = "WRENN_DNS_UPSTREAM", value_delimiter = ',', value_parser = parse_dns, value_name = "ADDR")]
        dns_upstream: Vec<std::net::SocketAddr>,
    },
    /// Create the agent PKI's CA in `--dir` if missing, and issue the agent's server
    /// certificate (`agent.pem`/`agent.key`) and a client certificate (`client.pem`/
    /// `client.key`) from it. Existing agent and client certificates are replaced.
    AgentCert {
        /// The PKI folder (created 0700; keys are 0600).
        #[arg(long, env = "WRENN_AGENT_TLS_DIR", value_name = "DIR")]
        dir: PathBuf,
        /// A DNS name or IP address of the agent (repeat for more). Default: localhost,
        /// 127.0.0.1 and this host's name.
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// The common name of the client certificate.
        #[arg(long, default_value = "wrenn-control-plane")]
        client_name: String,
    },
    /// Capsules: create, list, get, exec, shell, cp, pause, resume, destroy.
    Capsule(cli::CapsuleArgs),
    /// Snapshots: templates made from capsules.
    Snapshot(cli::SnapshotArgs),
    /// Guest templates.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Build a template's image and its ready-to-restore snapshot (skipped when unchanged).
    Build {
        /// Template name (`minimal`, `python`).
        name: String,
        /// Where images live.
        #[arg(long, env = "WRENN_IMAGES", default_value = "/var/lib/wrenn/images")]
        images: PathBuf,
        /// The static envd binary to put into the image.
        #[arg(long, env = "WRENN_ENVD")]
        envd: PathBuf,
        /// vCPUs of the snapshot.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory of the snapshot, MiB.
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
    },
    /// List the templates capsules can be created from (through the API).
    #[command(visible_alias = "ls")]
    List(cli::TemplateListArgs),
    /// Delete a snapshot template (through the API).
    #[command(visible_alias = "rm")]
    Delete(cli::TemplateDeleteArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    if matches!(
        command,
        Command::Up { .. } | Command::Server { .. } | Command::Agent { .. }
    ) {
        // Whatever these make (database, keys, capsules, snapshots) is private.
        private::set_umask();
    }
    match command {
        Command::Server {
            data_dir,
            listen,
            agent,
            pki_dir,
            database_url,
            domain,
            quotas,
            signup,
        } => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            private::check_and_fix(&data_dir)?;
            let endpoint: AgentEndpoint = agent.parse().context("--agent")?;
            let tls = match &endpoint {
                AgentEndpoint::Unix(_) | AgentEndpoint::Http(_) => None,
                AgentEndpoint::Https(host) | AgentEndpoint::HostPort(host) => {
                    let dir = pki_dir.unwrap_or_else(|| data_dir.join("pki"));
                    if dir.exists() {
                        private::check_and_fix(&dir)?;
                    }
                    let pki = pki::Pki::load_or_create(&dir).context("the server's PKI")?;
                    if tls::Identity::load(&dir, tls::CLIENT_STEM).is_err() {
                        pki.issue_client("wrenn-control-plane")?
                            .write(&dir, tls::CLIENT_STEM)?;
                        println!(
                            "made the PKI in {}: issue the agent's certificate with \
                             `wrenn agent-cert --dir {}` and copy it to the agent",
                            dir.display(),
                            dir.display()
                        );
                    }
                    let name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
                    // Certificates are written 0644 by their maker; the PKI folder is ours.
                    private::make_private(&dir)
                        .with_context(|| format!("making {} private", dir.display()))?;
                    Some(tls::load_client_tls(&dir, name.trim_matches(['[', ']']))?)
                }
            };
            let client = wrenn_rpc::client::connect(&endpoint, tls)
                .await
                .with_context(|| format!("connecting to the agent at {endpoint}"))?;
            let started = control::start(
                &control::ControlPlane {
                    data_dir,
                    listen,
                    database_url,
                    domain,
                    quotas: quotas.limits(),
                    signup,
                },
                client,
            )
            .await?;
            control::serve_until_signal(started, "stopping (capsules stay with their agent)")
                .await?;
        }
        // The API's verbs print their own errors and exit with their own codes.
        Command::Capsule(args) => std::process::exit(cli::capsule(args).await),
        Command::Snapshot(args) => std::process::exit(cli::snapshot(args).await),
        Command::Template {
            command: TemplateCommand::List(args),
        } => std::process::exit(cli::template_list(args).await),
        Command::Template {
            command: TemplateCommand::Delete(args),
        } => std::process::exit(cli::template_delete(args).await),
        Command::Up {
            data_dir,
            listen,
            images,
            envd,
            database_url,
            templates,
            max_capsules,
            slots,
            domain,
            quotas,
            signup,
            shapes,
            egress_allow_private,
            dns_upstream,
        } => {
            up::run(up::Up {
                shapes: shapes.policy()?,
                egress_allow_private,
                dns_upstream,
                domain,
                quotas: quotas.limits(),
                signup,
                data_dir,
                listen,
                images,
                envd,
                database_url,
                templates,
                max_capsules,
                slots,
            })
            .await?
        }
        Command::Agent {
            listen,
            tls_dir,
            data_dir,
            images,
            max_capsules,
            slots,
            shapes,
            egress_allow_private,
            dns_upstream,
        } => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            private::check_and_fix(&data_dir)?;
            let tls = match &tls_dir {
                Some(_) if matches!(listen, ListenAddr::Unix(_)) => anyhow::bail!(
                    "--tls-dir with a Unix socket: TLS is for TCP; the socket is 0600, so only \
                     its owner can connect"
                ),
                Some(dir) => Some(tls::load_server_tls(dir).with_context(|| {
                    format!(
                        "loading the agent's TLS from {} (make it with `wrenn agent-cert --dir {}`)",
                        dir.display(),
                        dir.display()
                    )
                })?),
                None => None,
            };
            require(&wrenn_agent::prereq::Needs {
                qemu: wrenn_vmm::qemu::default_qemu(),
                images_dir: images.clone(),
                templates: wrenn_agent::prereq::TemplateNeed::Any,
            });
            let (accel, why) = wrenn_vmm::accel::detect();
            tracing::warn!(accel = accel.as_str(), reason = %why, "VM accelerator");
            let manager = std::sync::Arc::new(
                wrenn_agent::manager::Manager::start(wrenn_agent::manager::AgentConfig {
                    data_dir,
                    images_dir: images,
                    qemu: wrenn_vmm::qemu::default_qemu(),
                    max_capsules,
                    slots,
                    shapes: shapes.policy()?,
                    dns_upstreams: dns_upstream,
                    egress_allow_private,
                })
                .await
                .context("starting the agent")?,
            );
            manager.spawn_reaper();
            manager.spawn_sampler();
            let listener = Listen::bind(&listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            let bound = listener.local_addr()?;
            if let (Listen::Tcp(l), None) = (&listener, &tls) {
                if !l.local_addr()?.ip().is_loopback() {
                    tracing::warn!(
                        %bound,
                        "serving without TLS on a non-loopback address: whoever reaches it \
                         controls this host's capsules (use --tls-dir)"
                    );
                }
            }
            tracing::info!(%bound, tls = tls.is_some(), "agent listening");
            println!("wrenn agent listening on {bound}");
            let mut int =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let mut stopping = stop_rx.clone();
            let server = wrenn_agent::service::serve(listener, tls, manager, async move {
                tokio::select! {
                    _ = int.recv() => tracing::warn!("SIGINT: stopping (capsules keep running)"),
                    _ = term.recv() => tracing::warn!("SIGTERM: stopping (capsules keep running)"),
                }
                let _ = stop_tx.send(true);
            });
            // Clients that keep connections open get a few seconds, not forever.
            tokio::select! {
                r = server => r.context("serving")?,
                _ = async {
                    let _ = stopping.wait_for(|s| *s).await;
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                } => {}
            }
            tracing::warn!("agent stopped");
            // Exit without running destructors: they would kill the capsules' VMMs, which
            // keep running and are re-adopted by the next agent.
            std::process::exit(0);
        }
        Command::AgentCert {
            dir,
            names,
            client_name,
        } => {
            let names = if names.is_empty() {
                pki::default_server_names()
            } else {
                names
            };
            let pki = pki::Pki::load_or_create(&dir)
                .with_context(|| format!("the CA in {}", dir.display()))?;
            let agent = pki
                .issue_server(&names)
                .context("issuing the agent's certificate")?;
            agent.write(&dir, tls::AGENT_STEM)?;
            let client = pki
                .issue_client(&client_name)
                .context("issuing the client certificate")?;
            client.write(&dir, tls::CLIENT_STEM)?;
            println!(
                "{}: ca.pem, agent.pem/.key (names: {}), client.pem/.key (CN {client_name})",
                dir.display(),
                names.join(", ")
            );
        }
        Command::Template {
            command:
                TemplateCommand::Build {
                    name,
                    images,
                    envd,
                    vcpus,
                    memory_mib,
                },
        } => {
            let (accel, why) = wrenn_vmm::accel::detect();
            println!("accelerator: {} ({why})", accel.as_str());
            let req = wrenn_agent::images::BuildRequest {
                template: name.clone(),
                images_dir: images,
                envd: envd.canonicalize().context("the envd binary")?,
                vcpus,
                memory_mib,
                accel,
                qemu: wrenn_vmm::qemu::default_qemu(),
            };
            let built = wrenn_agent::images::build(&req, |p| println!("{}", p.line))
                .await
                .with_context(|| format!("building template {name}"))?;
            println!(
                "template {name}: image {:.1} s, snapshot {:.1} s, at {}",
                built.image_time.as_secs_f64(),
                built.snapshot_time.as_secs_f64(),
                built.snapshot.dir().display()
            );
        }
    }
    Ok(())
}

/// Exits with one line (`error: cannot start, missing: …`) and code 1 unless the host has
/// everything `needs` lists.
pub(crate) fn require(needs: &wrenn_agent::prereq::Needs) {
    if let Err(e) = wrenn_agent::prereq::check(needs) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// `IP` or `IP:PORT` (port 53 by default).
fn parse_dns(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = s.trim();
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

fn parse_slots(s: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected FIRST-LAST, e.g. 1-16000"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<u32>()
            .map_err(|_| format!("{x:?} is not a slot number"))
    };
    let (a, b) = (num(a)?, num(b)?);
    let all = wrenn_agent::manager::DEFAULT_SLOTS;
    if a == 0 || a > b || b > *all.end() {
        return Err(format!(
            "slots must satisfy 1 <= FIRST <= LAST <= {}, not {a}-{b}",
            all.end()
        ));
    }
    Ok(a..=b)
}
