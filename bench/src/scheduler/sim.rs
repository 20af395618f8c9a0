//! One run of the simulation with one strategy: arrivals in bursts, departures and pauses,
//! and what it measured.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use wrenn_server::scheduler::{check, Claims, HostView, Policy, Reject, Request};
use wrenn_types::api::hosts::HostKind;

use super::workload::Arrival;

/// How a strategy picks a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `wrenn_server::scheduler::place`: admission with reserves, best of 2, template locality;
    /// each decision sees the ones before it (the reservation is in the same transaction).
    Ours,
    /// Upstream's: the host with the most free fraction among those that admit, by a full
    /// scan; the decisions of one burst all see the state before it (no reservations).
    LeastLoaded,
    /// Any host of the request's scope, online, with its tags and not draining, at random;
    /// no admission.
    Random,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Ours, Strategy::LeastLoaded, Strategy::Random];

    pub const fn name(self) -> &'static str {
        match self {
            Strategy::Ours => "best-of-2 (ours)",
            Strategy::LeastLoaded => "least loaded",
            Strategy::Random => "random eligible",
        }
    }

    /// Whether a burst's decisions see each other.
    const fn sees_reservations(self) -> bool {
        matches!(self, Strategy::Ours)
    }
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Decision latencies (µs).
    pub latencies_us: Vec<f64>,
    pub placed: usize,
    pub refused: usize,
    /// Placements that left their host with more taken than it may hand out.
    pub overfilling: usize,
    /// Placements on a host already holding the template and shape.
    pub local: usize,
    /// max / mean fill of the open regular hosts, at half the arrivals and at the end.
    pub imbalance_half: f64,
    pub imbalance_end: f64,
    /// Mean fill of the open regular hosts at the end.
    pub mean_fill_end: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Pause(usize),
    Depart(usize),
}

pub fn run(
    strategy: Strategy,
    start: &[HostView],
    arrivals: &[Arrival],
    burst: usize,
    seed: u64,
) -> Outcome {
    let policy = Policy::default();
    let mut hosts = start.to_vec();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Outcome::default();
    // Where each placed arrival went, and whether it is paused.
    let mut at: Vec<Option<(usize, bool)>> = vec![None; arrivals.len()];
    let mut events: BinaryHeap<Reverse<(usize, Event)>> = BinaryHeap::new();
    let mut pending: Vec<(usize, usize)> = Vec::with_capacity(burst);
    let half = arrivals.len() / 2;
    let burst = burst.max(1);
    for first in (0..arrivals.len()).step_by(burst) {
        while let Some(Reverse((when, _))) = events.peek() {
            if *when > first {
                break;
            }
            let Some(Reverse((_, event))) = events.pop() else {
                break;
            };
            apply_event(&mut hosts, arrivals, &mut at, event);
        }
        if first / burst == half / burst {
            (out.imbalance_half, _) = imbalance(&hosts, &policy);
        }
        let last = (first + burst).min(arrivals.len());
        for (i, arrival) in arrivals.iter().enumerate().take(last).skip(first) {
            let t = Instant::now();
            let choice = decide(strategy, &policy, &hosts, &arrival.req, &mut rng);
            out.latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
            let Some(h) = choice else {
                out.refused += 1;
                continue;
            };
            if strategy.sees_reservations() {
                place_on(&mut hosts[h], &arrival.req, &policy, &mut out);
                at[i] = Some((h, false));
            } else {
                pending.push((i, h));
            }
        }
        for (i, h) in pending.drain(..) {
            place_on(&mut hosts[h], &arrivals[i].req, &policy, &mut out);
            at[i] = Some((h, false));
        }
        for (i, arrival) in arrivals.iter().enumerate().take(last).skip(first) {
            if at[i].is_some() {
                if let Some(p) = arrival.pause_at {
                    events.push(Reverse((p, Event::Pause(i))));
                }
                events.push(Reverse((arrival.depart_at, Event::Depart(i))));
            }
        }
    }
    (out.imbalance_end, out.mean_fill_end) = imbalance(&hosts, &policy);
    out
}

fn decide(
    strategy: Strategy,
    policy: &Policy,
    hosts: &[HostView],
    req: &Request,
    rng: &mut SmallRng,
) -> Option<usize> {
    match strategy {
        Strategy::Ours => {
            let c = policy.place(hosts, req, rng).ok()?;
            hosts.iter().position(|h| h.id == c.host_id)
        }
        Strategy::LeastLoaded => {
            let need = req.claims();
            let mut best: Option<(f64, usize)> = None;
            for (i, h) in hosts.iter().enumerate() {
                if check(h, req, &policy.reserves).is_ok() {
                    let free = 1.0 - policy.reserves.fill_after(h, need);
                    if best.is_none_or(|(f, _)| free > f) {
                        best = Some((free, i));
                    }
                }
            }
            best.map(|(_, i)| i)
        }
        Strategy::Random => {
            let open: Vec<usize> = (0..hosts.len())
                .filter(|&i| {
                    matches!(
                        check(&hosts[i], req, &policy.reserves),
                        Ok(()) | Err(Reject::Room)
                    )
                })
                .collect();
            open.choose(rng).copied()
        }
    }
}

/// Puts the capsule on `host`, counting whether it overfilled it and whether the template
/// was there; the host holds the template and shape from now on.
fn place_on(host: &mut HostView, req: &Request, policy: &Policy, out: &mut Outcome) {
    let want = req.template.as_ref();
    if host.locality(want) == 2 {
        out.local += 1;
    }
    if !policy.reserves.free(host).covers(req.claims()) {
        out.overfilling += 1;
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
