//! Churn at capacity: `capacity - 1` workers each create a capsule, run a random series of
//! operations on it (write a file of random bytes, exec `sha256sum` of one, read one back,
//! pause + resume, snapshot → a capsule from the snapshot whose files are checked → template
//! deleted), check every file it was given, destroy it, and start again, until `churn_secs`
//! have passed; the last place of the capacity is for the snapshot capsules. Meanwhile a killer
//! sends SIGKILL to a random VMM of a capsule in use every `kill_every_secs` (on average). A
//! killed capsule must turn `error` and be destroyable; any other failure is an error. At the
//! end the surviving capsules' files are checked, everything is destroyed and the leftovers
//! are counted (`leaks.rs`), while `wrenn up` runs and again after it stopped.
//!
//! The run uses a private copy of the template's folder, so its snapshot templates never
//! touch the shared images.

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{leaks, machine_line, Args, Up, UpConfig};

mod report;
mod shared;
mod workers;
use self::report::ChurnReport;
use self::shared::{Counts, Shared};
use self::workers::{killer, worker};

const KEEP_ERRORS: usize = 20;
/// Files a capsule holds at most (further writes replace one).
const MAX_FILES: usize = 16;
/// How long a killed capsule may take to show `error`.
const SETTLE: Duration = Duration::from_secs(60);

/// A copy of the template's folder (without its shape snapshots) for this run alone.
fn private_images(shared: &Path, template: &str, to: &Path) -> Result<()> {
    let src = shared.join(template);
    let dst = to.join(template);
    std::fs::create_dir_all(&dst)?;
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        if entry.file_name() == "shapes" {
            continue;
        }
        let status = std::process::Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(entry.path())
            .arg(&dst)
            .status()
            .context("cp")?;
        if !status.success() {
            bail!("copying {} failed", entry.path().display());
        }
    }
    Ok(())
}

pub fn run(args: &Args, rt: &tokio::runtime::Runtime, stamp: &str) -> Result<ChurnReport> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let capacity = args.capacity.max(1);
    let dir = args.work_dir.join(format!("wrenn-soak-churn-{stamp}"));
    let log = args.work_dir.join(format!("wrenn-soak-churn-{stamp}.log"));
    let images = args
        .work_dir
        .join(format!("wrenn-soak-churn-{stamp}-images"));
    private_images(&args.images, &args.template, &images)?;
    let mut up = Up::start(
        &UpConfig {
            wrenn: &args.wrenn,
            images: &images,
            template: &args.template,
            slots: &args.slots,
            max_capsules: capacity,
        },
        dir.clone(),
        log.clone(),
    )?;
    eprintln!(
        "soak churn: wrenn up at {} (data {}, log {}), capacity {capacity}, {} s, a kill every \
         ~{} s, seed {seed}",
        up.base,
        dir.display(),
        log.display(),
        args.churn_secs,
        args.kill_every_secs
    );
    let began = Instant::now();
    let sh = Arc::new(Shared {
        client: up.client()?,
        template: args.template.clone(),
        deadline: began + Duration::from_secs(args.churn_secs),
        live: Mutex::new(HashSet::new()),
        killed: Mutex::new(HashSet::new()),
        clone_gate: tokio::sync::Semaphore::new(usize::from(capacity >= 2)),
        counts: Mutex::new(Counts::default()),
        errors: AtomicU64::new(0),
    });
    let workers = capacity.saturating_sub(1).max(1);
    let leaks = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            tasks.spawn(worker(sh.clone(), w, seed));
        }
        if args.kill_every_secs > 0 {
            tasks.spawn(killer(
                sh.clone(),
                dir.clone(),
                Duration::from_secs(args.kill_every_secs),
                seed,
            ));
        }
        let progress = {
            let sh = sh.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let k = sh.counts();
                    eprintln!(
                        "soak churn: {:>4.0} s: {} creates, {} execs, {} writes, {} pauses, {} \
                         snapshots, {} destroys, {} kills, {} errors",
                        began.elapsed().as_secs_f64(),
                        k.creates,
                        k.execs,
                        k.writes,
                        k.pauses,
                        k.snapshots,
                        k.destroys,
                        k.kills,
                        sh.errors.load(Relaxed)
                    );
                }
            })
        };
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                sh.error(format!("a churn task failed: {e}"));
            }
        }
        progress.abort();
        leaks::count(&up, &args.slots).await
    });
    let secs = began.elapsed().as_secs_f64();
    let stopped = up.stop();
    let mut leaks_after_stop = leaks::Leaks::default();
    leaks::host(&dir, &args.slots, &mut leaks_after_stop);
    if !stopped {
        leaks_after_stop
            .notes
            .push("wrenn up did not stop within a minute of SIGINT".into());
    }
    // Template folders the API no longer lists but that stayed on disk.
    let stray_templates = std::fs::read_dir(&images)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_str() != Some(args.template.as_str()))
                .count()
        })
        .unwrap_or(0);
    leaks_after_stop.templates = stray_templates;
    if leaks.clean() && leaks_after_stop.clean() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&images);
    let counts = std::mem::take(&mut *sh.counts());
    Ok(ChurnReport {
        secs,
        churn_secs: args.churn_secs,
        capacity,
        kill_every_secs: args.kill_every_secs,
        seed,
        counts,
        error_count: sh.errors.load(Relaxed),
        leaks,
        leaks_after_stop,
        machine: machine_line(),
        date: super::doc::now_utc(),
    })
}
