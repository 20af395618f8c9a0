//! `wrenn-bench scheduler`: the control plane's scheduler (`wrenn_server::scheduler`) in a
//! simulation, in process: 1,000 hosts of mixed sizes and tags (some BYOC teams' own, a few
//! offline or draining, templates present on some), 100,000 capsules of mixed shapes and
//! templates arriving in bursts (creates at once), first churning (departures and pauses)
//! then filling the cluster up (see [`workload`]), against two baselines in the same run on
//! the same arrivals ([`strategy`]): `random eligible` (any host that admits) and `least
//! loaded` (a full scan for the emptiest host that admits).
//!
//! Figures: decision latency p50/p99 (µs), imbalance (max / mean fill of the open regular
//! hosts) when the mean fill reaches 25, 50, 75 and 90 %, template-locality hits, refusals and
//! conflicts (a burst's choices that no longer fitted), and the [`audit`]: placements over a
//! host's usable capacity, outside the request's BYOC scope or tags, or on a closed host, and
//! refusals while a host had room — all must be 0 (the checker is tested against deliberately
//! broken policies). Ratios are ours over each baseline.

mod audit;
mod sim;
mod strategy;
mod workload;

use std::{fs, path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use wrenn_server::scheduler::Policy;

use crate::report::{percentile, Row};
use sim::{Outcome, LEVELS};
use strategy::Strategy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hosts in the simulated cluster [default: 1000; quick 100].
    #[arg(long)]
    hosts: Option<usize>,
    /// Capsule creates [default: 100000; quick 10000].
    #[arg(long)]
    capsules: Option<usize>,
    /// Creates arriving at once (decided against the same loads, then re-checked).
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

/// The settings of one simulation.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub hosts: usize,
    pub capsules: usize,
    pub burst: usize,
    pub seed: u64,
}

impl Settings {
    pub const DEFAULT: Settings = Settings {
        hosts: 1000,
        capsules: 100_000,
        burst: 20,
        seed: 1,
    };
}

/// Every strategy's outcome on the same cluster and arrivals.
pub struct Simulation {
    pub settings: Settings,
    outcomes: Vec<(Strategy, Outcome)>,
    pub elapsed_s: f64,
}

/// Runs the simulation: one cluster and one list of arrivals, each strategy in turn.
pub fn simulate(settings: Settings) -> Simulation {
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(settings.seed);
    let mut hosts = workload::hosts(settings.hosts, &mut rng);
    workload::seed_snapshots(&mut hosts, &mut rng);
    let capacity = workload::capacity_in_capsules(&hosts, &Policy::default().reserves);
    let arrivals = workload::arrivals(settings.capsules, capacity, &mut rng);
    let outcomes = Strategy::ALL
        .into_iter()
        .zip(sim::run_all(
            &Strategy::ALL,
            &hosts,
            &arrivals,
            settings.burst,
            settings.seed,
        ))
        .collect();
    Simulation {
        settings,
        outcomes,
        elapsed_s: started.elapsed().as_secs_f64(),
    }
}

/// One figure: a value per strategy (`None`: not reached) and how it is printed.
struct Figure {
    label: String,
    key: String,
    values: Vec<Option<f64>>,
    decimals: usize,
}

impl Simulation {
    fn figures(&self) -> Vec<Figure> {
        let each = |f: &dyn Fn(&Outcome) -> Option<f64>| -> Vec<Option<f64>> {
            self.outcomes.iter().map(|(_, o)| f(o)).collect()
        };
        let fig = |label: &str, key: &str, decimals, values| Figure {
            label: label.to_owned(),
            key: key.to_owned(),
            values,
            decimals,
        };
        let pct = |part: usize, whole: usize| 100.0 * part as f64 / whole.max(1) as f64;
        let mut v = vec![
            fig(
                "decision p50 (µs)",
                "decision_p50_us",
                1,
                each(&|o| Some(percentile(&o.latencies_us, 50.0))),
            ),
            fig(
                "decision p99 (µs)",
                "decision_p99_us",
                1,
                each(&|o| Some(percentile(&o.latencies_us, 99.0))),
            ),
        ];
        for (i, level) in LEVELS.iter().enumerate() {
            let l = (level * 100.0).round();
            v.push(fig(
                &format!("imbalance at {l} % fill (max/mean)"),
                &format!("imbalance_{l}"),
                2,
                each(&|o| o.imbalance[i]),
            ));
        }
        v.extend([
            fig(
                "peak mean fill (%)",
                "peak_fill_pct",
                1,
                each(&|o| Some(100.0 * o.peak_fill)),
            ),
            fig(
                "fill at 1st refusal (%)",
                "first_refusal_fill_pct",
                1,
                each(&|o| o.first_refusal_fill.map(|f| 100.0 * f)),
            ),
            fig(
                "template locality hits (%)",
                "locality_pct",
                1,
                each(&|o| Some(pct(o.local, o.placed))),
            ),
            fig("placed", "placed", 0, each(&|o| Some(o.placed as f64))),
            fig("refused", "refused", 0, each(&|o| Some(o.refused as f64))),
            fig(
                "conflicts (re-decided)",
                "conflicts",
                0,
                each(&|o| Some(o.conflicts as f64)),
            ),
            fig(
                "overfilled placements",
                "overfilled",
                0,
                each(&|o| Some(o.audit.overfilled as f64)),
            ),
            fig(
                "BYOC/tag/closed violations",
                "scope_violations",
                0,
                each(&|o| {
                    let a = &o.audit;
                    Some((a.out_of_scope + a.missing_tags + a.closed_host) as f64)
                }),
            ),
            fig(
                "refused with room free",
                "wrong_refusals",
                0,
                each(&|o| Some(o.audit.wrong_refusals as f64)),
            ),
        ]);
        v
    }

