//! `wrenn-bench agent`: the host agent (`wrenn-agent`'s manager and gRPC service, started in
//! this process on loopback), each figure against a baseline measured in the same run.
//!
//! 1. Exec round trip of `true`: `Exec` through the agent's gRPC against the same exec sent
//!    straight to the capsule's envd (`EnvdClient` with the capsule's access token),
//!    interleaved.
//! 2. A streamed file transfer (100 MiB): `WriteFileStream` / `ReadFileStream` through the
//!    agent against `POST` / `GET /files` straight to envd. Every transfer is checked (size,
//!    SHA-256 of the download against the source) off the clock.
//! 3. Concurrent creates: `CreateCapsule` alone a few times against bursts of 20 and 50 at
//!    once, each cold and then into a warm pool filled first: p50, p99, all done, creates/s.
//!
//! Steps 2 and 3 also report the CPU they used (this process = the agent and the client, the
//! capsule's QEMU, the agent's helper processes), and 3 the floor the host's CPUs alone put on
//! each burst: on a small host without KVM, creates are CPU-bound in QEMU.
//!
//! The agent owns its own data directory (a tempdir under `--tmp-dir`) and its own network
//! slots (`SLOTS`, never the default range). Whatever happens (errors, a panic, Ctrl-C) the
//! agent is stopped, every capsule destroyed, and every slot and QEMU of that range and
//! directory swept before the bench returns.

use std::{
    fs,
    ops::RangeInclusive,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Map, Value};
use tonic::transport::Channel;
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, CapsuleRef, CapsuleState as PbState, CreateCapsuleRequest,
};
use wrenn_vmm::snapshot::Snapshot;

use crate::report::Row;

mod cpu;
mod create_figures;
mod creates;
mod exec;
pub mod host_transfer;
mod measure;
mod small_disk;
mod test_agent;
mod transfer;
use self::measure::bench;
use self::test_agent::{sweep, TestAgent};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where `make images` put the templates (with their snapshots).
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    /// Also write the results as JSON to this path.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The template of every capsule.
    #[arg(long, default_value = "minimal")]
    template: String,
    /// A smoke run: 30 execs per side, an 8 MiB file once, 5 concurrent creates.
    #[arg(long)]
    quick: bool,
    /// Only step 3 (the creates): no exec round trips, no file transfers.
    #[arg(long)]
    creates_only: bool,
    /// Exec round trips per side, interleaved, after the warm-up ones [default: 200; quick 30].
    #[arg(long)]
    exec_runs: Option<usize>,
    /// Size of the transferred file, in MiB [default: 100; quick 8].
    #[arg(long)]
    file_mib: Option<u64>,
    /// Uploads and downloads per side; the best one counts [default: 3; quick 1].
    #[arg(long)]
    transfer_runs: Option<usize>,
    /// Burst sizes: creates at once, comma-separated [default: 20,50; quick 5].
    #[arg(long, value_delimiter = ',')]
    concurrent: Vec<usize>,
    /// Warm machines (`--warm-pool`) filled before each burst's second run; 0: every burst
    /// runs cold only [default: as many as the burst].
    #[arg(long)]
    warm_pool: Option<usize>,
    /// Creates the agent runs at once, the others waiting their turn (0: no limit)
    /// [default: the agent's, CPUs + 1].
    #[arg(long)]
    create_parallelism: Option<usize>,
    /// Creates alone, one after the other, for the baseline [default: 3; quick 2].
    #[arg(long)]
    single_creates: Option<usize>,
    /// The file the transfers write inside the capsule (removed after each one). The guest's
    /// /tmp is a tmpfs of half its RAM: keep the file below that.
    #[arg(long, default_value = "/tmp/wrenn-bench.bin")]
    guest_file: String,
    /// Each capsule's disk, MiB: the creates run from the bench's own copy of the template
    /// with its root disk shrunk to this (snapshotted afresh), so that the largest burst fits
    /// the agent's disk check, which promises every capsule its whole disk and RAM. 0: the
    /// template's own disk [default: the template's own if the largest burst fits the free
    /// space, else 512].
    #[arg(long)]
    disk_mib: Option<u64>,
    /// Parent of the agent's data directory.
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,
}

/// The figures' sizes, after `--quick` and the explicit options.
#[derive(Debug, Clone)]
struct Settings {
    template: String,
    exec_warmup: usize,
    exec_runs: usize,
    file_bytes: u64,
    transfer_runs: usize,
    concurrent: Vec<usize>,
    /// `None`: a pool as big as each burst.
    warm_pool: Option<usize>,
    single_creates: usize,
    guest_file: String,
    creates_only: bool,
}

