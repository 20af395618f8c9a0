//! `wrenn-bench vm`: the VM layer (`wrenn-vmm` driving QEMU microVMs), each figure against a
//! baseline measured in the same run.
//!
//! 1. Create from the template snapshot (`prepare_capsule` + `restore` + `resume` +
//!    `wait_ready`) against a raw QEMU restore of the same snapshot with no Wrenn code: `cp
//!    --sparse=always` of the memory file, `qemu-img create` of the overlay, QEMU spawned with
//!    the same machine arguments, a few QMP lines over a Unix socket, `GET /health` polled.
//! 2. Pause (`pause` + `save`) and resume (`restore` + `resume` + `wait_ready`) of a capsule,
//!    with the raw restore of 1 for scale.
//! 3. Template build (`make_template_snapshot` on a copy of the template) against a plain cold
//!    boot of the same image until envd answers.
//! 4. PSS of idle capsules, one alone first and then many at once, and how many would fit in
//!    this host's memory.
//!
//! Everything runs in one scratch directory under `--tmp-dir`, removed at the end (also on
//! errors); every QEMU started here is killed before that.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::MetadataExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Map, Value};
use wrenn_vmm::{
    accel::{self, Accel},
    config::{ENVD_PORT, GUEST_GATEWAY, GUEST_IP, GUEST_MAC, GUEST_PREFIX},
    qemu::default_qemu,
    snapshot::{self, Snapshot, SnapshotSpec, TemplateBoot},
    DiskFormat, Net, QemuVm, VmConfig, Vmm,
};

use crate::{
    procs::WorkDir,
    report::{percentile, Row, Target as Goal},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where `make images` put the templates.
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    /// Also write the results as JSON to this path.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The template to measure (its snapshot is made first if it has none).
    #[arg(long, default_value = "minimal")]
    template: String,
    /// Creates per side (after one warm-up each), interleaved.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Pause/resume cycles (after one warm-up).
    #[arg(long, default_value_t = 10)]
    cycles: usize,
    /// Template builds and cold boots (interleaved); the median of each counts.
    #[arg(long, default_value_t = 3)]
    builds: usize,
    /// Capsules alive at once for the PSS figure.
    #[arg(long, default_value_t = 20)]
    capsules: usize,
    /// Seconds the capsules idle before their PSS is read.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Parent of the scratch directory.
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,
    /// Where `make images` logged its build (its `real` timing lines are printed as-is).
    #[arg(long, default_value = "/var/tmp/images.log")]
    images_log: PathBuf,
}

