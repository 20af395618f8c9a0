//! One run of the simulation with one strategy: arrivals in bursts, departures and pauses,
//! and what it measured.
//!
//! A burst is creates arriving at once: each is decided against the cluster as it was when
//! the burst began (concurrent creates see the same loads), then taken in order with the
//! re-check the reservation makes under the host's row lock; a choice that no longer fits
//! (another create of the burst filled the host) is decided again against the cluster as it
//! is then. Every placement and refusal goes through the [`Audit`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use wrenn_server::scheduler::{Claims, HostView, Policy, Request};
use wrenn_types::api::hosts::HostKind;

use super::audit::Audit;
use super::strategy::{Chooser, Strategy};
use super::workload::Arrival;

/// The mean fills (of the open regular hosts) at which the imbalance is taken.
pub const LEVELS: [f64; 4] = [0.25, 0.5, 0.75, 0.9];

/// What one run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Decision latencies (µs), re-decisions included.
    pub latencies_us: Vec<f64>,
    pub placed: usize,
    pub refused: usize,
    /// Choices that no longer fitted when taken (decided again).
    pub conflicts: usize,
    /// Placements on a host already holding the template and shape.
    pub local: usize,
    /// max / mean fill of the open regular hosts when the mean first reached each of
    /// [`LEVELS`] (`None`: never reached).
    pub imbalance: [Option<f64>; LEVELS.len()],
    /// The largest mean fill of the open regular hosts seen (at a burst's start or the end).
    pub peak_fill: f64,
    /// The mean fill when the first create was refused although the cluster had not been full
    /// for every shape: the first refusal of a regular team's untagged request.
    pub first_refusal_fill: Option<f64>,
    pub audit: Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Pause(usize),
    Depart(usize),
}

/// One strategy's run in progress: its own copy of the cluster, its random choices, and what
/// it measured so far.
struct Run<'a> {
    chooser: Chooser,
    policy: Policy,
    arrivals: &'a [Arrival],
    hosts: Vec<HostView>,
    rng: SmallRng,
    out: Outcome,
    /// Where each placed arrival is, and whether it is paused.
    at: Vec<Option<(usize, bool)>>,
    events: BinaryHeap<Reverse<(usize, Event)>>,
    chosen: Vec<Option<usize>>,
}

impl<'a> Run<'a> {
    fn new(strategy: Strategy, start: &[HostView], arrivals: &'a [Arrival], seed: u64) -> Self {
        let policy = Policy::default();
        Run {
            chooser: Chooser::new(strategy, policy, start),
            policy,
            arrivals,
            hosts: start.to_vec(),
            rng: SmallRng::seed_from_u64(seed),
            out: Outcome::default(),
            at: vec![None; arrivals.len()],
            events: BinaryHeap::new(),
            chosen: Vec::new(),
        }
    }

    /// The arrivals `first..last`: the departures and pauses due first, then the burst.
    fn burst(&mut self, first: usize, last: usize) {
        let arrivals = self.arrivals;
        while let Some(Reverse((when, _))) = self.events.peek() {
            if *when > first {
                break;
            }
            let Some(Reverse((_, event))) = self.events.pop() else {
                break;
            };
            apply_event(&mut self.hosts, arrivals, &mut self.at, event);
        }
        let (ratio, fill) = imbalance(&self.hosts, &self.policy);
        record_levels(&mut self.out, ratio, fill);
        // Decided together, against the cluster at the burst's start…
        self.chosen.clear();
        for arrival in &arrivals[first..last] {
            let t = Instant::now();
            let c = self
                .chooser
                .decide(&self.hosts, &arrival.req, &mut self.rng);
            self.out.latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
            self.chosen.push(c);
        }
        // …then taken one by one, each re-checked.
        for (k, arrival) in arrivals[first..last].iter().enumerate() {
            self.take(first + k, arrival, self.chosen[k], fill);
        }
    }

