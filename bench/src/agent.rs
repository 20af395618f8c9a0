//! `wrenn-bench agent`: the host agent (`wrenn-agent`'s manager and gRPC service, started in
//! this process on loopback), each figure against a baseline measured in the same run.
//!
//! 1. Exec round trip of `true`: `Exec` through the agent's gRPC against the same exec sent
//!    straight to the capsule's envd (`EnvdClient` with the capsule's access token),
//!    interleaved.
//! 2. A streamed file transfer (100 MiB): `WriteFileStream` / `ReadFileStream` through the
//!    agent against `POST` / `GET /files` straight to envd. Every transfer is checked (size,
//!    SHA-256 of the download against the source) off the clock.
//! 3. Concurrent creates: `CreateCapsule` alone a few times against 20 at once.
//!
//! Steps 2 and 3 also report the CPU they used (this process = the agent and the client, the
//! capsule's QEMU, the agent's helper processes), and 3 the floor the host's CPUs alone put on
//! the concurrent figure: on a small host without KVM, creates are CPU-bound in QEMU.
//!
//! The agent owns its own data directory (a tempdir under `--tmp-dir`) and its own network
//! slots (`SLOTS`, never the default range). Whatever happens (errors, a panic, Ctrl-C) the
//! agent is stopped, every capsule destroyed, and every slot and QEMU of that range and
//! directory swept before the bench returns.

use std::{
    fs,
    net::SocketAddr,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use wrenn_agent::{
    envd_client::{self, EnvdClient},
    manager::{AgentConfig, Manager},
    netslot, service,
};
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, write_file_stream_request::Part, CapsuleRef,
    CapsuleState as PbState, CreateCapsuleRequest, ExecRequest, FileRequest,
    WriteFileStreamRequest,
};
use wrenn_vmm::snapshot::Snapshot;