    /// Whether the checker found nothing for any strategy.
    pub fn clean(&self) -> bool {
        self.outcomes.iter().all(|(_, o)| o.audit.clean())
    }

    /// The table: one column per strategy, then ours over each baseline.
    pub fn print(&self) {
        let s = &self.settings;
        println!(
            "wrenn-bench scheduler: {} hosts, {} capsules in bursts of {}, seed {} (in process)",
            s.hosts, s.capsules, s.burst, s.seed
        );
        println!();
        let mut header = format!("{:<34}", "");
        for (st, _) in &self.outcomes {
            header.push_str(&format!("{:>17}", st.name()));
        }
        for (st, _) in self.outcomes.iter().skip(1) {
            header.push_str(&format!("{:>17}", format!("ours/{}", short(*st))));
        }
        println!("{header}");
        for f in self.figures() {
            let mut line = format!("{:<34}", f.label);
            for v in &f.values {
                line.push_str(&format!("{:>17}", show(*v, f.decimals)));
            }
            for b in f.values.iter().skip(1) {
                line.push_str(&format!("{:>17}", show_ratio(f.values[0], *b)));
            }
            println!("{line}");
        }
        println!();
        println!(
            "fill = the largest used fraction of a host's vCPUs (x4 overcommit), memory and disk"
        );
        println!(
            "       after its reserves; imbalance = max / mean fill of the open regular hosts"
        );
        println!("       (1.00 = even) when the mean first reaches the level;");
        println!("a burst's creates are decided against the same loads, then taken with the");
        println!("       reservation's re-check (conflicts = choices re-decided);");
        println!("the last three rows are the independent checker's: all must be 0;");
        println!("locality = placements onto a host already holding the template and shape.");
        println!(
            "checker: {}; finished in {:.1} s",
            if self.clean() {
                "clean"
            } else {
                "VIOLATIONS FOUND"
            },
            self.elapsed_s
        );
    }

    /// The headline figures as rows against the random baseline (for `wrenn-bench cluster`).
    pub fn rows(&self) -> Vec<Row> {
        let figures = self.figures();
        let get = |key: &str, i: usize| {
            figures
                .iter()
                .find(|f| f.key == key)
                .and_then(|f| f.values[i])
                .unwrap_or(f64::NAN)
        };
        let random = self
            .outcomes
            .iter()
            .position(|(s, _)| *s == Strategy::Random)
            .unwrap_or(0);
        let row = |id: &'static str, label: &str, unit: &'static str, key: &str| {
            let mut r = Row::new(id, label, unit, get(key, 0), get(key, random));
            r.subject = "ours";
            r.samples = self.settings.capsules;
            r.note = "baseline = random eligible".into();
            r
        };
        let mut rows = vec![
            row(
                "sched_p50",
                "scheduler decision p50",
                "µs",
                "decision_p50_us",
            ),
            row(
                "sched_p99",
                "scheduler decision p99",
                "µs",
                "decision_p99_us",
            ),
            row("sched_imb50", "imbalance at 50 % fill", "x", "imbalance_50"),
            row("sched_locality", "template locality", "%", "locality_pct"),
        ];
        let violations: usize = self
            .outcomes
            .iter()
            .map(|(_, o)| o.audit.violations())
            .sum();
        if let Some(last) = rows.last_mut() {
            last.note = format!("baseline = random eligible; checker violations {violations}");
        }
        rows
    }

    pub fn to_json(&self) -> Value {
        let s = &self.settings;
        let mut doc = Map::new();
        doc.insert("bench".into(), json!("scheduler"));
        doc.insert("hosts".into(), json!(s.hosts));
        doc.insert("capsules".into(), json!(s.capsules));
        doc.insert("burst".into(), json!(s.burst));
        doc.insert("seed".into(), json!(s.seed));
        let figures = self.figures();
        let mut results = Map::new();
        for (i, (st, _)) in self.outcomes.iter().enumerate() {
            let mut one = Map::new();
            for f in &figures {
                one.insert(f.key.clone(), json!(f.values[i]));
            }
            results.insert(st.name().into(), Value::Object(one));
        }
        doc.insert("results".into(), Value::Object(results));
        doc.insert("checker_clean".into(), json!(self.clean()));
        doc.insert("elapsed_s".into(), json!(self.elapsed_s));
        Value::Object(doc)
    }
}

fn short(s: Strategy) -> &'static str {
    match s {
        Strategy::LeastLoaded => "least",
        Strategy::Random => "random",
        _ => s.name(),
    }
}

fn show(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "-".to_owned(),
    }
}

fn show_ratio(ours: Option<f64>, base: Option<f64>) -> String {
    match (ours, base) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => {
            format!("{:.2}x", a / b)
        }
        _ => "-".to_owned(),
    }
}

pub fn run(args: Args) -> Result<()> {
    let d = Settings::DEFAULT;
    let settings = Settings {
        hosts: args.hosts.unwrap_or(if args.quick { 100 } else { d.hosts }),
        capsules: args
            .capsules
            .unwrap_or(if args.quick { 10_000 } else { d.capsules }),
        burst: args.burst,
        seed: args.seed,
    };
    let sim = simulate(settings);
    sim.print();
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&sim.to_json())?;
        text.push('\n');
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    anyhow::ensure!(
        sim.clean(),
        "the simulation's checker found violations (see the table)"
    );
    Ok(())
}