impl Settings {
    fn of(args: &Args) -> Settings {
        let pick = |explicit: Option<usize>, full: usize, quick: usize| {
            explicit.unwrap_or(if args.quick { quick } else { full })
        };
        Settings {
            template: args.template.clone(),
            exec_warmup: if args.quick { 5 } else { 10 },
            exec_runs: pick(args.exec_runs, 200, 30),
            file_bytes: args.file_mib.unwrap_or(if args.quick { 8 } else { 100 }) << 20,
            transfer_runs: pick(args.transfer_runs, 3, 1),
            concurrent: match (args.concurrent.is_empty(), args.quick) {
                (false, _) => args.concurrent.clone(),
                (true, false) => vec![20, 50],
                (true, true) => vec![5],
            },
            warm_pool: args.warm_pool,
            single_creates: pick(args.single_creates, 3, 2),
            guest_file: args.guest_file.clone(),
            creates_only: args.creates_only,
        }
    }

    fn file_mib(&self) -> u64 {
        self.file_bytes >> 20
    }
}

/// The bench's own network slots: never the default range, nor the tests' ranges.
const SLOTS: RangeInclusive<u32> = 1100..=1199;
const EXEC_OVERHEAD_TARGET_MS: f64 = 1.0;
const THROUGHPUT_TARGET: f64 = 0.8;
const CONCURRENT_TARGET_RATIO: f64 = 3.0;
/// Data bytes per `WriteFileStream` message (the agent streams downloads in chunks this size).
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Bounds on single calls, so that a stuck guest fails the bench instead of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the agent's graceful shutdown may wait for requests still in flight.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let s = Settings::of(&args);
    ensure!(
        s.exec_runs > 0
            && s.file_bytes > 0
            && s.transfer_runs > 0
            && !s.concurrent.contains(&0)
            && s.single_creates > 0,
        "run counts, the file size and the number of creates must be positive"
    );
    let slot_count = (SLOTS.end() - SLOTS.start() + 1) as usize;
    let most = s.concurrent.iter().copied().max().unwrap_or(0);
    let most = most.max(s.warm_pool.unwrap_or(0));
    ensure!(
        most < slot_count,
        "at most {} concurrent creates (the bench's slots are {SLOTS:?})",
        slot_count - 1
    );
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "the agent bench needs root (network namespaces, nftables, TAP devices)"
    );
    let snap = Snapshot {
        template_dir: args.images.join(&s.template),
    };
    let spec = snap.spec().with_context(|| {
        format!(
            "the {} template has no snapshot under {}: run `make images` first",
            s.template,
            args.images.display()
        )
    })?;
    let (accel, why) = wrenn_vmm::accel::detect();
    let data = tempfile::Builder::new()
        .prefix("wrenn-bench-agent-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("creating a data directory in {}", args.tmp_dir.display()))?;
    let data_path = data.path().to_path_buf();
    eprintln!(
        "wrenn-bench agent: template {} ({}: {why}; data dir {}, slots {SLOTS:?})",
        snap.template_dir.display(),
        accel.as_str(),
        data_path.display()
    );

    let template_disk_mib = fs::metadata(snap.disk()).map_or(0, |m| m.len() >> 20);
    let small = match args.disk_mib {
        Some(0) => None,
        Some(mib) => Some(mib),
        None => (!small_disk::fits(&data_path, most, template_disk_mib, &spec)?)
            .then_some(small_disk::SMALL_DISK_MIB),
    };
    let images = match small {
        Some(_) => data_path.join("images"),
        None => args.images.clone(),
    };
    let disk_note = match small {
        Some(mib) => format!(
            "disk per capsule: {mib} MiB (the bench's own copy of {}, its {template_disk_mib} MiB disk \
             shrunk and snapshotted afresh: {most} capsules with the template's disk do not fit \
             the free space as the agent counts it, or --disk-mib)",
            s.template
        ),
        None => format!("disk per capsule: the template's {template_disk_mib} MiB"),
    };
    eprintln!("{disk_note}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    let (result, mut at_exit) = runtime.block_on(async {
        if let Some(mib) = small {
            // Before the agent starts: its slot range's first sweep finds the build's slot gone.
            let made =
                small_disk::make(&args.images, &s.template, &images, mib, *SLOTS.end()).await;
            match made {
                Ok(took) => eprintln!("the small-disk copy is ready ({:.1} s)", took.as_secs_f64()),
                Err(e) => return (Err(e), sweep(&data_path).await),
            }
        }
        let agent = match TestAgent::start(&data_path, &images, most + 4).await {
            Ok(a) => a,
            // Nothing was created yet, but sweep the range anyway.
            Err(e) => return (Err(e), sweep(&data_path).await),
        };
        if let Some(n) = args.create_parallelism {
            agent.manager.set_create_parallelism(n);
        }
        // The bench runs in its own task: a panic becomes an error here, and Ctrl-C aborts
        // it; the cleanup below runs either way.
        let mut bench = tokio::spawn(bench(
            agent.client.clone(),
            agent.manager.clone(),
            s.clone(),
        ));
        let result = tokio::select! {
            r = &mut bench => match r {
                Ok(r) => r,
                Err(e) => Err(anyhow!("the bench task failed: {e}")),
            },
            _ = tokio::signal::ctrl_c() => {
                bench.abort();
                let _ = bench.await;
                Err(anyhow!("interrupted"))
            }
        };
        let at_exit = agent.shutdown(&data_path).await;
        (result, at_exit)
    });
    drop(runtime);
    drop(data);
    at_exit.push(format!(
        "data dir {}",
        if data_path.exists() {
            "NOT removed"
        } else {
            "removed"
        }
    ));
    let at_exit = format!("at exit: {}", at_exit.join("; "));
    let mut out = match result {
        Ok(out) => out,
        Err(e) => {
            eprintln!("{at_exit}");
            return Err(e);
        }
    };
    out.notes.push(disk_note);
    out.notes.push(at_exit);
    let elapsed = started.elapsed();

    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "wrenn-bench agent: template {} ({} vCPU, {} MiB, {}), agent in-process on loopback, slots {SLOTS:?}",
        snap.template_dir.display(),
        spec.vcpus,
        spec.memory_mib,
        spec.accel
    );
    println!(
        "accel: {} ({why}); {cpus} CPUs; ratio = agent / baseline (ms: lower is better; MB/s: higher is better)",
        accel.as_str()
    );
    let parallelism = args
        .create_parallelism
        .unwrap_or_else(wrenn_agent::manager::default_create_parallelism);
    println!(
        "creates the agent runs at once: {}",
        match parallelism {
            0 => "no limit".to_string(),
            n => format!("{n} (the others wait their turn)"),
        }
    );
    println!();
    for row in &out.rows {
        println!("{}", row.line());
    }
    println!();
    for note in &out.notes {
        println!("{note}");
    }
    println!();
    println!(
        "baselines: exec = the same process.Process/Start of `true` straight to the capsule's envd"
    );
    println!("           (wrenn-agent's EnvdClient with the capsule's access token), interleaved with the gRPC ones;");
    println!("           files = POST / GET /files straight to envd with reqwest and the token (same file, same");
    println!("           guest path); creates = CreateCapsule through the same agent, one at a time (p50)");
    println!("finished in {:.1} s", elapsed.as_secs_f64());

    if let Some(path) = &args.json {
        let mut doc = Map::new();
        doc.insert("bench".into(), json!("agent"));
        doc.insert("template".into(), json!(snap.template_dir));
        doc.insert("accel".into(), json!(accel.as_str()));
        doc.insert("accel_reason".into(), json!(why));
        doc.insert("cpus".into(), json!(cpus));
        doc.insert("snapshot_vcpus".into(), json!(spec.vcpus));
        doc.insert("snapshot_memory_mib".into(), json!(spec.memory_mib));
        doc.insert("quick".into(), json!(args.quick));
        doc.insert("create_parallelism".into(), json!(parallelism));
        doc.insert("disk_mib".into(), json!(small.unwrap_or(template_disk_mib)));
        doc.insert("elapsed_s".into(), json!(elapsed.as_secs_f64()));
        doc.insert(
            "results".into(),
            Value::Array(out.rows.iter().map(Row::to_json).collect()),
        );
        doc.extend(out.extra);
        doc.insert("notes".into(), json!(out.notes));
        let mut text = serde_json::to_string_pretty(&Value::Object(doc))?;
        text.push('\n');
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// What the measuring part hands back for printing.
struct Outcome {
    rows: Vec<Row>,
    notes: Vec<String>,
    extra: Map<String, Value>,
}

fn row(id: &'static str, label: &str, unit: &'static str, agent: f64, baseline: f64) -> Row {
    let mut r = Row::new(id, label, unit, agent, baseline);
    r.subject = "agent";
    r
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms_list(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
    format!("[{}] ms", parts.join(", "))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `fut`, or an error naming `what` after `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.with_context(|| what.to_owned()),
        Err(_) => bail!("{what}: no answer within {limit:?}"),
    }
}

/// `CreateCapsule` of `template`; the new capsule's id once it runs.
async fn create(client: &mut AgentClient<Channel>, template: &str) -> Result<String> {
    let c = within(CREATE_TIMEOUT, "CreateCapsule", async {
        Ok(client
            .create_capsule(create_request(template))
            .await?
            .into_inner())
    })
    .await?;
    ensure!(
        c.state == PbState::Running as i32,
        "capsule {} was created in state {}",
        c.id,
        c.state
    );
    Ok(c.id)
}

fn create_request(template: &str) -> CreateCapsuleRequest {
    CreateCapsuleRequest {
        template: template.into(),
        ..Default::default()
    }
}

async fn destroy(client: &mut AgentClient<Channel>, id: &str) -> Result<()> {
    within(CREATE_TIMEOUT, &format!("DestroyCapsule {id}"), async {
        client.destroy_capsule(CapsuleRef { id: id.into() }).await?;
        Ok(())
    })
    .await
}
