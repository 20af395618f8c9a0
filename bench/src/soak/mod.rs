//! `wrenn-bench soak`: the long reliability runs of `make soak`, each against a real `wrenn up`
//! started for it (its own data folder under `--work-dir`, its own network slots), bounded in
//! time, with 0 errors as the goal:
//!
//! - `load` (`load.rs`): exec streams and terminals held across a few capsules for a while;
//!   throughput, exec start and PTY round-trip latencies, errors;
//! - `churn` (`churn.rs`): create / exec / write / pause / resume / snapshot / destroy at the
//!   host's capacity while VMMs are killed with SIGKILL at random; then every kind of leak is
//!   counted (`leaks.rs`) and every surviving capsule's files are checked against checksums.
//!
//! The figures are printed and, with `--doc`, written into docs/reliability.md (`doc.rs`).
//! Only QEMUs whose command line names the run's own data folder are ever killed.

mod churn;
mod doc;
mod leaks;
mod load;

use std::{
    fs,
    io::{BufRead, BufReader},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `wrenn` binary (`wrenn up` is started from it).
    #[arg(long)]
    wrenn: PathBuf,
    /// Where `make images` put the templates.
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    /// The template every capsule is made from.
    #[arg(long, default_value = "minimal")]
    template: String,
    /// Which runs: `load`, `churn` or `all` (load, then churn).
    #[arg(long, default_value = "all", value_parser = ["all", "load", "churn"])]
    phase: String,
    /// The network slots the runs' `wrenn up` owns, `FIRST-LAST`.
    #[arg(long, default_value = "3700-3999", value_parser = parse_slots)]
    slots: RangeInclusive<u32>,
    /// Where the runs' data folders are made (removed at the end) and their logs kept.
    #[arg(long, default_value = "/var/tmp")]
    work_dir: PathBuf,

    /// Load: how long the load is held, in seconds.
    #[arg(long, default_value_t = 300)]
    load_secs: u64,
    /// Load: capsules the streams and terminals are spread across.
    #[arg(long, default_value_t = 10)]
    capsules: usize,
    /// Load: concurrent exec streams.
    #[arg(long, default_value_t = 200)]
    streams: usize,
    /// Load: concurrent terminals.
    #[arg(long, default_value_t = 50)]
    ptys: usize,
    /// Load: lines each streamed exec prints, one a second, before it ends (it is then
    /// started again).
    #[arg(long, default_value_t = 30)]
    stream_lines: u32,
    /// Load: pause between two round trips of one terminal, in milliseconds.
    #[arg(long, default_value_t = 250)]
    pty_interval_ms: u64,

    /// Churn: how long, in seconds.
    #[arg(long, default_value_t = 600)]
    churn_secs: u64,
    /// Churn: the host's capacity (`wrenn up --max-capsules`), all of it in use.
    #[arg(long, default_value_t = 6)]
    capacity: usize,
    /// Churn: mean seconds between two SIGKILLs of a random VMM (0: none).
    #[arg(long, default_value_t = 20)]
    kill_every_secs: u64,
    /// Churn: the random seed (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,

    /// Update this Markdown file's soak sections (docs/reliability.md) with the figures.
    #[arg(long)]
    doc: Option<PathBuf>,
}

fn parse_slots(s: &str) -> std::result::Result<RangeInclusive<u32>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected FIRST-LAST"))?;
    let a: u32 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u32 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?}: expected 1 <= FIRST <= LAST"));
    }
    Ok(a..=b)
}

/// A running `wrenn up` with its own data folder. `stop` (or drop) sends SIGINT, then SIGKILL
/// after a minute.
pub struct Up {
    child: Option<Child>,
    pub base: String,
    pub key: String,
    pub dir: PathBuf,
}

pub struct UpConfig<'a> {
    pub wrenn: &'a Path,
    pub images: &'a Path,
    pub template: &'a str,
    pub slots: &'a RangeInclusive<u32>,
    pub max_capsules: usize,
}

impl Up {
    /// Starts `wrenn up` on `dir` (made here, 0700) and waits until it serves.
    pub fn start(cfg: &UpConfig<'_>, dir: PathBuf, log: PathBuf) -> Result<Up> {
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let log_file =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(cfg.wrenn)
            .args(["up", "--listen", "127.0.0.1:0"])
            .arg("--slots")
            .arg(format!("{}-{}", cfg.slots.start(), cfg.slots.end()))
            .arg("--max-capsules")
            .arg(cfg.max_capsules.to_string())
            .arg("--templates")
            .arg(cfg.template)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--images")
            .arg(cfg.images)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", cfg.wrenn.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let base = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                bail!(
                    "wrenn up exited before it was ready (its log: {})",
                    log.display()
                );
            };
            if let Some(url) = line?.strip_prefix("Wrenn is up at ") {
                break url.trim().trim_end_matches('/').to_string();
            }
        };
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let key = fs::read_to_string(dir.join("admin-api-key"))?
            .trim()
            .to_string();
        Ok(Up {
            child: Some(child),
            base,
            key,
            dir,
        })
    }

    pub fn client(&self) -> Result<wrenn_client::Client> {
        Ok(wrenn_client::Client::new(&self.base, self.key.clone())?)
    }

    /// The built-in agent, reached on its socket (to compare its capsules with the database's).
    pub async fn agent(
        &self,
    ) -> Result<wrenn_proto::agent::v1::agent_client::AgentClient<tonic::transport::Channel>> {
        let socket = self.dir.join("agent.sock");
        Ok(
            wrenn_rpc::client::connect(&wrenn_rpc::client::AgentEndpoint::Unix(socket), None)
                .await?,
        )
    }

    /// SIGINT, then SIGKILL after a minute; whether it stopped by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Percentile of unsorted samples (nearest rank); NaN when empty.
pub fn pct(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A small xorshift64* generator: the runs only need varied, reproducible choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// What the run was made on, for the report.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let (accel, _) = wrenn_vmm::accel::detect();
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kib| kib as f64 / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "{cores} cores, {mem_gib:.0} GiB RAM, QEMU {}",
        accel.as_str()
    )
}

pub fn run(args: Args) -> Result<()> {
    if !args.images.join(&args.template).is_dir() {
        bail!(
            "no template {:?} in {} (make images)",
            args.template,
            args.images.display()
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    let stamp = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let mut failed = Vec::new();
    if args.phase == "all" || args.phase == "load" {
        let report = load::run(&args, &rt, &stamp)?;
        println!("{}", report.text());
        if let Some(doc) = &args.doc {
            doc::update_row(doc, "Load held", &report.row())?;
            doc::update(doc, "load", &report.markdown())?;
        }
        if !report.held() {
            failed.push("load");
        }
    }
    if args.phase == "all" || args.phase == "churn" {
        let report = churn::run(&args, &rt, &stamp)?;
        println!("{}", report.text());
        if let Some(doc) = &args.doc {
            doc::update_row(doc, "Churn", &report.row())?;
            doc::update(doc, "churn", &report.markdown())?;
        }
        if !report.held() {
            failed.push("churn");
        }
    }
    if let Some(doc) = &args.doc {
        println!("wrote {}", doc.display());
    }
    if !failed.is_empty() {
        // A finding, not a crash of the tool: one line, no backtrace.
        eprintln!("soak: {} did not hold (see above)", failed.join(" and "));
        std::process::exit(1);
    }
    Ok(())
}
