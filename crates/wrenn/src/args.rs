//! The flags of `wrenn up`, `wrenn server` and `wrenn agent`, each declared once: what the
//! control plane takes ([`ControlArgs`]), what a host takes ([`HostArgs`]), and what all three
//! share ([`CommonArgs`]). Every flag can also come from `WRENN_<FLAG>` and from the
//! configuration file (see [`crate::config`]).

use std::{fmt, net::SocketAddr, ops::RangeInclusive, path::PathBuf, str::FromStr};

use wrenn_rpc::listen::ListenAddr;
use wrenn_server::https::CertSource;

use crate::{quota::QuotaArgs, shapes::ShapeArgs};

/// The default data folder.
pub const DATA_DIR: &str = "/var/lib/wrenn";

/// What `up`, `server` and `agent` share.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The configuration file: TOML whose keys are these flags' names (`slots = "1-100"`,
    /// `max-capsules = 8`). Default: DATA_DIR/wrenn.toml when it exists. Precedence: flags,
    /// then WRENN_* variables, then the file, then the defaults.
    #[arg(long, env = "WRENN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where Wrenn keeps its state (database, admin key, PKI, capsules, images).
    #[arg(long, env = "WRENN_DIR", default_value = DATA_DIR)]
    pub data_dir: PathBuf,
}

/// The control plane's flags (`up` and `server`).
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Address of the REST API.
    #[arg(long, env = "WRENN_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// PostgreSQL instead of the embedded SQLite (`postgres://…`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// The port proxy's domain: `{port}-{capsule id}.{domain}` reaches a capsule's port
    /// (`*.localhost` resolves to this machine in browsers and curl).
    #[arg(long, env = "WRENN_DOMAIN", default_value = "wrenn.localhost")]
    pub domain: String,
    /// Also serve the API, the console and the port proxy over HTTPS here (the E2B SDK
    /// reaches sandboxes only at `https://{port}-{id}.{domain}`). The certificate names
    /// `{domain}` and `*.{domain}` (and this address when it is a specific one) and comes from
    /// Wrenn's own CA, made on first start in DATA_DIR/pki/https (clients trust its `ca.pem`)
    /// and renewed before it expires, unless --tls-cert and --tls-key are given.
    #[arg(long, env = "WRENN_TLS_LISTEN", value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// The operator's certificate chain for --tls-listen (PEM), instead of Wrenn's own CA;
    /// read again every hour, so a renewed file is served without a restart.
    #[arg(long, env = "WRENN_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_listen"])]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM, PKCS#8).
    #[arg(long, env = "WRENN_TLS_KEY", value_name = "FILE", requires_all = ["tls_cert", "tls_listen"])]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    /// Who may sign up: `open` (anyone), `invite` (only with an invitation a team's owner or
    /// admin made) or `closed` (nobody). Default: `closed` for `wrenn up` (it makes its own
    /// admin, who adds users), `invite` for `wrenn server`.
    #[arg(long, env = "WRENN_SIGNUP")]
    pub signup: Option<wrenn_server::accounts::SignupPolicy>,
    /// Seconds a registered host may stay silent (no heartbeat) before it is `unreachable`
    /// and its capsules `missing` (three of the agents' heartbeat intervals).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), value_name = "SECS")]
    pub host_timeout: u64,
    /// Seconds a host token (`X-Host-Token`) is valid; agents refresh it at half-life.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(10..), value_name = "SECS")]
    pub host_token_ttl: u64,
    /// Seconds a host's mTLS certificate is valid; agents refresh it at half-life.
    #[arg(long, default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..), value_name = "SECS")]
    pub host_cert_ttl: u64,
    /// Template builds this control plane runs at once (each in a build capsule); the others
    /// wait `pending`, in order. With one host (`wrenn up`) that is the bound per host.
    #[arg(long, env = "WRENN_MAX_BUILDS", default_value_t = wrenn_server::builds::queue::DEFAULT_LIMIT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64), value_name = "N")]
    pub max_builds: usize,
}