use crate::report::{percentile, Row, Target as Goal};

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
    /// Exec round trips per side, interleaved, after the warm-up ones [default: 200; quick 30].
    #[arg(long)]
    exec_runs: Option<usize>,
    /// Size of the transferred file, in MiB [default: 100; quick 8].
    #[arg(long)]
    file_mib: Option<u64>,
    /// Uploads and downloads per side; the best one counts [default: 3; quick 1].
    #[arg(long)]
    transfer_runs: Option<usize>,
    /// Creates at once [default: 20; quick 5].
    #[arg(long)]
    concurrent: Option<usize>,
    /// Creates alone, one after the other, for the baseline [default: 3; quick 2].
    #[arg(long)]
    single_creates: Option<usize>,
    /// The file the transfers write inside the capsule (removed after each one). The guest's
    /// /tmp is a tmpfs of half its RAM: keep the file below that.
    #[arg(long, default_value = "/tmp/wrenn-bench.bin")]
    guest_file: String,
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
    concurrent: usize,
    single_creates: usize,
    guest_file: String,
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
            concurrent: pick(args.concurrent, 20, 5),
            single_creates: pick(args.single_creates, 3, 2),
            guest_file: args.guest_file.clone(),
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
            && s.concurrent > 0
            && s.single_creates > 0,
        "run counts, the file size and the number of creates must be positive"
    );
    let slot_count = (SLOTS.end() - SLOTS.start() + 1) as usize;
    ensure!(
        s.concurrent < slot_count,
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

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    let (result, mut at_exit) = runtime.block_on(async {
        let agent = match TestAgent::start(&data_path, &args.images, s.concurrent + 4).await {
            Ok(a) => a,
            // Nothing was created yet, but sweep the range anyway.
            Err(e) => return (Err(e), sweep(&data_path).await),
        };
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

// ---- the agent under test ----

/// A real agent (manager + gRPC server on 127.0.0.1:0) in this process.
struct TestAgent {
    client: AgentClient<Channel>,
    manager: Arc<Manager>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<wrenn_agent::Result<()>>,
}

impl TestAgent {
    async fn start(data: &Path, images: &Path, max_capsules: usize) -> Result<TestAgent> {
        let manager = Arc::new(
            Manager::start(AgentConfig {
                data_dir: data.to_path_buf(),
                images_dir: images.to_path_buf(),
                qemu: wrenn_vmm::qemu::default_qemu(),
                max_capsules: max_capsules.max(24),
                slots: SLOTS,
                shapes: Default::default(),
                dns_upstreams: Vec::new(),
                egress_allow_private: Vec::new(),
            })
            .await
            .context("starting the agent")?,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the agent's gRPC listener")?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service::serve(
            service::Listen::Tcp(listener),
            None,
            manager.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        let client = match AgentClient::connect(format!("http://{addr}")).await {
            Ok(c) => c,
            Err(e) => {
                server.abort();
                return Err(e).context("connecting to the agent");
            }
        };
        Ok(TestAgent {
            client,
            manager,
            stop,
            server,
        })
    }

    /// Stops the server (after the requests in flight), destroys every capsule the manager
    /// still holds, then sweeps the bench's slot range and data dir. What it found, for the
    /// report.
    async fn shutdown(self, data: &Path) -> Vec<String> {
        let TestAgent {
            client,
            manager,
            stop,
            mut server,
        } = self;
        drop(client);
        let _ = stop.send(());
        let mut notes = Vec::new();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut server)
            .await
            .is_err()
        {
            server.abort();
            notes.push(format!(
                "the gRPC server did not stop within {SHUTDOWN_TIMEOUT:?} (aborted)"
            ));
        }
        let ids: Vec<String> = manager.list().into_iter().map(|r| r.id).collect();
        let mut set = tokio::task::JoinSet::new();
        for id in ids.iter().cloned() {
            let m = manager.clone();
            set.spawn(async move {
                let r = m.destroy(&id).await;
                (id, r)
            });
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(e))) => notes.push(format!("destroying {id} failed: {e}")),
                Err(e) => notes.push(format!("a destroy task failed: {e}")),
            }
        }
        notes.push(format!(
            "{} capsules destroyed by the cleanup, {} left in the manager",
            ids.len(),
            manager.list().len()
        ));
        drop(manager);
        notes.extend(sweep(data).await);
        notes
    }
}