const READY: Duration = Duration::from_secs(120);
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Same poll intervals as `wrenn-vmm`, so that both sides wait alike.
const QMP_CONNECT_POLL: Duration = Duration::from_millis(5);
const MIGRATION_POLL: Duration = Duration::from_millis(2);
const HEALTH_POLL: Duration = Duration::from_millis(20);
const HEALTH_ATTEMPT: Duration = Duration::from_millis(1000);
const CREATE_TARGET_RATIO: f64 = 1.2;
const PAUSE_TARGET_MS: f64 = 50.0;
const PSS_TARGET_MIB: f64 = 64.0;

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    ensure!(
        args.runs > 0 && args.cycles > 0 && args.builds > 0 && args.capsules > 0,
        "run, cycle, build and capsule counts must be positive"
    );
    let template_dir = args.images.join(&args.template);
    ensure!(
        template_dir.join("rootfs.img").is_file(),
        "the {} template image is missing at {}: run `make images` first",
        args.template,
        template_dir.display()
    );
    let (accel, why) = accel::detect();
    let qemu_version = qemu_version()?;
    let work = WorkDir::create(&args.tmp_dir)?;
    eprintln!(
        "wrenn-bench vm: template {} ({}: {why}; scratch {})",
        template_dir.display(),
        accel.as_str(),
        work.path().display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    let result = runtime.block_on(async {
        // Ctrl-C ends the bench like an error does: every QEMU killed, the scratch dir removed.
        tokio::select! {
            r = bench(&args, &template_dir, accel, work.path()) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // On errors, the QemuVms dropped with the bench have asked their supervisor tasks to kill
    // QEMU: let those kill and reap before the runtime goes.
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !qemu_children().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    drop(runtime);
    let stray = wait_no_qemu_under(work.path(), Duration::from_secs(3));
    for pid in &stray {
        // SAFETY: kill(2) of a QEMU this bench started (its command line names our scratch dir).
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let children = qemu_children().len();
    let work_path = work.path().to_path_buf();
    drop(work);
    let mut out = result?;
    let elapsed = started.elapsed();
    out.notes.push(format!(
        "at exit: {} QEMU processes with the scratch dir in their command line{}, {} QEMU children \
         (live or zombie); scratch dir {}",
        stray.len(),
        if stray.is_empty() { "" } else { " (killed)" },
        children,
        if work_path.exists() { "NOT removed" } else { "removed" }
    ));

    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let spec = &out.spec;
    println!(
        "wrenn-bench vm: template {} (snapshot: {} vCPU, {} MiB, {})",
        template_dir.display(),
        spec.vcpus,
        spec.memory_mib,
        spec.accel
    );
    println!(
        "accel: {} ({why}); {qemu_version}; {cpus} CPUs; ratio = wrenn / baseline (lower is better)",
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
    println!("baselines: create = raw QEMU restore of the same snapshot, no Wrenn code: cp --sparse=always of the");
    println!("           memory file, qemu-img overlay, same machine arguments (without -sandbox, so that");
    println!("           `exec:cat` can load the state), QMP over a UnixStream, GET /health polled every 20 ms;");
    println!("           pause/resume = that raw restore's p50, for scale; template build = cold boot of the");
    println!("           same image until envd answers; PSS per capsule = one idle capsule measured alone");
    println!("finished in {:.1} s", elapsed.as_secs_f64());

    if let Some(path) = &args.json {
        let mut doc = Map::new();
        doc.insert("bench".into(), json!("vm"));
        doc.insert("template".into(), json!(template_dir));
        doc.insert("accel".into(), json!(accel.as_str()));
        doc.insert("accel_reason".into(), json!(why));
        doc.insert("qemu".into(), json!(qemu_version));
        doc.insert("cpus".into(), json!(cpus));
        doc.insert("snapshot_vcpus".into(), json!(spec.vcpus));
        doc.insert("snapshot_memory_mib".into(), json!(spec.memory_mib));
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
    spec: SnapshotSpec,
    rows: Vec<Row>,
    notes: Vec<String>,
    extra: Map<String, Value>,
}

async fn bench(args: &Args, template_dir: &Path, accel: Accel, work: &Path) -> Result<Outcome> {
    let real = Snapshot {
        template_dir: template_dir.to_path_buf(),
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut extra = Map::new();

    // The capsules here use QEMU's user network (envd forwarded to a loopback port), and a
    // snapshot restores only into the network kind it was made with (the template's real one,
    // made by `make images` in a TAP network slot, needs vnet_hdr=on). So the bench makes its own
    // snapshot of the same template image, with the same wrenn-vmm code, in the scratch dir:
    // never written into the real template, and no rebuild of that can disturb the run.
    let snap = Snapshot {
        template_dir: work.join("template"),
    };
    eprintln!("[0/4] snapshot of the template image with the user network, in the scratch dir");
    fs::create_dir(&snap.template_dir)?;
    copy_files(
        template_dir,
        &snap.template_dir,
        &["vmlinuz", "initrd.img", "rootfs.img"],
    )
    .await?;
    let t = Instant::now();
    snapshot::make_template_snapshot(&snap.template_dir, &template_boot(accel, 1, 256)?)
        .await
        .context("making the template snapshot")?;
    notes.push(format!(
        "snapshot: made from {} with the user network in the scratch dir ({:.1} s, not part of the \
         figures); {}",
        template_dir.display(),
        t.elapsed().as_secs_f64(),
        match real.spec() {
            Some(s) => format!(
                "the template's own snapshot (format {}) is not used: snapshots restore only into the \
                 network kind they were made with, and `make images` makes it for TAP network slots",
                s.format
            ),
            None => "the template has no current snapshot of its own".into(),
        }
    ));
    let spec = snap
        .spec()
        .context("the scratch copy of the template snapshot is incomplete")?;
    let state = snap.state();
    let state_str = state.to_string_lossy();
    ensure!(
        !state_str.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c)),
        "the raw baseline passes `exec:cat {state_str}` to a shell: that path needs quoting"
    );

    // ---- 1 ----
    eprintln!(
        "[1/4] create from the snapshot: {} runs per side (+1 warm-up), interleaved",
        args.runs
    );
    let create = creates(&snap, &spec, work, args.runs).await?;
    let raw_p50 = percentile(&create.raw_total, 50.0);
    for (id, label, p) in [
        ("create_p50", "create p50", 50.0),
        ("create_p99", "create p99", 99.0),
    ] {
        let (w, b) = (
            percentile(&create.wrenn_total, p),
            percentile(&create.raw_total, p),
        );
        let mut r = row(id, label, "ms", w, b);
        r.samples = args.runs;
        r.note = if p >= 99.0 && args.runs < 100 {
            format!("overhead {:+.1} ms (p99 of {} = slowest)", w - b, args.runs)
        } else {
            format!("overhead {:+.1} ms", w - b)
        };
        r.target = Some(Goal {
            text: format!("<= {CREATE_TARGET_RATIO}x raw restore"),
            met: r.ratio() <= CREATE_TARGET_RATIO,
        });
        rows.push(r);
    }
    let (wf, bf) = (
        percentile(&create.wrenn_files, 50.0),
        percentile(&create.raw_files, 50.0),
    );
    notes.push(format!(
        "create, files step (memory copy + qcow2 overlay) p50: wrenn {wf:.1} ms, raw {bf:.1} ms; \
         rest (QEMU start, state load, cont, envd /health) p50: wrenn {:.1} ms, raw {:.1} ms",
        percentile(&create.wrenn_rest(), 50.0),
        percentile(&create.raw_rest(), 50.0)
    ));
    extra.insert(
        "create_samples_ms".into(),
        json!({"wrenn": create.wrenn_total, "raw": create.raw_total,
               "wrenn_files": create.wrenn_files, "raw_files": create.raw_files}),
    );

    // ---- 2 ----
    eprintln!(
        "[2/4] pause (pause + save) and resume (restore + resume + wait_ready): {} cycles (+1 warm-up)",
        args.cycles
    );
    let pr = pause_resume(&snap, work, args.cycles).await?;
    let pause_p50 = percentile(&pr.pause, 50.0);
    let mut r = row("pause_p50", "pause p50", "ms", pause_p50, raw_p50);
    r.samples = args.cycles;
    r.note = format!(
        "stop {:.1} + save {:.1} ms; p99 {:.1} ms",
        percentile(&pr.stop, 50.0),
        percentile(&pr.save, 50.0),
        percentile(&pr.pause, 99.0)
    );
    r.target = Some(Goal {
        text: format!("<= {PAUSE_TARGET_MS} ms"),
        met: pause_p50 <= PAUSE_TARGET_MS,
    });
    rows.push(r);
    let resume_p50 = percentile(&pr.resume, 50.0);
    let mut r = row("resume_p50", "resume p50", "ms", resume_p50, raw_p50);
    r.samples = args.cycles;
    r.note = format!("p99 {:.1} ms", percentile(&pr.resume, 99.0));
    rows.push(r);
    notes.push(format!(
        "pause/resume: {} MiB guest, saved state file {:.1} KiB (RAM stays in the memory file); \
         baseline for both rows = raw restore p50 of [1]",
        spec.memory_mib,
        pr.state_bytes as f64 / 1024.0
    ));
    extra.insert(
        "pause_resume_samples_ms".into(),
        json!({"pause": pr.pause, "stop": pr.stop, "save": pr.save, "resume": pr.resume}),
    );

    // ---- 3 ----
    eprintln!(
        "[3/4] template build on a copy of the template, and a cold boot of it: {} each, interleaved",
        args.builds
    );
    let tb = template_builds(template_dir, work, accel, &spec, args.builds).await?;
    let (build, cold) = (percentile(&tb.build, 50.0), percentile(&tb.cold_boot, 50.0));
    let mut r = row("template_build", "template build p50", "s", build, cold);
    r.samples = args.builds;
    r.note = format!("snapshotting adds {:+.2} s", build - cold);
    rows.push(r);
    notes.push(format!(
        "template build = make_template_snapshot on a copy (disk copy, cold boot, envd ready, pause, save, \
         zero-page punching), runs {}; cold boots {}; memory file {:.1} MiB allocated of {} MiB",
        secs_list(&tb.build),
        secs_list(&tb.cold_boot),
        tb.memory_allocated as f64 / f64::from(1 << 20),
        spec.memory_mib
    ));
    extra.insert(
        "template_build_samples_s".into(),
        json!({"build": tb.build, "cold_boot": tb.cold_boot}),
    );
    match images_log_real_lines(&args.images_log) {
        Some(lines) if !lines.is_empty() => {
            notes.push(format!(
                "image build (`make images`, {}):",
                args.images_log.display()
            ));
            notes.extend(lines.iter().map(|l| format!("  {l}")));
            extra.insert("images_log_real".into(), json!(lines));
        }
        _ => notes.push(format!(
            "image build: skipped (no `real` timing lines in {})",
            args.images_log.display()
        )),
    }

    // ---- 4 ----
    eprintln!(
        "[4/4] PSS of idle capsules: one alone, then {} at once ({} s idle each time)",
        args.capsules, args.idle_secs
    );
    let d = density(
        &snap,
        work,
        args.capsules,
        Duration::from_secs(args.idle_secs),
    )
    .await?;
    let n = args.capsules as f64;
    let mean = d.pss_kib.iter().sum::<u64>() as f64 / n / 1024.0;
    let total = d.pss_kib.iter().sum::<u64>() as f64 / 1024.0;
    let alone = d.alone_pss_kib as f64 / 1024.0;
    let mut r = row("pss_idle_capsule", "PSS idle capsule", "MiB", mean, alone);
    r.samples = args.capsules;
    r.note = format!(
        "mean of {} idle together; baseline = one idle alone (pays QEMU's shared pages by itself)",
        args.capsules
    );
    r.target = Some(Goal {
        text: format!("<= {PSS_TARGET_MIB} MiB"),
        met: mean <= PSS_TARGET_MIB,
    });
    rows.push(r);
    let mut r = row(
        "pss_total",
        &format!("PSS total ({})", args.capsules),
        "MiB",
        total,
        alone * n,
    );
    r.samples = args.capsules;
    r.note = format!("baseline = {} x the lone capsule", args.capsules);
    rows.push(r);
    let ram = d.ram_pss_kib.iter().sum::<u64>() as f64 / n / 1024.0;
    let mem_total_mib = d.mem_total_kib as f64 / 1024.0;
    let mem_avail_mib = d.mem_available_kib as f64 / 1024.0;
    notes.push(format!(
        "capacity ({} MiB capsules at {mean:.1} MiB PSS each): MemTotal {mem_total_mib:.0} MiB -> {:.0} capsules; \
         MemAvailable {mem_avail_mib:.0} MiB (before [4]) -> {:.0} capsules",
        spec.memory_mib,
        (mem_total_mib / mean).floor(),
        (mem_avail_mib / mean).floor()
    ));
    notes.push(format!(
        "idle capsules: PSS mean {mean:.1} MiB = guest RAM (memory file mapping) {ram:.1} MiB + QEMU \
         itself ({}) {:.1} MiB; RSS mean {:.1} MiB; {}/{} answered \
         /health after idling; {} QEMU processes while they ran, {} left after stopping and \
         deleting them",
        if spec.accel == "tcg" {
            "heap, TCG translated-code buffer, libraries"
        } else {
            "heap, libraries"
        },
        mean - ram,
        d.rss_kib.iter().sum::<u64>() as f64 / n / 1024.0,
        d.healthy,
        args.capsules,
        d.running,
        d.left_after_stop
    ));
    extra.insert(
        "pss".into(),
        json!({
            "per_capsule_kib": d.pss_kib,
            "guest_ram_kib": d.ram_pss_kib,
            "alone_kib": d.alone_pss_kib,
            "rss_kib": d.rss_kib,
            "mem_total_kib": d.mem_total_kib,
            "mem_available_kib": d.mem_available_kib,
            "fit_mem_total": (mem_total_mib / mean).floor(),
            "fit_mem_available": (mem_avail_mib / mean).floor(),
        }),
    );

    Ok(Outcome {
        spec,
        rows,
        notes,
        extra,
    })
}

fn row(id: &'static str, label: &str, unit: &'static str, wrenn: f64, baseline: f64) -> Row {
    let mut r = Row::new(id, label, unit, wrenn, baseline);
    r.subject = "wrenn";
    r
}

fn secs_list(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|s| format!("{s:.2}")).collect();
    format!("[{}] s", parts.join(", "))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How the bench boots a template for its snapshot: QEMU's user network with envd forwarded
/// to a free loopback port (no network slot needed).
fn template_boot(accel: Accel, vcpus: u32, memory_mib: u32) -> Result<TemplateBoot> {
    let envd = free_addr()?;
    Ok(TemplateBoot {
        vcpus,
        memory_mib,
        accel,
        qemu: default_qemu(),
        net: Net::UserForward { host: envd },
        envd,
        ready_timeout: READY,
    })
}

/// A loopback address nobody listens on right now.
fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(l.local_addr()?)
}

/// Copies the named files from `from` to `to` (sparse), off the async threads.
async fn copy_files(from: &Path, to: &Path, names: &'static [&'static str]) -> Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || -> Result<()> {
        for f in names {
            cp_sparse(&from.join(f), &to.join(f))?;
        }
        Ok(())
    })
    .await
    .context("the copying thread")?
}

/// A new, empty directory `work/name`.
fn fresh_dir(work: &Path, name: &str) -> Result<PathBuf> {
    let dir = work.join(name);
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn qemu_version() -> Result<String> {
    let out = Command::new(default_qemu())
        .arg("--version")
        .output()
        .context("running qemu-system-x86_64 --version (is QEMU installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("QEMU (unknown version)")
        .trim()
        .replace("QEMU emulator version", "QEMU"))
}

/// Runs a helper tool to completion; its stderr becomes the error.
fn run_tool(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn cp_sparse(from: &Path, to: &Path) -> Result<()> {
    run_tool(Command::new("cp").arg("--sparse=always").arg(from).arg(to))
}

/// The pids of QEMU processes whose command line names `dir`.
fn qemu_under(dir: &Path) -> Vec<u32> {
    wrenn_vmm::qemu::processes_under(dir)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// The pids of this process's QEMU children, running or not yet reaped.
fn qemu_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == me && comm.starts_with("qemu-system")).then_some(pid)
        })
        .collect()
}

