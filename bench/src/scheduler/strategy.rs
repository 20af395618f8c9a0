//! How each strategy of the simulation picks a host: ours (`wrenn_server::scheduler`) and the
//! baselines, plus the broken policies the tests feed to the checker.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
#[cfg(test)]
use wrenn_server::scheduler::Reject;
use wrenn_server::scheduler::{check, HostView, Policy, Request};

/// How a strategy picks a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `wrenn_server::scheduler::Policy::place` (the default policy): admission with reserves,
    /// best of 2 at random, template locality.
    Ours,
    /// The host that stays emptiest (most free fraction) among those that admit, by a full
    /// scan: the best spread a greedy scheduler can reach, at the cost of every concurrent
    /// create picking the same host.
    LeastLoaded,
    /// Any eligible host (scope, online, tags, not draining, room), uniformly at random.
    Random,
    /// Deliberately broken, for the checker's tests: any host of the scope, online, tagged and
    /// not draining, whether it has room or not, and no re-check when it is taken.
    #[cfg(test)]
    OverAdmit,
    /// Deliberately broken, for the checker's tests: refuses every request.
    #[cfg(test)]
    RefuseAll,
}

impl Strategy {
    /// The strategies of a run, ours first.
    pub const ALL: [Strategy; 3] = [Strategy::Ours, Strategy::LeastLoaded, Strategy::Random];

    pub const fn name(self) -> &'static str {
        match self {
            Strategy::Ours => "best-of-2 (ours)",
            Strategy::LeastLoaded => "least loaded",
            Strategy::Random => "random eligible",
            #[cfg(test)]
            Strategy::OverAdmit => "over-admitting",
            #[cfg(test)]
            Strategy::RefuseAll => "refuse all",
        }
    }

    /// Whether a placement is re-checked when it is taken (the reservation's re-check under
    /// the host's row lock), so a burst's creates that chose the same host cannot overfill it.
    pub const fn rechecks(self) -> bool {
        match self {
            Strategy::Ours | Strategy::LeastLoaded | Strategy::Random => true,
            #[cfg(test)]
            Strategy::OverAdmit | Strategy::RefuseAll => false,
        }
    }
}

/// One strategy's chooser over one cluster (host ids resolved to indexes once).
pub struct Chooser {
    strategy: Strategy,
    policy: Policy,
    index: HashMap<String, usize>,
}

impl Chooser {
    pub fn new(strategy: Strategy, policy: Policy, hosts: &[HostView]) -> Chooser {
        let index = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.id.clone(), i))
            .collect();
        Chooser {
            strategy,
            policy,
            index,
        }
    }

    /// The index of the host `req` goes to, or `None` when the strategy refuses it.
    pub fn decide(&self, hosts: &[HostView], req: &Request, rng: &mut SmallRng) -> Option<usize> {
        let reserves = &self.policy.reserves;
        match self.strategy {
            Strategy::Ours => {
                let c = self.policy.place(hosts, req, rng).ok()?;
                self.index.get(&c.host_id).copied()
            }
            Strategy::LeastLoaded => {
                let need = req.claims();
                let mut best: Option<(f64, usize)> = None;
                for (i, h) in hosts.iter().enumerate() {
                    if check(h, req, reserves).is_ok() {
                        let free = 1.0 - reserves.fill_after(h, need);
                        if best.is_none_or(|(f, _)| free > f) {
                            best = Some((free, i));
                        }
                    }
                }
                best.map(|(_, i)| i)
            }
            Strategy::Random => {
                let open: Vec<usize> = (0..hosts.len())
                    .filter(|&i| check(&hosts[i], req, reserves).is_ok())
                    .collect();
                open.choose(rng).copied()
            }
            #[cfg(test)]
            Strategy::OverAdmit => {
                let open: Vec<usize> = (0..hosts.len())
                    .filter(|&i| {
                        matches!(check(&hosts[i], req, reserves), Ok(()) | Err(Reject::Room))
                    })
                    .collect();
                open.choose(rng).copied()
            }
            #[cfg(test)]
            Strategy::RefuseAll => None,
        }
    }

    /// Whether `host` may still take `req` when the choice is taken (the re-check).
    pub fn still_fits(&self, host: &HostView, req: &Request) -> bool {
        !self.strategy.rechecks() || check(host, req, &self.policy.reserves).is_ok()
    }
}