/// Kills QEMUs whose command line names `data` and removes every network slot of `SLOTS`;
/// reports what it found and what is left.
async fn sweep(data: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let stray = wrenn_vmm::qemu::processes_under(data);
    for (pid, _) in &stray {
        // SAFETY: kill(2) of a QEMU whose command line names this bench's own data dir.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !wrenn_vmm::qemu::processes_under(data).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let qemu_left = wrenn_vmm::qemu::processes_under(data).len();
    let removed = match netslot::cleanup_orphans(&[], &SLOTS).await {
        Ok(r) => r.len(),
        Err(e) => {
            notes.push(format!("sweeping the slots failed: {e}"));
            0
        }
    };
    let slots_left = match netslot::existing_slots().await {
        Ok(v) => v
            .into_iter()
            .filter(|n| SLOTS.contains(n))
            .count()
            .to_string(),
        Err(e) => format!("? ({e})"),
    };
    notes.push(format!(
        "{} stray QEMU killed, {qemu_left} QEMU left under the data dir; {removed} orphaned slots \
         removed, {slots_left} netns/veth left in {SLOTS:?}",
        stray.len()
    ));
    notes
}

// ---- the measurements ----

async fn bench(
    mut client: AgentClient<Channel>,
    manager: Arc<Manager>,
    s: Settings,
) -> Result<Outcome> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut extra = Map::new();

    eprintln!("[0/3] a capsule for exec and files");
    let t = Instant::now();
    let id = create(&mut client, &s.template).await?;
    notes.push(format!(
        "the exec/files capsule was created in {:.0} ms (also warms the template's page cache)",
        ms(t.elapsed())
    ));
    let (addr, token) = manager.envd_of(&id)?;
    let envd = EnvdClient::new(addr, Some(token.clone()));

    // ---- 1 ----
    eprintln!(
        "[1/3] exec round trip of `true`: {} per side (+{} warm-up), interleaved",
        s.exec_runs, s.exec_warmup
    );
    let (agent_ms, direct_ms) = exec_round_trips(&mut client, &envd, &id, &s).await?;
    for (rid, label, p) in [
        ("exec_true_p50", "exec true p50", 50.0),
        ("exec_true_p99", "exec true p99", 99.0),
    ] {
        let (a, d) = (percentile(&agent_ms, p), percentile(&direct_ms, p));
        let mut r = row(rid, label, "ms", a, d);
        r.samples = s.exec_runs;
        r.note = format!("overhead {:+.2} ms", a - d);
        r.extra.insert("overhead_ms".into(), json!(a - d));
        if p < 99.0 {
            r.target = Some(Goal {
                text: format!("overhead <= {EXEC_OVERHEAD_TARGET_MS} ms"),
                met: a - d <= EXEC_OVERHEAD_TARGET_MS,
            });
        }
        rows.push(r);
    }
    extra.insert(
        "exec_samples_ms".into(),
        json!({"agent": agent_ms, "direct": direct_ms}),
    );

    // ---- 2 ----
    eprintln!(
        "[2/3] {} MiB streamed upload + download to {}: best of {} per side (+1 warm-up), interleaved",
        s.file_mib(),
        s.guest_file,
        s.transfer_runs
    );
    let qemu_pid = manager
        .get(&id)?
        .vmm_pid
        .context("the capsule has no QEMU pid")?;
    let tr = transfers(&mut client, addr, &token, &id, qemu_pid, &s).await?;
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    for (rid, what, runs) in [
        ("upload_mb_s", "upload", &tr.upload),
        ("download_mb_s", "download", &tr.download),
    ] {
        let mut r = row(
            rid,
            &format!("{what} {} MiB", s.file_mib()),
            "MB/s",
            best(&runs[0]),
            best(&runs[1]),
        );
        r.samples = s.transfer_runs;
        r.note = format!("agent at {:.0} % of direct", r.ratio() * 100.0);
        r.target = Some(Goal {
            text: format!(">= {:.0} % of direct", THROUGHPUT_TARGET * 100.0),
            met: r.ratio() >= THROUGHPUT_TARGET,
        });
        r.extra.insert("runs_agent".into(), json!(runs[0]));
        r.extra.insert("runs_direct".into(), json!(runs[1]));
        r.extra.insert("bytes".into(), json!(s.file_bytes));
        rows.push(r);
    }
    notes.push(format!(
        "transfers: {} bytes of pseudo-random data, sha256 {}; every upload's size and every \
         download's size and sha256 checked (off the clock); gRPC upload in {} KiB messages",
        s.file_bytes,
        hex(&tr.sha256),
        UPLOAD_CHUNK / 1024
    ));
    let mean = |v: &[Cpu]| {
        let n = v.len().max(1) as f64;
        (
            v.iter().map(|c| c.this).sum::<f64>() / n,
            v.iter().map(|c| c.qemu).sum::<f64>() / n,
        )
    };
    let cpu_line = |what: &str, runs: &[Vec<Cpu>; 2]| {
        let (a, d) = (mean(&runs[0]), mean(&runs[1]));
        format!(
            "{what}: agent path {:.2} s in this process + {:.2} s QEMU, direct {:.2} s + {:.2} s",
            a.0, a.1, d.0, d.1
        )
    };
    notes.push(format!(
        "host CPU per transfer (mean; this process = bench client + agent): {}; {}",
        cpu_line("upload", &tr.cpu_upload),
        cpu_line("download", &tr.cpu_download)
    ));
    extra.insert(
        "transfer_cpu_s".into(),
        json!({
            "upload_agent": tr.cpu_upload[0].iter().map(|c| [c.this, c.qemu]).collect::<Vec<_>>(),
            "upload_direct": tr.cpu_upload[1].iter().map(|c| [c.this, c.qemu]).collect::<Vec<_>>(),
            "download_agent": tr.cpu_download[0].iter().map(|c| [c.this, c.qemu]).collect::<Vec<_>>(),
            "download_direct": tr.cpu_download[1].iter().map(|c| [c.this, c.qemu]).collect::<Vec<_>>(),
        }),
    );
    destroy(&mut client, &id).await?;

    // ---- 3 ----
    eprintln!(
        "[3/3] creates: {} alone one after the other, then {} at once",
        s.single_creates, s.concurrent
    );
    let cr = creates(&mut client, &manager, &s).await?;
    let single = percentile(&cr.single, 50.0);
    let n = s.concurrent;
    let (c50, c99) = (
        percentile(&cr.together, 50.0),
        percentile(&cr.together, 99.0),
    );
    let mut r = row(
        "concurrent_create_p50",
        &format!("{n} creates p50"),
        "ms",
        c50,
        single,
    );
    r.samples = n;
    r.note = format!("baseline = one create alone, p50 of {}", s.single_creates);
    rows.push(r);
    let mut r = row(
        "concurrent_create_p99",
        &format!("{n} creates p99"),
        "ms",
        c99,
        single,
    );
    r.samples = n;
    // What the CPU alone allows: n creates' CPU (as one alone used) spread over every CPU.
    let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let alone_cpu = percentile(
        &cr.single_cpu.iter().map(CreateCpu::own).collect::<Vec<_>>(),
        50.0,
    );
    let floor_ms = n as f64 * alone_cpu / cpus * 1000.0;
    r.note = format!(
        "{}CPU-bound floor {:.1}x on {cpus} CPUs",
        if n < 100 {
            format!("p99 of {n} = slowest; ")
        } else {
            String::new()
        },
        floor_ms / single
    );
    r.extra.insert("cpu_floor_ms".into(), json!(floor_ms));
    r.target = Some(Goal {
        text: format!("p99 <= {CONCURRENT_TARGET_RATIO}x alone"),
        met: c99 <= CONCURRENT_TARGET_RATIO * single,
    });
    rows.push(r);
    notes.push(format!(
        "creates alone: {}; {n} at once: fastest {:.0} ms, all done after {:.0} ms; \
         destroying the {n} (at once) took {:.0} ms",
        ms_list(&cr.single),
        cr.together.iter().copied().fold(f64::INFINITY, f64::min),
        cr.makespan_ms,
        cr.destroy_ms
    ));
    // The single create whose own CPU is the median, for the breakdown.
    let mut alone = cr.single_cpu.clone();
    alone.sort_by(|a, b| a.own().total_cmp(&b.own()));
    let a = alone[alone.len() / 2];
    let b = cr.burst_cpu;
    let per = n as f64;
    notes.push(format!(
        "creates, CPU (QEMU + agent process + its helper processes such as ip/nft/qemu-img): one \
         alone {:.2} s (QEMU {:.2}, agent {:.2}, helpers {:.2}); at once {:.2} s per create (QEMU \
         {:.2}, agent {:.2}, helpers {:.2}); the floor above = {n} x one alone / {cpus} CPUs = \
         {floor_ms:.0} ms; whole machine busy (other load included): {:.2} s during one alone, \
         {:.2} s during the {n}",
        a.own(),
        a.qemu,
        a.agent,
        a.helpers,
        b.own() / per,
        b.qemu / per,
        b.agent / per,
        b.helpers / per,
        a.machine,
        b.machine
    ));
    extra.insert(
        "create_samples_ms".into(),
        json!({"alone": cr.single, "together": cr.together}),
    );
    extra.insert(
        "create_cpu_s".into(),
        json!({
            "alone": cr.single_cpu.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
            "burst": cr.burst_cpu.to_json(),
        }),
    );
    Ok(Outcome { rows, notes, extra })
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

// ---- 1. exec round trip ----

async fn exec_round_trips(
    client: &mut AgentClient<Channel>,
    envd: &EnvdClient,
    id: &str,
    s: &Settings,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let grpc_req = ExecRequest {
        capsule_id: id.into(),
        cmd: "true".into(),
        ..Default::default()
    };
    let envd_req = envd_client::ExecRequest {
        cmd: "true".into(),
        ..Default::default()
    };
    let mut agent_ms = Vec::with_capacity(s.exec_runs);
    let mut direct_ms = Vec::with_capacity(s.exec_runs);
    for i in 0..s.exec_warmup + s.exec_runs {
        // Alternate which side goes first, so that neither always follows the other.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let (mut a, mut d) = (0.0, 0.0);
        for through_agent in order {
            if through_agent {
                let t = Instant::now();
                let out = within(CALL_TIMEOUT, "Exec through the agent", async {
                    Ok(client.exec(grpc_req.clone()).await?.into_inner())
                })
                .await
                .with_context(|| format!("agent exec #{i}"))?;
                a = ms(t.elapsed());
                ensure!(
                    out.exit_code == 0 && out.error.is_empty(),
                    "agent exec #{i}: `true` ended with {} {:?}",
                    out.exit_code,
                    out.error
                );
            } else {
                let t = Instant::now();
                let out = within(CALL_TIMEOUT, "exec straight to envd", async {
                    Ok(envd.exec(&envd_req).await?)
                })
                .await
                .with_context(|| format!("direct exec #{i}"))?;
                d = ms(t.elapsed());
                ensure!(
                    out.exit_code == 0 && out.error.is_none(),
                    "direct exec #{i}: `true` ended with {} {:?}",
                    out.exit_code,
                    out.error
                );
            }
        }
        if i >= s.exec_warmup {
            agent_ms.push(a);
            direct_ms.push(d);
        }
    }
    Ok((agent_ms, direct_ms))
}

// ---- 2. streamed transfer ----

struct Transfers {
    /// MB/s per run: `[agent, direct]`.
    upload: [Vec<f64>; 2],
    download: [Vec<f64>; 2],
    /// CPU seconds per run: `[agent, direct]`.
    cpu_upload: [Vec<Cpu>; 2],
    cpu_download: [Vec<Cpu>; 2],
    sha256: Vec<u8>,
}

/// CPU seconds used during a transfer: by this process (the bench's client and the agent)
/// and by the capsule's QEMU.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    this: f64,
    qemu: f64,
}