/// A host's flags (`up` and `agent`).
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Where guest images (templates) live. Default: DATA_DIR/images for `wrenn up`,
    /// /var/lib/wrenn/images for `wrenn agent`.
    #[arg(long, env = "WRENN_IMAGES")]
    pub images: Option<PathBuf>,
    /// Most capsules this host runs at once.
    #[arg(long, default_value_t = 64)]
    pub max_capsules: usize,
    /// The network slots this host's agent owns and cleans up, `FIRST-LAST` (one agent per
    /// host normally owns them all).
    #[arg(long, env = "WRENN_AGENT_SLOTS", default_value = "1-16000", value_parser = parse_slots)]
    pub slots: RangeInclusive<u32>,
    #[command(flatten)]
    pub shapes: ShapeArgs,
    /// Private IPv4 ranges capsules may reach, `CIDR,...` (by default none: RFC 1918,
    /// link-local, CGNAT and loopback are denied to every capsule).
    #[arg(
        long,
        env = "WRENN_EGRESS_ALLOW_PRIVATE",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub egress_allow_private: Vec<String>,
    /// Name servers the capsules' slot resolvers forward to, `IP[:PORT],...` (default:
    /// the host's /etc/resolv.conf).
    #[arg(long, env = "WRENN_DNS_UPSTREAM", value_delimiter = ',', value_parser = parse_dns, value_name = "ADDR")]
    pub dns_upstream: Vec<SocketAddr>,
    /// The static envd binary that goes into the guest images: with it, a base template this
    /// host lacks (`minimal`, `python`) is built the first time a create needs it (`wrenn up`
    /// also builds --templates at start). Without it, only templates already built are served.
    #[arg(long, env = "WRENN_ENVD")]
    pub envd: Option<PathBuf>,
    /// Warm machines kept per template shape once a create used it: a capsule's folder and
    /// network slot made ahead, and its QEMU with the template's state loaded and the guest run
    /// until its envd answered, then stopped, so a create only runs it on and gives it the
    /// capsule's identity. Each holds a slot and a stopped QEMU (`wrenn-bench vm` prints its
    /// PSS); refilled one at a time while no create runs.
    /// 0 (the default) turns the pool off.
    #[arg(long, env = "WRENN_WARM_POOL", default_value_t = 0, value_name = "N")]
    pub warm_pool: usize,
    /// Paused capsules that keep their stopped VMM, so a resume only runs it on (no VMM
    /// start, no state load; under TCG no translating the guest's code again). The pause
    /// saves the state to disk all the same; the oldest pause beyond N, one kept longer than
    /// --keep-paused-secs, a snapshot or move of it, work that needs its memory, and the
    /// host's shutdown end a kept VMM. Each holds its guest's touched memory and its QEMU,
    /// and counts in --capsule-memory-mib like a running capsule. 0 (the default): none.
    #[arg(long, env = "WRENN_KEEP_PAUSED", default_value_t = 0, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024), value_name = "N")]
    pub keep_paused: usize,
    /// The longest a paused capsule keeps its VMM, seconds (1 to 86400).
    #[arg(long, env = "WRENN_KEEP_PAUSED_SECS", default_value_t = wrenn_agent::manager::DEFAULT_KEPT_FOR.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400), value_name = "SECS")]
    pub keep_paused_secs: u64,
    /// Memory capsules may commit, MiB: each running capsule its RAM plus 128 MiB for its
    /// VMM. Paused capsules' kept VMMs and warm machines count the same, and end first when a
    /// create, resume, fork or move needs the room. Above the host's memory it overcommits (what
    /// the guests touch must then fit). 0 (the default): the host's memory less 512 MiB.
    #[arg(long, env = "WRENN_CAPSULE_MEMORY_MIB", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1 << 30), value_name = "MIB")]
    pub capsule_memory_mib: u64,
    /// Creates this host works on at once; the others wait their turn, in arrival order,
    /// holding nothing. A create is CPU-bound (QEMU loading the state, the guest's first
    /// moments): beyond about one per CPU, creates only slow each other down. 0: no limit.
    /// Default: the host's CPUs + 1.
    #[arg(long, env = "WRENN_CREATE_PARALLELISM", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024), value_name = "N")]
    pub create_parallelism: Option<usize>,
    /// Each capsule's TCG translated-code cache, MiB (software emulation only; KVM has
    /// none): the most a busy capsule's QEMU holds for translated code (an idle one holds only
    /// what it translated); smaller costs code-heavy work speed (docs/vm.md "Memory per
    /// capsule" has the measured trade). At most 96: the VMM's cgroup allows 128 MiB beyond
    /// guest RAM.
    #[arg(long, env = "WRENN_TCG_TB_MIB", default_value_t = wrenn_vmm::config::DEFAULT_TCG_TB_MIB, value_parser = clap::value_parser!(u32).range(1..=96), value_name = "MIB")]
    pub tcg_tb_mib: u32,
    /// Let each capsule's QEMU use transparent huge pages (off by default: QEMU asks for
    /// them on its TCG code buffer, which then costs 2 MiB per 2 MiB touched).
    #[arg(long, env = "WRENN_VMM_HUGE_PAGES")]
    pub vmm_huge_pages: bool,
}

impl HostArgs {
    /// The settings a started agent takes at run time: its memory budget, warm pool, kept
    /// VMMs and create turns.
    pub async fn apply(&self, manager: &wrenn_agent::manager::Manager) {
        if let Some(n) = self.create_parallelism {
            manager.set_create_parallelism(n);
        }
        manager
            .set_capsule_memory_mib(self.capsule_memory_mib)
            .await;
        manager.set_pool_size(self.warm_pool).await;
        manager.set_keep_paused_for(std::time::Duration::from_secs(self.keep_paused_secs));
        manager.set_keep_paused(self.keep_paused).await;
    }

