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
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Map, Value};
use wrenn_vmm::{
    accel::{self, Accel},
    snapshot::{self, Snapshot, SnapshotSpec},
};

use crate::{
    procs::WorkDir,
    report::{percentile, Row, Target as Goal},
};

mod capsule;
mod create;
mod density;
pub(crate) mod host;
mod ksm;
mod pause;
mod raw;
mod template;
pub mod tuning;
use self::capsule::Layout;
use self::create::creates;
use self::density::{density, split_note};
use self::host::{
    copy_files, images_log_real_lines, qemu_children, qemu_version, template_boot,
    wait_no_qemu_under,
};
use self::template::template_builds;

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
    /// Also run KSM over the idle capsules for a while (the alternative way to share memory)
    /// and report its effect and CPU cost; the host's KSM `run` setting is put back.
    #[arg(long)]
    ksm: bool,
    /// Seconds the capsules idle before their PSS is read.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Only the create and pause/resume steps ([1] and [2]): no template builds, no PSS.
    #[arg(long)]
    pause_only: bool,
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
const WARM_CREATE_P50: f64 = 0.5;
const WARM_CREATE_P99: f64 = 0.7;
const PSS_TARGET_MIB: f64 = 30.0;
/// Capsules of the own-file layout (the baseline of the PSS rows) idling together.
const OWN_LAYOUT_CAPSULES: usize = 8;

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
    for (id, label, p, target, samples, note) in [
        (
            "create_warm_p50",
            "create p50, warm QEMU",
            50.0,
            WARM_CREATE_P50,
            &create.warm_total,
            "QEMU started ahead, files made ahead; timed: load, cont, envd",
        ),
        (
            "create_warm_p99",
            "create p99, warm QEMU",
            99.0,
            WARM_CREATE_P99,
            &create.warm_total,
            "QEMU started ahead, files made ahead; timed: load, cont, envd",
        ),
        (
            "create_ready_p50",
            "create p50, ready machine",
            50.0,
            WARM_CREATE_P50,
            &create.ready_total,
            "the pool's machines: state loaded and the guest run up to envd ahead; timed: cont, envd",
        ),
        (
            "create_ready_p99",
            "create p99, ready machine",
            99.0,
            WARM_CREATE_P99,
            &create.ready_total,
            "the pool's machines: state loaded and the guest run up to envd ahead; timed: cont, envd",
        ),
    ] {
        let (w, b) = (percentile(samples, p), percentile(&create.raw_total, p));
        let mut r = row(id, label, "ms", w, b);
        r.samples = args.runs;
        r.note = note.into();
        r.target = Some(Goal {
            text: format!("<= {target}x raw restore"),
            met: r.ratio() <= target,
        });
        rows.push(r);
    }
    notes.push(create.warm_note());
    let (wf, bf) = (
        percentile(&create.wrenn_files, 50.0),
        percentile(&create.raw_files, 50.0),
    );
    notes.push(format!(
        "create, files step (memory link + qcow2 overlay; raw: memory copy + overlay) p50: wrenn {wf:.1} ms, raw {bf:.1} ms; \
         rest (QEMU start, state load, cont, envd /health) p50: wrenn {:.1} ms, raw {:.1} ms",
        percentile(&create.wrenn_rest(), 50.0),
        percentile(&create.raw_rest(), 50.0)
    ));
    extra.insert(
        "create_samples_ms".into(),
        json!({"wrenn": create.wrenn_total, "raw": create.raw_total, "warm": create.warm_total,
               "ready": create.ready_total,
               "wrenn_files": create.wrenn_files, "raw_files": create.raw_files}),
    );

    // ---- 2 ----
    eprintln!(
        "[2/4] pause (pause + save) and resume (restore + resume + wait_ready): {} cycles (+1 warm-up)",
        args.cycles
    );
    pause::step(
        &snap,
        work,
        args.cycles,
        raw_p50,
        spec.memory_mib,
        (&mut rows, &mut notes, &mut extra),
    )
    .await?;

    if args.pause_only {
        return Ok(Outcome {
            spec,
            rows,
            notes,
            extra,
        });
    }

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
        Layout::Template,
        Default::default(),
        args.ksm,
    )
    .await?;
    let own_n = args.capsules.min(OWN_LAYOUT_CAPSULES);
    let od = density(
        &snap,
        work,
        own_n,
        Duration::from_secs(args.idle_secs),
        Layout::Own,
        Default::default(),
        false,
    )
    .await?;
    let own_mean = od.pss_kib.iter().sum::<u64>() as f64 / own_n as f64 / 1024.0;
    let n = args.capsules as f64;
    let mean = d.pss_kib.iter().sum::<u64>() as f64 / n / 1024.0;
    let total = d.pss_kib.iter().sum::<u64>() as f64 / 1024.0;
    let alone = d.alone_pss_kib as f64 / 1024.0;
    let mut r = row(
        "pss_idle_capsule",
        "PSS idle capsule",
        "MiB",
        mean,
        own_mean,
    );
    r.samples = args.capsules;
    r.note = format!(
        "mean of {} idle together; baseline = mean of {own_n} idle together with a whole memory \
         copy each (the layout before); one alone: {alone:.1} MiB",
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
        own_mean * n,
    );
    r.samples = args.capsules;
    r.note = format!("baseline = {} x the own-file layout's mean", args.capsules);
    rows.push(r);
    let ram = d.ram_pss_kib.iter().sum::<u64>() as f64 / n / 1024.0;
    notes.push(split_note(&d, &od));
    let (note, json_ksm) = ksm::report(d.ksm.as_ref(), args.capsules, mean);
    notes.push(note);
    if let Some(v) = json_ksm {
        extra.insert("ksm".into(), v);
    }
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
            "tcg_kib": d.tcg_pss_kib,
            "own_layout_kib": od.pss_kib,
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