/// Reads the CPU time of this process (all threads) and of one QEMU.
struct CpuMeter {
    qemu_pid: u32,
}

impl CpuMeter {
    fn read(&self) -> Cpu {
        Cpu {
            this: proc_cpu_secs(std::process::id()),
            qemu: proc_cpu_secs(self.qemu_pid),
        }
    }

    fn since(&self, before: Cpu) -> Cpu {
        let now = self.read();
        Cpu {
            this: now.this - before.this,
            qemu: now.qemu - before.qemu,
        }
    }
}

/// Busy CPU seconds of the whole machine since boot (all CPUs: everything but idle and
/// iowait), from /proc/stat.
fn machine_busy_secs() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return 0.0;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    busy as f64 / hz as f64
}

/// utime + stime of a process, in seconds (0 when it cannot be read).
fn proc_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // "pid (comm) state ...": utime and stime are the 12th and 13th fields after comm.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(u), Some(s)) = (ticks(11), ticks(12)) else {
        return 0.0;
    };
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    (u + s) as f64 / hz as f64
}

async fn transfers(
    client: &mut AgentClient<Channel>,
    addr: SocketAddr,
    token: &str,
    id: &str,
    qemu_pid: u32,
    s: &Settings,
) -> Result<Transfers> {
    let meter = CpuMeter { qemu_pid };
    let source = Bytes::from(pseudo_random(s.file_bytes));
    let sha256 = Sha256::digest(&source).to_vec();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let direct = Direct {
        http: &http,
        url: format!("http://{addr}/files"),
        token,
        path: &s.guest_file,
    };
    let mut out = Transfers {
        upload: Default::default(),
        download: Default::default(),
        cpu_upload: Default::default(),
        cpu_download: Default::default(),
        sha256,
    };
    let file = FileRequest {
        capsule_id: id.into(),
        path: s.guest_file.clone(),
        user: String::new(),
    };
    // A file left by an earlier, failed run would not fit next to a new one.
    let _ = client.remove(file.clone()).await;
    // Run 0 is a warm-up (the first writes into a fresh capsule's tmpfs also fault in its
    // guest memory), checked but not counted.
    for run in 0..=s.transfer_runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        // One side at a time, and the file removed before the other side's upload: the
        // guest's /tmp holds one copy (plus the upload's temporary file), not two.
        for side in order {
            let name = ["agent", "direct"][side];
            let (up, down) = if side == 0 {
                let up = within(TRANSFER_TIMEOUT, "WriteFileStream", async {
                    agent_upload(client, &file, &source, &meter).await
                })
                .await;
                let down = within(TRANSFER_TIMEOUT, "ReadFileStream", async {
                    agent_download(client, &file, &meter).await
                })
                .await;
                (up, down)
            } else {
                let up = within(
                    TRANSFER_TIMEOUT,
                    "POST /files",
                    direct.upload(&source, &meter),
                )
                .await;
                let down = within(TRANSFER_TIMEOUT, "GET /files", direct.download(&meter)).await;
                (up, down)
            };
            let up = up.with_context(|| format!("{name} upload #{run}"))?;
            let down = down.with_context(|| format!("{name} download #{run}"))?;
            // Checks, off the clock: the guest's file after the upload, the bytes downloaded.
            let stat = within(CALL_TIMEOUT, "Stat", async {
                Ok(client.stat(file.clone()).await?.into_inner())
            })
            .await?;
            ensure!(
                stat.size as u64 == s.file_bytes && up.size == s.file_bytes,
                "{name} upload #{run}: the guest file has {} bytes (the upload answered {}), not {}",
                stat.size,
                up.size,
                s.file_bytes
            );
            let (got, digest) = length_and_sha256(&down.chunks);
            ensure!(
                got == s.file_bytes && digest == out.sha256,
                "{name} download #{run}: {got} bytes with sha256 {}, not {} bytes with sha256 {}",
                hex(&digest),
                s.file_bytes,
                hex(&out.sha256)
            );
            within(CALL_TIMEOUT, "Remove", async {
                client.remove(file.clone()).await?;
                Ok(())
            })
            .await?;
            if run == 0 {
                continue;
            }
            out.upload[side].push(mb_per_s(s.file_bytes, up.secs));
            out.download[side].push(mb_per_s(s.file_bytes, down.secs));
            out.cpu_upload[side].push(up.cpu);
            out.cpu_download[side].push(down.cpu);
        }
    }
    Ok(out)
}

