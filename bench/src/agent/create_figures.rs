//! Step 3's figures: for each burst, its p50 against one create alone, its p99 against its
//! p50, all of it against the CPU floor, and its throughput against the floor's.
//!
//! The floor is what the host's CPUs alone allow: `n` creates' CPU (as one alone used: QEMU,
//! agent, helper processes) spread over every CPU. A burst at the floor loses nothing to
//! waiting, contention or work that grows with the crowd.

use serde_json::{json, Map, Value};

use super::cpu::CreateCpu;
use super::creates::{Alone, Burst};
use super::{ms_list, row, CONCURRENT_TARGET_RATIO};
use crate::report::{percentile, Row, Target as Goal};

/// A cold burst's makespan against its CPU floor.
const FLOOR_TARGET_RATIO: f64 = 1.5;
/// A burst into the warm pool: its p99 against its own p50.
const WARM_SPREAD_TARGET: f64 = 3.0;

/// Row ids live as long as the bench (a handful per run).
fn id(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub(super) fn figures(
    alone: &Alone,
    bursts: &[Burst],
    cpus: f64,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
    extra: &mut Map<String, Value>,
) {
    let single = percentile(&alone.ms, 50.0);
    let alone_cpu = percentile(
        &alone.cpu.iter().map(CreateCpu::own).collect::<Vec<_>>(),
        50.0,
    );
    let floor_rate = cpus / alone_cpu;
    // The single create whose own CPU is the median, for the breakdown.
    let mut sorted = alone.cpu.clone();
    sorted.sort_by(|a, b| a.own().total_cmp(&b.own()));
    let a = sorted[sorted.len() / 2];
    notes.push(format!(
        "creates alone: {}; CPU of one (median): {:.2} s (QEMU {:.2}, agent process {:.2}, \
         helper processes such as ip/nft {:.2}); the CPU floor of n at once = n x {:.2} s / \
         {cpus} CPUs, i.e. {floor_rate:.2} creates/s",
        ms_list(&alone.ms),
        a.own(),
        a.qemu,
        a.agent,
        a.helpers,
        alone_cpu
    ));
    let mut json_bursts = Vec::new();
    for b in bursts {
        let n = b.n;
        let floor_ms = n as f64 * alone_cpu / cpus * 1000.0;
        let (p50, p99) = (percentile(&b.ms, 50.0), percentile(&b.ms, 99.0));
        let kind = if b.warm > 0 { "warm" } else { "cold" };
        let key = format!("create_{kind}_{n}");
        let label = |what: &str| format!("{n} {kind} creates {what}");

        let mut r = row(id(format!("{key}_p50")), &label("p50"), "ms", p50, single);
        r.samples = n;
        r.note = "baseline = one create alone (p50)".into();
        rows.push(r);

        let mut r = row(id(format!("{key}_p99")), &label("p99"), "ms", p99, p50);
        r.samples = n;
        r.note = format!(
            "baseline = this burst's p50; {:.1}x one alone",
            p99 / single
        );
        r.target = Some(if b.warm > 0 {
            Goal {
                text: format!("p99 <= {WARM_SPREAD_TARGET}x p50"),
                met: p99 <= WARM_SPREAD_TARGET * p50,
            }
        } else {
            Goal {
                text: format!("p99 <= {CONCURRENT_TARGET_RATIO}x alone"),
                met: p99 <= CONCURRENT_TARGET_RATIO * single,
            }
        });
        rows.push(r);

        let mut r = row(
            id(format!("{key}_all")),
            &label("all"),
            "ms",
            b.makespan_ms,
            floor_ms,
        );
        r.samples = n;
        r.note = format!(
            "baseline = the CPU floor ({:.1}x one alone); all done {:.1}x one alone",
            floor_ms / single,
            b.makespan_ms / single
        );
        if b.warm == 0 {
            r.target = Some(Goal {
                text: format!("<= {FLOOR_TARGET_RATIO}x the floor"),
                met: b.makespan_ms <= FLOOR_TARGET_RATIO * floor_ms,
            });
        }
        r.extra.insert("cpu_floor_ms".into(), json!(floor_ms));
        rows.push(r);

        let mut r = row(
            id(format!("{key}_rate")),
            &label("/s"),
            "/s",
            b.throughput(),
            floor_rate,
        );
        r.samples = n;
        r.note = "baseline = the CPU floor's rate (higher is better)".into();
        rows.push(r);

        let c = b.cpu;
        let per = n as f64;
        notes.push(format!(
            "{n} {kind} creates ({} warm machines ready): fastest {:.0} ms, all done after {:.0} \
             ms, destroying them (at once) {:.0} ms; CPU per create {:.2} s (QEMU {:.2}, agent \
             process {:.2}, helpers {:.2}) against {:.2} s alone; the creates had {:.2} of the \
             {cpus} CPUs on average, the whole machine was busy {:.1} s (other load included); \
             once made, the {n} idle capsules' QEMUs used {:.2} CPUs ({:.1} % of one each)",
            b.warm,
            b.ms.iter().copied().fold(f64::INFINITY, f64::min),
            b.makespan_ms,
            b.destroy_ms,
            c.own() / per,
            c.qemu / per,
            c.agent / per,
            c.helpers / per,
            a.own(),
            c.own() / (b.makespan_ms / 1000.0),
            c.machine,
            b.idle_cpus,
            b.idle_cpus / per * 100.0
        ));
        json_bursts.push(json!({
            "n": n, "warm": b.warm, "samples_ms": b.ms, "makespan_ms": b.makespan_ms,
            "destroy_ms": b.destroy_ms, "cpu_floor_ms": floor_ms, "cpu_s": c.to_json(),
            "idle_cpus": b.idle_cpus,
        }));
    }
    extra.insert(
        "creates".into(),
        json!({
            "alone_ms": alone.ms,
            "alone_cpu_s": alone.cpu.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
            "bursts": json_bursts,
        }),
    );
}