/// Waits (a little) for QEMUs that were just killed to disappear; the pids still there.
fn wait_no_qemu_under(dir: &Path, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = qemu_under(dir);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One `GET /health` like `wrenn-vmm` sends it (1 s for the whole attempt); true on a 204.
fn health_204(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, HEALTH_ATTEMPT)?;
        s.set_read_timeout(Some(HEALTH_ATTEMPT))?;
        s.set_write_timeout(Some(HEALTH_ATTEMPT))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: envd\r\nConnection: close\r\n\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"HTTP/1.1 204"))
    };
    attempt().unwrap_or(false)
}

fn images_log_real_lines(log: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(log).ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("real"))
            .map(str::to_owned)
            .collect(),
    )
}

/// `MemTotal` and `MemAvailable` from /proc/meminfo, in KiB.
fn meminfo() -> Result<(u64, u64)> {
    let text = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} line in /proc/meminfo"))
    };
    Ok((field("MemTotal:")?, field("MemAvailable:")?))
}

/// (`Rss`, `Pss`) of a process from /proc/PID/smaps_rollup, in KiB.
fn rss_pss_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} line in {path}"))
    };
    Ok((field("Rss:")?, field("Pss:")?))
}

/// The summed `Pss` of a process's mappings of the file `file`, from /proc/PID/smaps, in KiB.
fn mapping_pss_kib(pid: u32, file: &Path) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let want = file.to_string_lossy();
    let mut inside = false;
    let mut kib = 0;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: "start-end perms offset dev inode [path]".
            inside = line.split_whitespace().nth(5) == Some(want.as_ref());
        } else if inside {
            if let Some(v) = line.strip_prefix("Pss:") {
                kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    Ok(kib)
}

// ---- capsules through wrenn-vmm ----

/// A capsule made through `wrenn-vmm`, running, with envd ready. Dropping it kills its QEMU
/// (`QemuVm`'s own drop); its directory goes with the scratch dir.
struct Capsule {
    vm: QemuVm,
    envd: SocketAddr,
    dir: PathBuf,
}

/// How long a create took: the files step (memory copy and overlay) and all of it.
struct Phases {
    files: Duration,
    total: Duration,
}

impl Capsule {
    async fn create(snap: &Snapshot, dir: PathBuf) -> Result<(Capsule, Phases)> {
        let envd = free_addr()?;
        let t = Instant::now();
        let config =
            snapshot::prepare_capsule(snap, &dir, Net::UserForward { host: envd }, default_qemu())
                .context("preparing the capsule")?;
        let files = t.elapsed();
        let mut vm = QemuVm::new(config)?;
        vm.restore(&snap.state()).await.context("restoring")?;
        vm.resume().await.context("resuming")?;
        vm.wait_ready(envd, READY)
            .await
            .context("waiting for envd")?;
        let total = t.elapsed();
        Ok((Capsule { vm, envd, dir }, Phases { files, total }))
    }

    /// Stops the VM and deletes its directory.
    async fn destroy(mut self) -> Result<()> {
        self.vm.stop().await?;
        fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }

    fn rss_pss_kib(&self) -> Result<(u64, u64)> {
        let pid = self.vm.pid().context("the capsule has no QEMU")?;
        rss_pss_kib(pid)
    }

    /// The PSS of the guest RAM mapping (the capsule's memory file), in KiB.
    fn guest_ram_pss_kib(&self) -> Result<u64> {
        let pid = self.vm.pid().context("the capsule has no QEMU")?;
        mapping_pss_kib(pid, &self.vm.config().memory_path())
    }
}

// ---- 1. create ----

#[derive(Default)]
struct Creates {
    wrenn_total: Vec<f64>,
    wrenn_files: Vec<f64>,
    raw_total: Vec<f64>,
    raw_files: Vec<f64>,
}

impl Creates {
    fn wrenn_rest(&self) -> Vec<f64> {
        self.wrenn_total
            .iter()
            .zip(&self.wrenn_files)
            .map(|(t, f)| t - f)
            .collect()
    }
    fn raw_rest(&self) -> Vec<f64> {
        self.raw_total
            .iter()
            .zip(&self.raw_files)
            .map(|(t, f)| t - f)
            .collect()
    }
}

async fn creates(
    snap: &Snapshot,
    spec: &SnapshotSpec,
    work: &Path,
    runs: usize,
) -> Result<Creates> {
    let mut out = Creates::default();
    for i in 0..=runs {
        let warm_up = i == 0;
        // Alternate which side goes first, so that neither always follows the other.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for wrenn in order {
            if wrenn {
                let dir = fresh_dir(work, &format!("create-wrenn-{i:02}"))?;
                let (capsule, t) = Capsule::create(snap, dir)
                    .await
                    .with_context(|| format!("wrenn create #{i}"))?;
                capsule.destroy().await?;
                if !warm_up {
                    out.wrenn_total.push(ms(t.total));
                    out.wrenn_files.push(ms(t.files));
                }
            } else {
                let dir = fresh_dir(work, &format!("create-raw-{i:02}"))?;
                let (snap, spec) = (snap.clone(), spec.clone());
                let t = tokio::task::spawn_blocking(move || raw_restore(&snap, &spec, &dir))
                    .await
                    .context("the raw restore thread")?
                    .with_context(|| format!("raw restore #{i}"))?;
                if !warm_up {
                    out.raw_total.push(ms(t.total));
                    out.raw_files.push(ms(t.files));
                }
            }
        }
    }
    Ok(out)
}