    fn take(&mut self, i: usize, arrival: &Arrival, mut choice: Option<usize>, fill: f64) {
        let (req, out, hosts) = (&arrival.req, &mut self.out, &mut self.hosts);
        while let Some(h) = choice {
            if self.chooser.still_fits(&hosts[h], req) {
                break;
            }
            out.conflicts += 1;
            let t = Instant::now();
            choice = self.chooser.decide(hosts, req, &mut self.rng);
            out.latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let reserves = &self.policy.reserves;
        let Some(h) = choice else {
            out.audit.refusal(hosts, req, reserves);
            out.refused += 1;
            if out.first_refusal_fill.is_none() && !req.team_is_byoc && req.tags.is_empty() {
                out.first_refusal_fill = Some(fill);
            }
            return;
        };
        out.audit.placement(&hosts[h], req, reserves);
        place_on(&mut hosts[h], req, out);
        self.at[i] = Some((h, false));
        if let Some(p) = arrival.pause_at {
            self.events.push(Reverse((p, Event::Pause(i))));
        }
        if arrival.depart_at != usize::MAX {
            self.events
                .push(Reverse((arrival.depart_at, Event::Depart(i))));
        }
    }

    fn finish(mut self) -> Outcome {
        let (ratio, mean) = imbalance(&self.hosts, &self.policy);
        record_levels(&mut self.out, ratio, mean);
        self.out
    }
}

/// Runs every strategy on the same cluster and arrivals, burst by burst in turn (so the
/// machine's noise falls on all of them alike); their outcomes, in the order given.
pub fn run_all(
    strategies: &[Strategy],
    start: &[HostView],
    arrivals: &[Arrival],
    burst: usize,
    seed: u64,
) -> Vec<Outcome> {
    let mut runs: Vec<Run> = strategies
        .iter()
        .map(|s| Run::new(*s, start, arrivals, seed))
        .collect();
    let burst = burst.max(1);
    for first in (0..arrivals.len()).step_by(burst) {
        let last = (first + burst).min(arrivals.len());
        for r in &mut runs {
            r.burst(first, last);
        }
    }
    runs.into_iter().map(Run::finish).collect()
}

/// One strategy alone.
#[cfg(test)]
pub fn run(
    strategy: Strategy,
    start: &[HostView],
    arrivals: &[Arrival],
    burst: usize,
    seed: u64,
) -> Outcome {
    run_all(&[strategy], start, arrivals, burst, seed)
        .pop()
        .unwrap_or_default()
}

fn record_levels(out: &mut Outcome, ratio: f64, mean: f64) {
    out.peak_fill = out.peak_fill.max(mean);
    for (slot, level) in out.imbalance.iter_mut().zip(LEVELS) {
        if slot.is_none() && mean >= level {
            *slot = Some(ratio);
        }
    }
}

/// Puts the capsule on `host`, counting whether the template was there; the host holds the
/// template and shape from now on.
fn place_on(host: &mut HostView, req: &Request, out: &mut Outcome) {
    let want = req.template.as_ref();
    if host.locality(want) == 2 {
        out.local += 1;
    }
    host.usage.active = host.usage.active.plus(req.claims());
    out.placed += 1;
    if let Some(w) = want {
        let shapes = host.templates.entry(w.name.clone()).or_default();
        if let Some(s) = &w.shape {
            if !shapes.contains(s) {
                shapes.push(s.clone());
            }
        }
    }
}

fn apply_event(
    hosts: &mut [HostView],
    arrivals: &[Arrival],
    at: &mut [Option<(usize, bool)>],
    event: Event,
) {
    let (Event::Pause(i) | Event::Depart(i)) = event;
    let Some((h, paused)) = at[i] else { return };
    let claims: Claims = arrivals[i].req.claims();
    let usage = &mut hosts[h].usage;
    match event {
        Event::Pause(_) if !paused => {
            usage.active = usage.active.minus(claims);
            usage.paused = usage.paused.plus(claims);
            at[i] = Some((h, true));
        }
        Event::Pause(_) => {}
        Event::Depart(_) => {
            if paused {
                usage.paused = usage.paused.minus(claims);
            } else {
                usage.active = usage.active.minus(claims);
            }
            at[i] = None;
        }
    }
}

/// (max / mean, mean) fill of the open regular hosts (online, not draining).
fn imbalance(hosts: &[HostView], policy: &Policy) -> (f64, f64) {
    let fills: Vec<f64> = hosts
        .iter()
        .filter(|h| h.kind == HostKind::Regular && h.online && !h.draining)
        .map(|h| policy.reserves.fill_after(h, Claims::default()))
        .collect();
    let mean = fills.iter().sum::<f64>() / fills.len().max(1) as f64;
    let max = fills.iter().copied().fold(0.0, f64::max);
    (if mean > 0.0 { max / mean } else { f64::NAN }, mean)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::super::workload;
    use super::*;

    /// A small, busy cluster: 30 hosts, 6,000 arrivals (it fills up).
    fn cluster(seed: u64) -> (Vec<HostView>, Vec<Arrival>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut hosts = workload::hosts(30, &mut rng);
        workload::seed_snapshots(&mut hosts, &mut rng);
        let cap = workload::capacity_in_capsules(&hosts, &Policy::default().reserves);
        let arrivals = workload::arrivals(6_000, cap, &mut rng);
        (hosts, arrivals)
    }

    #[test]
    fn the_checker_catches_an_over_admitting_policy() {
        let (hosts, arrivals) = cluster(7);
        let bad = run(Strategy::OverAdmit, &hosts, &arrivals, 20, 7);
        assert!(bad.audit.overfilled > 0, "{:?}", bad.audit);
        assert!(!bad.audit.clean());
        // The same arrivals through the real scheduler and the baselines: nothing to report,
        // although they filled the cluster (creates were refused).
        for s in Strategy::ALL {
            let good = run(s, &hosts, &arrivals, 20, 7);
            assert!(good.audit.clean(), "{}: {:?}", s.name(), good.audit);
            assert!(good.refused > 0, "{}: the cluster never filled", s.name());
            assert_eq!(good.placed + good.refused, arrivals.len());
        }
    }

    #[test]
    fn the_checker_catches_refusals_while_hosts_have_room() {
        let (hosts, arrivals) = cluster(8);
        let bad = run(Strategy::RefuseAll, &hosts, &arrivals[..100], 20, 8);
        // On an empty cluster nearly every request fits somewhere (not the few whose tags no
        // host of the 30 has).
        assert!(bad.audit.wrong_refusals >= 90, "{:?}", bad.audit);
    }

    #[test]
    fn the_checker_catches_scope_and_tag_violations() {
        let (hosts, arrivals) = cluster(9);
        let mut audit = Audit::default();
        let reserves = Policy::default().reserves;
        let byoc_host = hosts.iter().find(|h| h.kind == HostKind::Byoc).unwrap();
        let regular = arrivals
            .iter()
            .find(|a| !a.req.team_is_byoc && a.req.tags.is_empty())
            .unwrap();
        audit.placement(byoc_host, &regular.req, &reserves);
        assert_eq!(audit.out_of_scope, 1);
        let mut tagged = regular.req.clone();
        tagged.tags = vec!["no-such-tag".to_owned()];
        let open = hosts
            .iter()
            .find(|h| h.kind == HostKind::Regular && h.online && !h.draining)
            .unwrap();
        audit.placement(open, &tagged, &reserves);
        assert_eq!(audit.missing_tags, 1);
        assert_eq!(audit.violations(), 2);
    }
}