    /// The agent's settings, with its images in `images` unless `--images` says otherwise.
    pub fn agent_config(
        &self,
        data_dir: PathBuf,
        images: PathBuf,
    ) -> anyhow::Result<wrenn_agent::manager::AgentConfig> {
        Ok(wrenn_agent::manager::AgentConfig {
            data_dir,
            images_dir: self.images.clone().unwrap_or(images),
            qemu: wrenn_vmm::qemu::default_qemu(),
            max_capsules: self.max_capsules,
            slots: self.slots.clone(),
            shapes: self.shapes.policy()?,
            dns_upstreams: self.dns_upstream.clone(),
            egress_allow_private: self.egress_allow_private.clone(),
            envd: self.envd.clone(),
            vmm: wrenn_vmm::Tuning {
                tcg_tb_mib: self.tcg_tb_mib,
                huge_pages: self.vmm_huge_pages,
            },
        })
    }
}

impl ControlArgs {
    /// Where HTTPS listens and where its certificate comes from (own CA under `pki_dir`).
    pub fn https(&self, pki_dir: &std::path::Path) -> Option<(SocketAddr, CertSource)> {
        let listen = self.tls_listen?;
        let source = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => CertSource::own(pki_dir, &self.domain, listen),
        };
        Some((listen, source))
    }

    /// The control plane's settings; `signup` is the role's default policy.
    pub fn server_config(
        &self,
        data_dir: PathBuf,
        signup: wrenn_server::accounts::SignupPolicy,
    ) -> wrenn_server::Config {
        wrenn_server::Config {
            data_dir: data_dir.clone(),
            database_url: self.database_url.clone().map(|s| s.0),
            domain: self.domain.clone(),
            quotas: self.quotas.limits(),
            signup: self.signup.unwrap_or(signup),
            pki_dir: None,
            hosts: wrenn_server::hosts::HostSettings {
                timeout: std::time::Duration::from_secs(self.host_timeout),
                token_ttl: std::time::Duration::from_secs(self.host_token_ttl),
                cert_ttl: std::time::Duration::from_secs(self.host_cert_ttl),
            },
            max_builds: self.max_builds,
        }
    }
}

/// `wrenn up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub control: ControlArgs,
    #[command(flatten)]
    pub host: HostArgs,
    /// Templates to build on first start.
    #[arg(
        long,
        env = "WRENN_TEMPLATES",
        default_value = "minimal,python",
        value_delimiter = ','
    )]
    pub templates: Vec<String>,
}

/// `wrenn server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub control: ControlArgs,
    /// A host agent to use from the start (the built-in host, as before hosts registered):
    /// `host:port` or `https://host:port` (mTLS), or `unix:/path`. Optional: without it,
    /// capsules go to the hosts that register with tokens (`wrenn host create`).
    #[arg(long, env = "WRENN_AGENT")]
    pub agent: Option<String>,
    /// The PKI folder (default DATA_DIR/pki): its CA is made on first start, with this
    /// server's client certificate; issue the agent's with `wrenn agent-cert --dir`.
    #[arg(long, env = "WRENN_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
}

/// `wrenn agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub host: HostArgs,
    /// Address of the gRPC service: `host:port` or `unix:/path/to.sock` (a 0600 socket).
    /// Default: the --address of a registered host, else 127.0.0.1:9090.
    #[arg(long, env = "WRENN_AGENT_LISTEN")]
    pub listen: Option<ListenAddr>,
    /// Serve mutual TLS with `DIR/ca.pem`, `DIR/agent.pem` and `DIR/agent.key`: clients
    /// need a certificate from that CA (`wrenn agent-cert` makes them). TCP only. Not for a
    /// registered host (its certificate comes from the control plane).
    #[arg(long, env = "WRENN_AGENT_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Register this host with a control plane, with the token `wrenn host create` printed
    /// (single use, valid one hour). Needs --control-plane and --address. The identity it
    /// gets is kept in DATA_DIR/host-credentials.json: later starts need no token (one given
    /// while that file exists is ignored).
    #[arg(
        long,
        env = "WRENN_REGISTER",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub register: Option<Secret>,
    /// The control plane's URL (`http(s)://host:port`) to register with. Kept in the
    /// credentials file: later starts need it only to change it.
    #[arg(long, env = "WRENN_CONTROL_PLANE", value_name = "URL")]
    pub control_plane: Option<String>,
    /// `host:port` where the control plane reaches this agent when registering (its
    /// certificate names that host).
    #[arg(long, env = "WRENN_ADDRESS", value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// Seconds between a registered agent's heartbeats to its control plane.
    #[arg(long, env = "WRENN_HEARTBEAT_EVERY", default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_every: u64,
}

impl AgentArgs {
    /// Where the agent listens: `--listen`, else a registered host's `address`, else
    /// 127.0.0.1:9090.
    pub fn listen_addr(&self, address: Option<&str>) -> Result<ListenAddr, wrenn_rpc::RpcError> {
        match (&self.listen, address) {
            (Some(l), _) => Ok(l.clone()),
            (None, Some(a)) => a.parse(),
            (None, None) => "127.0.0.1:9090".parse(),
        }
    }
}

/// A secret (a database URL with its password, an API key): shown as `<redacted>` in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// `IP` or `IP:PORT` (port 53 by default).
pub fn parse_dns(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

/// `FIRST-LAST`, within the slots a host has.
pub fn parse_slots(s: &str) -> Result<RangeInclusive<u32>, String> {
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