/// A QEMU this bench spawned itself: killed and reaped when dropped.
struct RawQemu(Child);

impl Drop for RawQemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// QEMU's command line for a restore, in the shape of `wrenn-vmm`'s `QemuVm::args` (user
/// network with envd forwarded to `envd`, `-incoming defer`), minus `-sandbox`.
fn raw_args(snap: &Snapshot, spec: &SnapshotSpec, dir: &Path, envd: SocketAddr) -> Vec<String> {
    let mem = format!("{}M", spec.memory_mib);
    let mut machine = String::from("microvm,memory-backend=mem0");
    let mut kernel_args = format!(
        "console=ttyS0 quiet panic=-1 init_on_free=1 wrenn.ip={GUEST_IP}/{GUEST_PREFIX},{GUEST_GATEWAY}"
    );
    let mut a: Vec<String> = Vec::new();
    if spec.accel == "kvm" {
        a.extend(["-accel", "kvm", "-cpu", "host"].map(String::from));
    } else {
        machine.push_str(",pit=on,pic=on,rtc=on");
        kernel_args.push_str(&format!(" tsc_early_khz={}", wrenn_vmm::qemu::tsc_khz()));
        a.extend(["-accel", "tcg", "-cpu", "max"].map(String::from));
    }
    a.extend([
        "-M".into(),
        machine,
        "-m".into(),
        mem.clone(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-object".into(),
        format!(
            "memory-backend-file,id=mem0,size={mem},mem-path={},share=on",
            dir.join("memory").display()
        ),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-chardev".into(),
        format!(
            "file,id=con0,path={},append=on",
            dir.join("console.log").display()
        ),
        "-serial".into(),
        "chardev:con0".into(),
        "-kernel".into(),
        snap.template_dir.join("vmlinuz").display().to_string(),
        "-initrd".into(),
        snap.template_dir.join("initrd.img").display().to_string(),
        "-append".into(),
        kernel_args,
        "-drive".into(),
        format!(
            "id=root,file={},format=qcow2,if=none,cache=writeback,discard=unmap",
            dir.join("disk.qcow2").display()
        ),
        "-device".into(),
        "virtio-blk-device,drive=root".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        "-netdev".into(),
        format!(
            "user,id=n0,net=169.254.0.0/24,host={GUEST_GATEWAY},dhcpstart=169.254.0.100,restrict=on,hostfwd=tcp:{}:{}-{GUEST_IP}:{ENVD_PORT}",
            envd.ip(),
            envd.port()
        ),
        "-device".into(),
        format!("virtio-net-device,netdev=n0,mac={GUEST_MAC}"),
        "-incoming".into(),
        "defer".into(),
    ]);
    a
}

/// Raw QMP: JSON lines over a Unix socket, blocking.
struct RawQmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl RawQmp {
    fn connect(path: &Path, qemu: &mut RawQemu, log: &Path) -> Result<RawQmp> {
        let deadline = Instant::now() + QMP_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if let Some(status) = qemu.0.try_wait()? {
                        bail!("QEMU exited ({status}) before QMP answered:\n{}", tail(log));
                    }
                    if Instant::now() > deadline {
                        return Err(e).with_context(|| format!("connecting to {}", path.display()));
                    }
                    thread::sleep(QMP_CONNECT_POLL);
                }
            }
        };
        stream.set_read_timeout(Some(QMP_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut qmp = RawQmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read()?;
        ensure!(
            greeting.get("QMP").is_some(),
            "unexpected QMP greeting {greeting}"
        );
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).context("reading QMP")?;
            ensure!(n > 0, "QMP connection closed");
            if !line.trim().is_empty() {
                return serde_json::from_str(&line)
                    .with_context(|| format!("malformed QMP line {line:?}"));
            }
        }
    }

    /// Sends one command; skips events until its answer.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .context("writing QMP")?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command}: {}", e["desc"]);
            }
        }
    }
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(2048);
    text.get(start..).unwrap_or(&text).to_owned()
}

