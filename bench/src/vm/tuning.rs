//! `wrenn-bench vm-tuning`: what the VMM's density settings ([`wrenn_vmm::Tuning`]) buy and
//! what they cost, each setting against the first one (the baseline) in the same run.
//!
//! For each setting `TB[:thp]` (TCG translation cache in MiB; `thp`: transparent huge pages
//! allowed): N idle capsules of one template snapshot together, their mean PSS split into guest
//! RAM, TCG's code buffer and the rest of QEMU; then one capsule alone runs a code-heavy
//! command through envd (program starts, a checksum over files): its first run, with
//! everything translated anew, and the median of the runs after it.
//!
//! Everything runs in one scratch directory under `--tmp-dir`, removed at the end.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use wrenn_agent::envd_client::{EnvdClient, ExecRequest};
use wrenn_vmm::{
    accel,
    snapshot::{self, Snapshot},
    Tuning,
};

use super::capsule::{Capsule, Layout};
use super::density::density;
use super::host::{copy_files, fresh_dir, template_boot};
use crate::{
    procs::WorkDir,
    report::{percentile, Row},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    #[arg(long, default_value = "minimal")]
    template: String,
    /// Settings `TB_MIB[:thp]` (`thp`: QEMU may use transparent huge pages); the first is the
    /// baseline.
    #[arg(long, value_delimiter = ',', default_value = "32:thp,32,16,8")]
    settings: Vec<String>,
    /// Idle capsules together per setting.
    #[arg(long, default_value_t = 20)]
    capsules: usize,
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Timed runs of the command after its first one.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,
}

/// Code-heavy guest work: many short-lived programs (kernel exec paths, the dynamic loader,
/// each program's code) and a checksum over a few MiB of files.
const WORK: &str = "for i in $(seq 1 30); do ls / >/dev/null; date >/dev/null; cat /proc/meminfo >/dev/null; done; \
                    find /usr/bin -type f | head -200 | xargs cat | md5sum >/dev/null; \
                    find / -xdev 2>/dev/null | sort | wc -l >/dev/null";

struct Measured {
    tuning: Tuning,
    pss: f64,
    ram: f64,
    tcg: f64,
    first_s: f64,
    warm_s: f64,
}

fn parse(s: &str) -> Result<Tuning> {
    let (tb, thp) = match s.split_once(':') {
        Some((tb, "thp")) => (tb, true),
        Some(_) => anyhow::bail!("setting {s:?} is not TB_MIB[:thp]"),
        None => (s, false),
    };
    let t = Tuning {
        tcg_tb_mib: tb.parse().context("TB_MIB")?,
        huge_pages: thp,
    };
    t.validate()?;
    Ok(t)
}

pub fn run(args: Args) -> Result<()> {
    let settings = args
        .settings
        .iter()
        .map(|s| parse(s))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        !settings.is_empty() && args.capsules > 0,
        "nothing to measure"
    );
    let template_dir = args.images.join(&args.template);
    ensure!(
        template_dir.join("rootfs.img").is_file(),
        "the {} template image is missing at {}",
        args.template,
        template_dir.display()
    );
    let work = WorkDir::create(&args.tmp_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = runtime.block_on(async {
        tokio::select! {
            r = bench(&args, &settings, &template_dir, work.path()) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    drop(runtime);
    drop(work);
    let out = out?;
    let base = &out[0];
    let (load1, _) = load();
    println!(
        "wrenn-bench vm-tuning: {} idle capsules per setting, {} s idle; load average {load1:.2}",
        args.capsules, args.idle_secs
    );
    for m in &out {
        let name = format!(
            "tb-size {} MiB, THP {}",
            m.tuning.tcg_tb_mib,
            if m.tuning.huge_pages { "on" } else { "off" }
        );
        let row = |id, label: &str, unit, v: f64, b: f64, samples| {
            let mut r = Row::new(id, &format!("{label}, {name}"), unit, v, b);
            r.subject = "wrenn";
            r.samples = samples;
            r
        };
        let mut r = row(
            "pss_idle",
            "PSS idle",
            "MiB",
            m.pss,
            base.pss,
            args.capsules,
        );
        r.note = format!(
            "guest RAM {:.1} + TCG buffer {:.1} + rest of QEMU {:.1} MiB",
            m.ram,
            m.tcg,
            m.pss - m.ram - m.tcg
        );
        println!("{}", r.line());
        let r = row(
            "exec_first",
            "command, first run",
            "s",
            m.first_s,
            base.first_s,
            1,
        );
        println!("{}", r.line());
        if args.reps > 0 {
            let r = row(
                "exec_warm",
                "command, later runs p50",
                "s",
                m.warm_s,
                base.warm_s,
                args.reps,
            );
            println!("{}", r.line());
        }
    }
    Ok(())
}

fn load() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut f = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0))
}

async fn bench(
    args: &Args,
    settings: &[Tuning],
    template_dir: &Path,
    work: &Path,
) -> Result<Vec<Measured>> {
    let (accel, _) = accel::detect();
    let snap = Snapshot {
        template_dir: work.join("template"),
    };
    std::fs::create_dir(&snap.template_dir)?;
    copy_files(
        template_dir,
        &snap.template_dir,
        &["vmlinuz", "initrd.img", "rootfs.img"],
    )
    .await?;
    snapshot::make_template_snapshot(&snap.template_dir, &template_boot(accel, 1, 256)?)
        .await
        .context("making the template snapshot")?;
    let mut out = Vec::new();
    for (i, t) in settings.iter().enumerate() {
        eprintln!("[{}/{}] {t:?}", i + 1, settings.len());
        let d = density(
            &snap,
            work,
            args.capsules,
            Duration::from_secs(args.idle_secs),
            Layout::Template,
            *t,
            false,
        )
        .await?;
        let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;
        let dir = fresh_dir(work, &format!("speed{i}"))?;
        let (c, _) = Capsule::create_in(&snap, dir, Layout::Template, *t).await?;
        let timed = speed(c.envd, args.reps).await;
        c.destroy().await?;
        let (first_s, warm) = timed?;
        out.push(Measured {
            tuning: *t,
            pss: mean(&d.pss_kib),
            ram: mean(&d.ram_pss_kib),
            tcg: mean(&d.tcg_pss_kib),
            first_s,
            warm_s: percentile(&warm, 50.0),
        });
    }
    Ok(out)
}

/// The first run of [`WORK`] and `reps` runs after it, in seconds.
async fn speed(envd: std::net::SocketAddr, reps: usize) -> Result<(f64, Vec<f64>)> {
    let client = EnvdClient::new(envd, None);
    let req = ExecRequest {
        cmd: "/bin/sh".into(),
        args: vec!["-c".into(), WORK.into()],
        timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    let mut times = Vec::new();
    for _ in 0..=reps {
        let t = Instant::now();
        let o = client.exec(&req).await.context("the timed command")?;
        ensure!(
            o.exit_code == 0,
            "the timed command failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        times.push(t.elapsed().as_secs_f64());
    }
    let first = times.remove(0);
    Ok((first, times))
}