/// An upload: how long it took and the size the receiver reported (or the bytes sent, when
/// it reports none).
struct Upload {
    secs: f64,
    size: u64,
    cpu: Cpu,
}

/// A download: how long it took and what arrived, checked afterwards.
struct Download {
    secs: f64,
    chunks: Vec<Bytes>,
    cpu: Cpu,
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// `size` bytes of incompressible pseudo-random data (xorshift64*).
fn pseudo_random(size: u64) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64 ^ size;
    let mut data = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    for word in data.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
    data
}

fn length_and_sha256(chunks: &[Bytes]) -> (u64, Vec<u8>) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    for c in chunks {
        h.update(c);
        n += c.len() as u64;
    }
    (n, h.finalize().to_vec())
}

async fn agent_upload(
    client: &mut AgentClient<Channel>,
    file: &FileRequest,
    source: &Bytes,
    meter: &CpuMeter,
) -> Result<Upload> {
    // The messages are built before the clock starts.
    let mut parts = Vec::with_capacity(source.len() / UPLOAD_CHUNK + 2);
    parts.push(WriteFileStreamRequest {
        part: Some(Part::Start(
            wrenn_proto::agent::v1::write_file_stream_request::Start {
                capsule_id: file.capsule_id.clone(),
                path: file.path.clone(),
                user: file.user.clone(),
            },
        )),
    });
    parts.extend(source.chunks(UPLOAD_CHUNK).map(|c| WriteFileStreamRequest {
        part: Some(Part::Data(c.to_vec())),
    }));
    let cpu = meter.read();
    let t = Instant::now();
    let entry = client
        .write_file_stream(tokio_stream::iter(parts))
        .await?
        .into_inner();
    let secs = t.elapsed().as_secs_f64();
    Ok(Upload {
        secs,
        size: entry.size as u64,
        cpu: meter.since(cpu),
    })
}

