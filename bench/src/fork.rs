//! `wrenn-bench fork`: live fork through the host agent's manager (in this process), each
//! figure next to a baseline measured in the same run.
//!
//! 1. Fork of N children (default 10): the whole call, p50 over the runs, against N creates
//!    from the template one after the other (what the same capsules cost made fresh).
//! 2. The source's pause: how long its guest was stopped for the checkpoint, p50, against a
//!    plain pause (stop + save) of the same capsule.
//! 3. Memory: each child's QEMU PSS (all N children alive together, idle) against a fresh
//!    capsule's, made from the template and idle at the same time; absolute figures printed,
//!    split into guest RAM, TCG's code buffer and the rest of QEMU.
//! 4. The floor: N raw QEMU restores of the same fork image at once (files, QEMU start, state
//!    load, `cont`, envd answering; no network slot, no envd re-identity), against the fork.
//!
//! The source holds some state of its own before the fork (a 32 MiB file in its tmpfs), as
//! a capsule that has been working would. The agent owns a data folder under `--tmp-dir` and
//! slots 4386–4399; every capsule is destroyed and the folder removed on the way out.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use wrenn_agent::{
    capsule::CreateSpec,
    envd_client::ExecRequest,
    manager::{AgentConfig, Manager},
};
use wrenn_vmm::{qemu::default_qemu, snapshot::Snapshot, Net, QemuVm, Vmm};

use crate::{
    report::{percentile, Row, Target},
    vm::host::{anon_exec_pss_kib, mapping_pss_kib},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    #[arg(long, default_value = "minimal")]
    template: String,
    /// Children per fork.
    #[arg(long, default_value_t = 10)]
    children: u32,
    /// Forks timed [default: 3; quick 1].
    #[arg(long)]
    runs: Option<usize>,
    #[arg(long)]
    quick: bool,
    /// Parent of the agent's data directory.
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,
}

const SLOTS: std::ops::RangeInclusive<u32> = 4386..=4399;

pub fn run(args: Args) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "the fork bench needs root (network namespaces, nftables, TAP devices)"
    );
    let slots = SLOTS.end() - SLOTS.start() + 1;
    ensure!(
        (1..=32).contains(&args.children) && args.children + 2 <= slots,
        "1 to {} children",
        slots - 2
    );
    // The agent's own logs (each child's steps at `debug`) when `RUST_LOG` asks for them.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let data = tempfile::Builder::new()
        .prefix("wrenn-bench-fork-")
        .tempdir_in(&args.tmp_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mgr = Manager::start(AgentConfig {
            data_dir: data.path().to_path_buf(),
            images_dir: args.images.clone(),
            qemu: wrenn_vmm::qemu::default_qemu(),
            max_capsules: args.children as usize + 2,
            slots: SLOTS,
            shapes: Default::default(),
            dns_upstreams: Vec::new(),
            egress_allow_private: Vec::new(),
            envd: None,
            vmm: Default::default(),
        })
        .await
        .context("starting the agent")?;
        let mgr = std::sync::Arc::new(mgr);
        let result = bench(&mgr, &args, data.path()).await;
        for r in mgr.list() {
            let _ = mgr.destroy(&r.id).await;
        }
        result
    })
}