/// The baseline create: a raw QEMU restore of the snapshot with no Wrenn code, until envd
/// answers; then QEMU is killed and `dir` deleted.
fn raw_restore(snap: &Snapshot, spec: &SnapshotSpec, dir: &Path) -> Result<Phases> {
    let envd = free_addr()?;
    let log_path = dir.join("qemu.log");
    let t = Instant::now();
    cp_sparse(&snap.memory(), &dir.join("memory"))?;
    run_tool(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(snap.disk())
            .arg(dir.join("disk.qcow2")),
    )?;
    let files = t.elapsed();
    let log = fs::File::create(&log_path)?;
    let child = Command::new(default_qemu())
        .args(raw_args(snap, spec, dir, envd))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut qemu = RawQemu(child);
    let mut qmp = RawQmp::connect(&dir.join("qmp.sock"), &mut qemu, &log_path)?;
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})),
    )?;
    qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("exec:cat {}", snap.state().display()) })),
    )?;
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let v = qmp.execute("query-migrate", None)?;
        match v["status"].as_str().unwrap_or("") {
            "completed" => break,
            "failed" | "cancelled" => bail!(
                "loading the state failed: {}\n{}",
                v["error-desc"].as_str().unwrap_or("no reason given"),
                tail(&log_path)
            ),
            _ => {}
        }
        ensure!(
            Instant::now() < deadline,
            "the state did not load within {MIGRATION_TIMEOUT:?}"
        );
        thread::sleep(MIGRATION_POLL);
    }
    qmp.execute("cont", None)?;
    let deadline = Instant::now() + READY;
    while !health_204(envd) {
        if let Some(status) = qemu.0.try_wait()? {
            bail!(
                "QEMU exited ({status}) before envd answered:\n{}",
                tail(&log_path)
            );
        }
        ensure!(
            Instant::now() < deadline,
            "envd did not answer within {READY:?}"
        );
        thread::sleep(HEALTH_POLL);
    }
    let total = t.elapsed();
    drop(qmp);
    drop(qemu);
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(Phases { files, total })
}