async fn agent_download(
    client: &mut AgentClient<Channel>,
    file: &FileRequest,
    meter: &CpuMeter,
) -> Result<Download> {
    let cpu = meter.read();
    let t = Instant::now();
    let mut stream = client.read_file_stream(file.clone()).await?.into_inner();
    let mut chunks = Vec::new();
    while let Some(c) = stream.message().await? {
        chunks.push(Bytes::from(c.data));
    }
    Ok(Download {
        secs: t.elapsed().as_secs_f64(),
        chunks,
        cpu: meter.since(cpu),
    })
}

/// envd's `/files`, straight (no agent in between).
struct Direct<'a> {
    http: &'a reqwest::Client,
    url: String,
    token: &'a str,
    path: &'a str,
}

impl Direct<'_> {
    async fn upload(&self, source: &Bytes, meter: &CpuMeter) -> Result<Upload> {
        let cpu = meter.read();
        let t = Instant::now();
        let resp = self
            .http
            .post(&self.url)
            .query(&[("path", self.path)])
            .header("x-access-token", self.token)
            .header("content-type", "application/octet-stream")
            .body(source.clone())
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let secs = t.elapsed().as_secs_f64();
        ensure!(
            status.is_success(),
            "envd answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(Upload {
            secs,
            size: source.len() as u64,
            cpu: meter.since(cpu),
        })
    }

    async fn download(&self, meter: &CpuMeter) -> Result<Download> {
        let cpu = meter.read();
        let t = Instant::now();
        let mut resp = self
            .http
            .get(&self.url)
            .query(&[("path", self.path)])
            .header("x-access-token", self.token)
            .send()
            .await?;
        let status = resp.status();
        ensure!(status.is_success(), "envd answered {status}");
        let mut chunks = Vec::new();
        while let Some(c) = resp.chunk().await? {
            chunks.push(c);
        }
        Ok(Download {
            secs: t.elapsed().as_secs_f64(),
            chunks,
            cpu: meter.since(cpu),
        })
    }
}

