//! `wrenn-bench cluster`: the multi-host figures, each against a baseline of the same run.
//!
//! 1. **Create throughput, 3 hosts against 1**: a real `wrenn up` with three registered
//!    `wrenn agent`s on 127.0.0.2–4 ([`procs`]); rounds of N concurrent `POST /v1/capsules`
//!    (`host_tags: ["bench"]`: the scheduler spreads them over the three) against the same N
//!    pinned to one host (`host_tags: ["h0"]`), interleaved, order flipped each round;
//!    creates/s of the best round per side. On one machine the three agents share its cores:
//!    the ratio shows what the control plane and placement add or cost, not the hardware a
//!    real cluster adds.
//! 2. **Template transfer**: `wrenn-bench transfer`'s measurement
//!    ([`crate::agent::host_transfer::transfer_figures`]): a snapshot template exported by one
//!    agent and imported by another over gRPC, against `cp` of the same bytes.
//! 3. **Scheduler**: `wrenn-bench scheduler`'s simulation ([`crate::scheduler::simulate`]),
//!    ours against random eligible placement.

mod procs;

use std::{path::PathBuf, sync::Arc, time::Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::agent::host_transfer::transfer_figures;
use crate::report::Row;
use crate::rest::Rest;
use crate::scheduler::{simulate, Settings};
use procs::{Cluster, MAX_AGENTS, SLOTS};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `wrenn` binary (`wrenn up`, `wrenn agent`) [default: `wrenn` next to this one].
    #[arg(long)]
    wrenn: Option<PathBuf>,
    /// Where `make images` put the templates (with their snapshots).
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    /// The template of the creates and of the transfer.
    #[arg(long, default_value = "minimal")]
    template: String,
    /// Creates at once per round [default: 6; quick 3].
    #[arg(long)]
    creates: Option<usize>,
    /// Rounds per side, interleaved [default: 3; quick 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Template transfers per side [default: 3; quick 1].
    #[arg(long)]
    transfer_runs: Option<usize>,
    /// Hosts of the scheduler simulation [default: 1000; quick 100].
    #[arg(long)]
    sim_hosts: Option<usize>,
    /// Capsules of the scheduler simulation [default: 100000; quick 10000].
    #[arg(long)]
    sim_capsules: Option<usize>,
    /// A smoke run.
    #[arg(long)]
    quick: bool,
}

/// One round: `n` creates at once with `tags`, all destroyed after; (creates/s, capsules per
/// agent when all were made).
async fn round(
    cluster: &Cluster,
    template: &str,
    tags: &[String],
    n: usize,
) -> Result<(f64, Vec<usize>)> {
    let rest = Arc::new(cluster.rest.clone());
    let start = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (rest, start) = (rest.clone(), start.clone());
        let (template, tags) = (template.to_owned(), tags.to_vec());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            rest.create(json!({ "template": template, "host_tags": tags }))
                .await
        }));
    }
    start.wait().await;
    let t = Instant::now();
    let mut ids = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(id) => ids.push(id),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let spread = cluster.capsules_per_agent();
    destroy_all(&rest, &ids).await;
    ensure!(
        failures.is_empty(),
        "{} of {n} creates failed: {:?}",
        failures.len(),
        failures.first()
    );
    Ok((n as f64 / elapsed, spread))
}

async fn destroy_all(rest: &Rest, ids: &[String]) {
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let (rest, id) = (rest.clone(), id.clone());
        set.spawn(async move { rest.destroy(&id).await });
    }
    while let Some(done) = set.join_next().await {
        if let Ok(Err(e)) = done {
            eprintln!("wrenn-bench cluster: destroy: {e}");
        }
    }
}

/// The create-throughput rows: 3 hosts against 1.
async fn throughput(args: &Args, wrenn: &std::path::Path) -> Result<Vec<Row>> {
    let n = args.creates.unwrap_or(if args.quick { 3 } else { 6 });
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
    let cluster = Cluster::start(wrenn, &args.images, &args.template, MAX_AGENTS).await?;
    let all = vec!["bench".to_owned()];
    let one = vec!["h0".to_owned()];
    // A warm-up create on each host: first restores read the snapshot from disk.
    round(&cluster, &args.template, &all, MAX_AGENTS).await?;
    let (mut three, mut single) = (Vec::new(), Vec::new());
    let mut spreads = Vec::new();
    for r in 0..rounds {
        for side in if r % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let (rate, s) = round(&cluster, &args.template, &all, n).await?;
                three.push(rate);
                spreads.push(s);
            } else {
                single.push(round(&cluster, &args.template, &one, n).await?.0);
            }
        }
    }
    drop(cluster);
    let removed = wrenn_agent::netslot::cleanup_orphans(&[], &SLOTS)
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    if removed > 0 {
        eprintln!("wrenn-bench cluster: {removed} leftover slots of {SLOTS:?} removed");
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mut r = Row::new(
        "cluster_creates",
        &format!("{n} creates, 3 hosts vs 1"),
        "/s",
        best(&three),
        best(&single),
    );
    r.subject = "3 hosts";
    r.samples = rounds;
    r.note = format!(
        "creates/s, best of {rounds}; baseline = the same creates on one host; \
         capsules per host in each 3-host round {spreads:?}"
    );
    Ok(vec![r])
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let wrenn = match &args.wrenn {
        Some(w) => w.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder of wrenn-bench")?
            .join("wrenn"),
    };
    ensure!(wrenn.exists(), "no {} (give --wrenn)", wrenn.display());
    let d = Settings::DEFAULT;
    let settings = Settings {
        hosts: args
            .sim_hosts
            .unwrap_or(if args.quick { 100 } else { d.hosts }),
        capsules: args
            .sim_capsules
            .unwrap_or(if args.quick { 10_000 } else { d.capsules }),
        ..d
    };
    let sim = simulate(settings);
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = rt.block_on(throughput(&args, &wrenn))?;
    let runs = args.transfer_runs.unwrap_or(if args.quick { 1 } else { 3 });
    let tmp = PathBuf::from("/var/tmp");
    let transfer = rt.block_on(transfer_figures(&args.images, &args.template, &tmp, runs))?;
    rows.extend(transfer.rows().into_iter().map(|mut r| {
        r.note = format!(
            "{} MB of data, best of {runs}; baseline = cp of the same files",
            transfer.data_bytes / 1_000_000
        );
        r
    }));
    rows.extend(sim.rows());
    println!(
        "wrenn-bench cluster: template {}, slots {SLOTS:?}; scheduler simulation {} hosts, {} capsules",
        args.template, settings.hosts, settings.capsules
    );
    for r in &rows {
        println!("{}", r.line());
    }
    println!("finished in {:.0} s", started.elapsed().as_secs_f64());
    ensure!(
        sim.clean(),
        "the scheduler simulation's checker found violations"
    );
    Ok(())
}