fn spec(template: &str) -> CreateSpec {
    CreateSpec {
        template: template.into(),
        egress: false,
        ..Default::default()
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        cmd: "/bin/bash".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

/// QEMU's proportional set size, in KiB.
fn pss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no Pss in smaps_rollup")
}

fn pid_of(mgr: &Manager, id: &str) -> Result<u32> {
    mgr.get(id)?.vmm_pid.context("no QEMU pid")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A capsule's QEMU PSS split: (all, guest RAM mapping, TCG code buffer), MiB.
fn pss_split(mgr: &Manager, data: &Path, id: &str) -> Result<(f64, f64, f64)> {
    let pid = pid_of(mgr, id)?;
    let mem = data.join("capsules").join(id).join("memory.base");
    let mib = |k: u64| k as f64 / 1024.0;
    Ok((
        mib(pss_kib(pid)?),
        mib(mapping_pss_kib(pid, &mem)?),
        mib(anon_exec_pss_kib(pid)?),
    ))
}

/// The fork image's files hard-linked into `dest`: they outlive the image.
fn keep_image(image: &Path, dest: &Path) -> Result<Snapshot> {
    std::fs::create_dir_all(dest.join("snapshot"))?;
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::hard_link(image.join(f), dest.join(f))?;
    }
    for f in ["memory", "state", "disk.qcow2", "vm.json"] {
        std::fs::hard_link(
            image.join("snapshot").join(f),
            dest.join("snapshot").join(f),
        )?;
    }
    Ok(Snapshot {
        template_dir: dest.to_path_buf(),
    })
}

/// `n` raw QEMU restores of `snap` at once, each until its envd answers; all stopped after.
async fn raw_restores(snap: &Snapshot, work: &Path, n: u32) -> Result<Duration> {
    // Distinct envd ports for all of them (each QEMU binds its own).
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addrs = held
        .iter()
        .map(|l| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    drop(held);
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, addr) in addrs.into_iter().enumerate() {
        let (snap, dir) = (snap.clone(), work.join(format!("raw{i}")));
        tasks.spawn(async move {
            let (s, d) = (snap.clone(), dir.clone());
            let config = tokio::task::spawn_blocking(move || {
                wrenn_vmm::snapshot::prepare_capsule(
                    &s,
                    &d,
                    Net::UserForward { host: addr },
                    default_qemu(),
                )
            })
            .await??;
            let mut vm = QemuVm::new(config)?;
            let ready = async {
                vm.restore(&snap.state()).await?;
                vm.resume().await?;
                vm.wait_ready(addr, Duration::from_secs(120)).await
            }
            .await;
            Ok::<_, anyhow::Error>((vm, dir, ready))
        });
    }
    let mut made = Vec::new();
    while let Some(r) = tasks.join_next().await {
        made.push(r?);
    }
    let took = t.elapsed();
    let mut failed = None;
    for r in made {
        match r {
            Ok((mut vm, dir, ready)) => {
                let _ = vm.stop().await;
                if let Err(e) = ready {
                    let log = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
                    failed.get_or_insert(anyhow::Error::from(e).context(log));
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e.context("a raw restore of the fork image")),
        None => Ok(took),
    }
}

async fn bench(mgr: &std::sync::Arc<Manager>, args: &Args, data: &Path) -> Result<()> {
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let n = args.children;
    eprintln!(
        "wrenn-bench fork: template {}, {n} children, {runs} runs, slots {SLOTS:?}",
        args.template
    );
    let src = mgr.create(spec(&args.template)).await?;
    mgr.exec(
        &src.id,
        sh("head -c 33554432 /dev/urandom > /tmp/state.bin && sync"),
    )
    .await?;
    // Baselines: creates one after the other (as many as a fork makes, once), and plain
    // pauses of the source.
    let mut fresh = Vec::new();
    let t0 = Instant::now();
    for _ in 0..n {
        fresh.push(mgr.create(spec(&args.template)).await?.id);
    }
    let creates = t0.elapsed();
    for id in fresh.drain(..) {
        mgr.destroy(&id).await?;
    }
    let mut plain_pauses = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        mgr.pause(&src.id).await?;
        plain_pauses.push(ms(t.elapsed()));
        mgr.resume(&src.id).await?;
    }
    let mut forks = Vec::new();
    let mut pauses = Vec::new();
    let mut phases = Vec::new();
    let mut child_pss = Vec::new();
    let mut child_split = (0.0, 0.0);
    let mut fresh_split = (0.0, 0.0, 0.0);
    let mut kept = None;
    for run in 0..runs {
        let t = Instant::now();
        let forked = mgr.fork(&src.id, n).await?;
        forks.push(ms(t.elapsed()));
        pauses.push(ms(forked.source_paused_for));
        phases.push(forked.phases);
        if run == 0 {
            // Every child and one fresh capsule, alive and idle together.
            let fresh = mgr.create(spec(&args.template)).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            for c in &forked.children {
                let (all, ram, tcg) = pss_split(mgr, data, &c.id)?;
                child_pss.push(all);
                child_split.0 += ram / f64::from(n);
                child_split.1 += tcg / f64::from(n);
            }
            fresh_split = pss_split(mgr, data, &fresh.id)?;
            mgr.destroy(&fresh.id).await?;
            if let Some(image) = &forked.children[0].snapshot_dir {
                kept = Some(keep_image(image, &data.join("floor-image"))?);
            }
        }
        for c in forked.children {
            mgr.destroy(&c.id).await?;
        }
    }
    // The floor, with the source running as during the forks.
    let mut floor = Vec::new();
    if let Some(image) = &kept {
        for _ in 0..runs {
            match raw_restores(image, data, n).await {
                Ok(took) => floor.push(ms(took)),
                Err(e) => {
                    eprintln!("the floor could not be measured: {e:#}");
                    break;
                }
            }
        }
    }
    mgr.destroy(&src.id).await?;
    let fork_p50 = percentile(&forks, 50.0);
    let pause_p50 = percentile(&pauses, 50.0);
    let child_mean = child_pss.iter().sum::<f64>() / child_pss.len().max(1) as f64;
    let fresh_mib = fresh_split.0;
    let phase = |f: fn(&wrenn_agent::manager::ForkPhases) -> Duration| {
        percentile(&phases.iter().map(|p| ms(f(p))).collect::<Vec<_>>(), 50.0)
    };
    let mut rows = vec![
        Row::new(
            "fork_p50",
            &format!("fork of {n}, p50"),
            "ms",
            fork_p50,
            ms(creates),
        ),
        Row::new(
            "fork_vs_floor",
            &format!("fork of {n} vs {n} raw restores at once, p50"),
            "ms",
            fork_p50,
            percentile(&floor, 50.0),
        ),
        Row::new(
            "fork_source_pause_p50",
            "source pause, p50",
            "ms",
            pause_p50,
            percentile(&plain_pauses, 50.0),
        ),
        Row::new(
            "fork_child_pss",
            "child PSS (mean)",
            "MiB",
            child_mean,
            fresh_mib,
        ),
    ];
    rows[0].note = format!(
        "baseline: {n} creates one after the other; phases p50: checkpoint {:.0}, image {:.0}, children {:.0} ms",
        phase(|p| p.checkpoint),
        phase(|p| p.image),
        phase(|p| p.children)
    );
    rows[0].target = Some(Target {
        text: "p50 <= 1000 ms".into(),
        met: fork_p50 <= 1000.0,
    });
    rows[1].note =
        "baseline: QEMU restores of the fork image (no slot, no envd re-identity)".into();
    rows[1].samples = floor.len();
    let step = |f: fn(&wrenn_agent::capsule::PauseSteps) -> f64| {
        percentile(
            &phases.iter().map(|p| f(&p.pause)).collect::<Vec<_>>(),
            50.0,
        )
    };
    rows[2].note = format!(
        "baseline: a plain pause (stop + save); steps p50: stop {:.1}, device state {:.1}, \
         own pages {:.1} ({:.1} MiB), disk {:.1} ({:.1} MiB), cont {:.1} ms; files written \
         after cont {:.1} ms",
        step(|p| ms(p.checkpoint.stop)),
        step(|p| ms(p.checkpoint.devices)),
        step(|p| ms(p.checkpoint.memory)),
        step(|p| p.checkpoint.pages as f64 * 4096.0 / 1048576.0),
        step(|p| ms(p.checkpoint.disk)),
        step(|p| p.checkpoint.disk_bytes as f64 / 1048576.0),
        step(|p| ms(p.cont)),
        step(|p| ms(p.checkpoint.write)),
    );
    rows[2].target = Some(Target {
        text: "<= 50 ms".into(),
        met: pause_p50 <= 50.0,
    });
    let ratio = rows[3].ratio();
    rows[3].note = format!(
        "baseline: a fresh capsule; children min {:.1} max {:.1} MiB; child RAM {:.1} TCG {:.1} \
         rest {:.1}; fresh RAM {:.1} TCG {:.1} rest {:.1} MiB",
        percentile(&child_pss, 1.0),
        percentile(&child_pss, 100.0),
        child_split.0,
        child_split.1,
        child_mean - child_split.0 - child_split.1,
        fresh_split.1,
        fresh_split.2,
        fresh_split.0 - fresh_split.1 - fresh_split.2
    );
    rows[3].target = Some(Target {
        text: "<= 0.5x".into(),
        met: ratio <= 0.5,
    });
    for r in &mut rows {
        r.subject = "fork";
        if r.samples == 1 {
            r.samples = runs;
        }
    }
    rows[3].samples = child_pss.len();
    for r in &rows {
        println!("{}", r.line());
    }
    Ok(())
}