// ---- 3. concurrent creates ----

struct Creates {
    single: Vec<f64>,
    together: Vec<f64>,
    makespan_ms: f64,
    destroy_ms: f64,
    /// CPU seconds of each create alone, and of the burst (all its creates together).
    single_cpu: Vec<CreateCpu>,
    burst_cpu: CreateCpu,
}

/// CPU seconds a create used, by who used them.
#[derive(Debug, Clone, Copy, Default)]
struct CreateCpu {
    /// The capsule's QEMU, up to the moment its create returned.
    qemu: f64,
    /// This process: the agent (and the bench's gRPC client).
    agent: f64,
    /// The agent's helper processes once reaped (`ip`, `nft`, `qemu-img`, ...).
    helpers: f64,
    /// The whole machine, every process: other load on the host counts here too.
    machine: f64,
}

impl CreateCpu {
    /// What the create itself used (QEMU, agent, helpers), without the host's other load.
    fn own(&self) -> f64 {
        self.qemu + self.agent + self.helpers
    }

    fn to_json(self) -> Value {
        json!({"qemu": self.qemu, "agent": self.agent, "helpers": self.helpers,
               "machine": self.machine})
    }
}

/// CPU counters of this process, its reaped children and the machine, read together.
#[derive(Clone, Copy)]
struct CpuMark {
    this: f64,
    children: f64,
    machine: f64,
}