// ---- 2. pause / resume ----

struct PauseResume {
    pause: Vec<f64>,
    stop: Vec<f64>,
    save: Vec<f64>,
    resume: Vec<f64>,
    state_bytes: u64,
}

async fn pause_resume(snap: &Snapshot, work: &Path, cycles: usize) -> Result<PauseResume> {
    let (mut c, _) = Capsule::create(snap, fresh_dir(work, "pause-resume")?)
        .await
        .context("creating the pause/resume capsule")?;
    let state = c.dir.join("state");
    let mut out = PauseResume {
        pause: Vec::new(),
        stop: Vec::new(),
        save: Vec::new(),
        resume: Vec::new(),
        state_bytes: 0,
    };
    for i in 0..=cycles {
        // Let the guest run a moment between cycles.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        c.vm.pause().await.with_context(|| format!("pause #{i}"))?;
        let stopped = t.elapsed();
        c.vm.save(&state)
            .await
            .with_context(|| format!("save #{i}"))?;
        let paused = t.elapsed();
        ensure!(c.vm.pid().is_none(), "QEMU still runs after save #{i}");
        let t = Instant::now();
        c.vm.restore(&state)
            .await
            .with_context(|| format!("restore #{i}"))?;
        c.vm.resume()
            .await
            .with_context(|| format!("resume #{i}"))?;
        c.vm.wait_ready(c.envd, READY)
            .await
            .with_context(|| format!("envd after resume #{i}"))?;
        let resumed = t.elapsed();
        if i > 0 {
            out.pause.push(ms(paused));
            out.stop.push(ms(stopped));
            out.save.push(ms(paused - stopped));
            out.resume.push(ms(resumed));
        }
    }
    out.state_bytes = fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
    c.destroy().await?;
    Ok(out)
}

