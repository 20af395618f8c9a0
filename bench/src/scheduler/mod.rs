//! `wrenn-bench scheduler`: the control plane's scheduler (`wrenn_server::scheduler`) in a
//! simulation, in process: 1,000 hosts of mixed sizes and tags, 100,000 capsules of mixed
//! shapes and templates placed in bursts (creates arriving at once), with departures and
//! pauses, against two baselines in the same run on the same arrivals:
//!
//! - `least loaded`: upstream's scheduler, a full scan for the most free host among those
//!   that admit; a burst's decisions see only the state before it (no reservations);
//! - `random eligible`: any host of the right scope, online, tagged and not draining; no
//!   admission.
//!
//! Figures: decision latency p50/p99 (µs), imbalance (max / mean fill of the open regular
//! hosts, at half the arrivals and at the end), overfilling placements (must be 0 for ours),
//! refused requests, template-locality hits. The workload is in [`workload`].

mod sim;
mod workload;

use std::{fs, path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Map, Value};

use crate::report::percentile;
use sim::{Outcome, Strategy};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hosts in the simulated cluster [default: 1000; quick 100].
    #[arg(long)]
    hosts: Option<usize>,
    /// Capsules placed one by one [default: 100000; quick 10000].
    #[arg(long)]
    capsules: Option<usize>,
    /// Creates arriving at once (decided before any of them is running).
    #[arg(long, default_value_t = 20)]
    burst: usize,
    /// The seed of the cluster, the arrivals and the strategies' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A smoke run.
    #[arg(long)]
    quick: bool,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let n_hosts = args.hosts.unwrap_or(if args.quick { 100 } else { 1000 });
    let n_capsules = args
        .capsules
        .unwrap_or(if args.quick { 10_000 } else { 100_000 });
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let mut hosts = workload::hosts(n_hosts, &mut rng);
    workload::seed_snapshots(&mut hosts, &mut rng);
    let arrivals = workload::arrivals(n_capsules, &mut rng);

    let outcomes: Vec<(Strategy, Outcome)> = Strategy::ALL
        .into_iter()
        .map(|s| (s, sim::run(s, &hosts, &arrivals, args.burst, args.seed)))
        .collect();

    println!(
        "wrenn-bench scheduler: {n_hosts} hosts, {n_capsules} capsules in bursts of {}, seed {} (in process)",
        args.burst, args.seed
    );
    println!();
    let mut header = format!("{:<34}", "");
    for (s, _) in &outcomes {
        header.push_str(&format!("{:>18}", s.name()));
    }
    println!("{header}");
    let figures = figures(&outcomes);
    for (label, _, values) in &figures {
        let mut line = format!("{label:<34}");
        for v in values {
            line.push_str(&format!("{v:>18}"));
        }
        println!("{line}");
    }
    println!();
    println!(
        "fill = the largest used fraction of a host's vCPUs (x4 overcommit), memory and disk after"
    );
    println!(
        "       its reserves; imbalance = max / mean fill of the open regular hosts (1.00 = even);"
    );
    println!("overfilling = placements that left a host with more than it may hand out (ours must be 0);");
    println!("locality = placements onto a host already holding the template and shape;");
    println!("baselines: least loaded = upstream's full scan for the most free host that admits, blind to");
    println!("           the other creates of its burst; random = any eligible host, no admission");
    println!("finished in {:.1} s", started.elapsed().as_secs_f64());

    if let Some(path) = &args.json {
        let mut doc = Map::new();
        doc.insert("bench".into(), json!("scheduler"));
        doc.insert("hosts".into(), json!(n_hosts));
        doc.insert("capsules".into(), json!(n_capsules));
        doc.insert("burst".into(), json!(args.burst));
        doc.insert("seed".into(), json!(args.seed));
        let mut results = Map::new();
        for (i, (s, _)) in outcomes.iter().enumerate() {
            let mut one = Map::new();
            for (_, id, values) in &figures {
                one.insert((*id).into(), json!(values[i].trim().parse::<f64>().ok()));
            }
            results.insert(s.name().into(), Value::Object(one));
        }
        doc.insert("results".into(), Value::Object(results));
        doc.insert("elapsed_s".into(), json!(started.elapsed().as_secs_f64()));
        let mut text = serde_json::to_string_pretty(&Value::Object(doc))?;
        text.push('\n');
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// (label, JSON key, one printed value per strategy)
fn figures(outcomes: &[(Strategy, Outcome)]) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let each = |f: &dyn Fn(&Outcome) -> String| -> Vec<String> {
        outcomes.iter().map(|(_, o)| f(o)).collect()
    };
    let pct = |part: usize, whole: usize| 100.0 * part as f64 / whole.max(1) as f64;
    vec![
        (
            "decision p50 (µs)",
            "decision_p50_us",
            each(&|o| format!("{:.1}", percentile(&o.latencies_us, 50.0))),
        ),
        (
            "decision p99 (µs)",
            "decision_p99_us",
            each(&|o| format!("{:.1}", percentile(&o.latencies_us, 99.0))),
        ),
        (
            "imbalance at 50 % (max/mean)",
            "imbalance_half",
            each(&|o| format!("{:.2}", o.imbalance_half)),
        ),
        (
            "imbalance at the end (max/mean)",
            "imbalance_end",
            each(&|o| format!("{:.2}", o.imbalance_end)),
        ),
        (
            "mean fill at the end (%)",
            "mean_fill_end_pct",
            each(&|o| format!("{:.1}", 100.0 * o.mean_fill_end)),
        ),
        ("placed", "placed", each(&|o| o.placed.to_string())),
        (
            "overfilling placements",
            "overfilling",
            each(&|o| o.overfilling.to_string()),
        ),
        (
            "refused (no host)",
            "refused",
            each(&|o| o.refused.to_string()),
        ),
        (
            "template locality hits (%)",
            "locality_pct",
            each(&|o| format!("{:.1}", pct(o.local, o.placed))),
        ),
    ]
}