impl CpuMark {
    fn now() -> CpuMark {
        CpuMark {
            this: proc_cpu_secs(std::process::id()),
            children: children_cpu_secs(),
            machine: machine_busy_secs(),
        }
    }

    /// The CPU used since `self`, plus `qemu` seconds of QEMU.
    fn since(self, qemu: f64) -> CreateCpu {
        let now = CpuMark::now();
        CreateCpu {
            qemu,
            agent: now.this - self.this,
            helpers: now.children - self.children,
            machine: now.machine - self.machine,
        }
    }
}

/// user + system CPU seconds of this process's children that have been waited for.
fn children_cpu_secs() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writes into the rusage we own.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// The CPU seconds a capsule's QEMU has used so far (0 if it has none).
fn qemu_cpu_secs(manager: &Manager, id: &str) -> f64 {
    manager
        .get(id)
        .ok()
        .and_then(|r| r.vmm_pid)
        .map_or(0.0, proc_cpu_secs)
}

async fn creates(
    client: &mut AgentClient<Channel>,
    manager: &Arc<Manager>,
    s: &Settings,
) -> Result<Creates> {
    let mut single = Vec::with_capacity(s.single_creates);
    let mut single_cpu = Vec::with_capacity(s.single_creates);
    for i in 0..s.single_creates {
        let mark = CpuMark::now();
        let t = Instant::now();
        let id = create(client, &s.template)
            .await
            .with_context(|| format!("create alone #{i}"))?;
        single.push(ms(t.elapsed()));
        single_cpu.push(mark.since(qemu_cpu_secs(manager, &id)));
        destroy(client, &id).await?;
    }

    let n = s.concurrent;
    let gate = Arc::new(tokio::sync::Barrier::new(n + 1));
    // A JoinSet: if this task is aborted, the creates in flight are dropped with it.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut c = client.clone();
        let gate = gate.clone();
        let template = s.template.clone();
        let manager = manager.clone();
        set.spawn(async move {
            gate.wait().await;
            let t = Instant::now();
            let r = create(&mut c, &template).await;
            let took = t.elapsed();
            let qemu = r.as_ref().map_or(0.0, |id| qemu_cpu_secs(&manager, id));
            (i, took, qemu, r)
        });
    }
    let mark = CpuMark::now();
    gate.wait().await;
    let burst = Instant::now();
    let mut together = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut burst_qemu = 0.0;
    let mut errors = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok((_, took, qemu, Ok(id))) => {
                together.push(ms(took));
                burst_qemu += qemu;
                ids.push(id);
            }
            Ok((i, _, _, Err(e))) => errors.push(format!("create #{i} of {n}: {e:#}")),
            Err(e) => errors.push(format!("a create task failed: {e}")),
        }
    }
    let makespan_ms = ms(burst.elapsed());
    let burst_cpu = mark.since(burst_qemu);
    // Destroy whatever was made, failures or not (the agent's cleanup would otherwise).
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let mut c = client.clone();
        set.spawn(async move { destroy(&mut c, &id).await });
    }
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("a destroy task failed: {e}")),
        }
    }
    let destroy_ms = ms(t.elapsed());
    if !errors.is_empty() {
        bail!(
            "{} of {n} concurrent creates or destroys failed:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    Ok(Creates {
        single,
        together,
        makespan_ms,
        destroy_ms,
        single_cpu,
        burst_cpu,
    })
}