// ---- 3. template build ----

struct TemplateBuilds {
    cold_boot: Vec<f64>,
    build: Vec<f64>,
    memory_allocated: u64,
}

async fn template_builds(
    template_dir: &Path,
    work: &Path,
    accel: Accel,
    spec: &SnapshotSpec,
    runs: usize,
) -> Result<TemplateBuilds> {
    let copy = fresh_dir(work, "template-copy")?;
    copy_files(
        template_dir,
        &copy,
        &["vmlinuz", "initrd.img", "rootfs.img"],
    )
    .await?;
    let made = Snapshot {
        template_dir: copy.clone(),
    };
    let mut out = TemplateBuilds {
        cold_boot: Vec::new(),
        build: Vec::new(),
        memory_allocated: 0,
    };
    for i in 0..runs {
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for wrenn in order {
            if wrenn {
                // Wrenn: the whole template snapshot, on the copy (never the real template).
                let _ = fs::remove_dir_all(made.dir());
                let boot = template_boot(accel, spec.vcpus, spec.memory_mib)?;
                let t = Instant::now();
                snapshot::make_template_snapshot(&copy, &boot)
                    .await
                    .with_context(|| format!("make_template_snapshot on the copy, #{i}"))?;
                out.build.push(t.elapsed().as_secs_f64());
                ensure!(
                    made.spec().is_some(),
                    "the copy's snapshot is incomplete after make_template_snapshot"
                );
                out.memory_allocated = fs::metadata(made.memory())
                    .map(|m| m.blocks() * 512)
                    .unwrap_or(0);
            } else {
                let t = cold_boot(&copy, work, accel, spec, i).await?;
                out.cold_boot.push(t.as_secs_f64());
            }
        }
    }
    fs::remove_dir_all(&copy)?;
    Ok(out)
}

/// Baseline: a plain cold boot of the template copy (on a fresh copy of its disk, not timed)
/// until envd answers; then the VM is stopped and its directory deleted.
async fn cold_boot(
    copy: &Path,
    work: &Path,
    accel: Accel,
    spec: &SnapshotSpec,
    i: usize,
) -> Result<Duration> {
    let dir = fresh_dir(work, &format!("cold-boot-{i:02}"))?;
    {
        let (from, to) = (copy.join("rootfs.img"), dir.join("disk.img"));
        tokio::task::spawn_blocking(move || cp_sparse(&from, &to))
            .await
            .context("the copying thread")??;
    }
    let addr = free_addr()?;
    let mut vm = QemuVm::new(VmConfig {
        dir: dir.clone(),
        kernel: copy.join("vmlinuz"),
        initrd: copy.join("initrd.img"),
        disk: dir.join("disk.img"),
        disk_format: DiskFormat::Raw,
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        net: Net::UserForward { host: addr },
        accel,
        qemu: default_qemu(),
        cgroup: None,
    })?;
    let t = Instant::now();
    vm.boot().await.with_context(|| format!("cold boot #{i}"))?;
    vm.wait_ready(addr, READY)
        .await
        .with_context(|| format!("envd after cold boot #{i}"))?;
    let elapsed = t.elapsed();
    vm.stop().await?;
    drop(vm);
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(elapsed)
}

// ---- 4. PSS of idle capsules ----

struct Density {
    alone_pss_kib: u64,
    pss_kib: Vec<u64>,
    /// The part of `pss_kib` that is the guest RAM mapping (the memory file).
    ram_pss_kib: Vec<u64>,
    rss_kib: Vec<u64>,
    mem_total_kib: u64,
    mem_available_kib: u64,
    healthy: usize,
    running: usize,
    left_after_stop: usize,
}

async fn density(snap: &Snapshot, work: &Path, n: usize, idle: Duration) -> Result<Density> {
    let (mem_total_kib, mem_available_kib) = meminfo()?;
    let group = fresh_dir(work, "idle")?;
    let mut capsules = Vec::with_capacity(n);
    let (first, _) = Capsule::create(snap, fresh_dir(&group, "c00")?)
        .await
        .context("idle capsule #0")?;
    tokio::time::sleep(idle).await;
    let (_, alone_pss_kib) = first.rss_pss_kib()?;
    capsules.push(first);
    for i in 1..n {
        let (c, _) = Capsule::create(snap, fresh_dir(&group, &format!("c{i:02}"))?)
            .await
            .with_context(|| format!("idle capsule #{i}"))?;
        capsules.push(c);
    }
    tokio::time::sleep(idle).await;
    let mut pss_kib = Vec::with_capacity(n);
    let mut rss_kib = Vec::with_capacity(n);
    let mut ram_pss_kib = Vec::with_capacity(n);
    for c in &capsules {
        let (rss, pss) = c.rss_pss_kib()?;
        rss_kib.push(rss);
        pss_kib.push(pss);
        ram_pss_kib.push(c.guest_ram_pss_kib()?);
    }
    let running = qemu_under(&group).len();
    let addrs: Vec<SocketAddr> = capsules.iter().map(|c| c.envd).collect();
    let healthy =
        tokio::task::spawn_blocking(move || addrs.into_iter().filter(|a| health_204(*a)).count())
            .await
            .context("the health check thread")?;
    for c in capsules {
        c.destroy().await?;
    }
    let left_after_stop = wait_no_qemu_under(&group, Duration::from_secs(3)).len();
    fs::remove_dir(&group).with_context(|| format!("removing {}", group.display()))?;
    Ok(Density {
        alone_pss_kib,
        pss_kib,
        ram_pss_kib,
        rss_kib,
        mem_total_kib,
        mem_available_kib,
        healthy,
        running,
        left_after_stop,
    })
}
