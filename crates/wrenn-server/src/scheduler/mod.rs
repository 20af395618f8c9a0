//! The scheduler: which host a new capsule goes to. Pure: no database, no I/O, no clock; the
//! caller (capsule creation) fills a [`HostView`] per host from the database and the hosts'
//! heartbeats ([`HostView::from_host`]), and records the answer as a reservation.
//!
//! [`place`] (or [`Policy::place`] with other settings):
//!
//! 1. **Eligibility**, every host in one pass: of the request's scope (a BYOC team's own
//!    hosts for a BYOC team, the platform's `regular` hosts for everyone else), online, holding
//!    every requested tag, not draining, and with room: what is taken (the larger of the
//!    database's sums plus in-flight reservations and what the heartbeat reported, paused
//!    capsules weighted) plus the request fits in what the host may hand out after its
//!    [`Reserves`]. A forced host is checked the same way, alone.
//! 2. **Best of K** (K = 2): K random eligible hosts, plus K random eligible hosts that hold the
//!    template and its shape when there are any; the one with the best score wins. Score =
//!    how empty the host stays after the capsule (1 − the largest used fraction of its three
//!    resources) + a bonus for holding the template and shape (0.25; 0.10 for the template
//!    alone). Random sampling keeps a burst of creates from all landing on the one host that
//!    looked emptiest; the bonus keeps creates near their template until that host is a
//!    quarter fuller than an alternative.
//! 3. No eligible host: [`NoHost`] says which check left none (`no online host with tags
//!    [gpu]`, `no online host has 2048 MB of memory free (largest free: 900 MB of memory)`,
//!    `team … has no online BYOC host`).
//!
//! The caller holds the choice with a reservation taken under the host's row lock after a
//! re-check ([`check`] on a fresh [`HostView`] of that host); when the re-check fails (another
//! create or control plane filled it meanwhile), it drops that host from the slice and calls
//! [`place`] again.

mod filter;
mod reserves;
mod view;

use rand::Rng;

pub use filter::{check, in_scope, Reject};
pub use reserves::Reserves;
pub use view::{slot_count, Choice, Claims, HostUsage, HostView, NoHost, Request, TemplateWant};

/// The scheduler's settings; [`Policy::default`] is what [`place`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub reserves: Reserves,
    /// How many random eligible hosts are compared (and as many holding the template).
    pub k: usize,
    /// Score bonus for a host holding the template and a snapshot of the shape.
    pub shape_bonus: f64,
    /// Score bonus for a host holding the template only.
    pub template_bonus: f64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            reserves: Reserves::default(),
            k: 2,
            shape_bonus: 0.25,
            template_bonus: 0.10,
        }
    }
}

/// [`Policy::place`] with the default policy.
pub fn place(hosts: &[HostView], req: &Request, rng: &mut impl Rng) -> Result<Choice, NoHost> {
    Policy::default().place(hosts, req, rng)
}

impl Policy {
    /// The host `req` goes to, or why none can take it.
    pub fn place(
        &self,
        hosts: &[HostView],
        req: &Request,
        rng: &mut impl Rng,
    ) -> Result<Choice, NoHost> {
        if let Some(id) = &req.force_host {
            let host = hosts.iter().find(|h| &h.id == id);
            if let Some(no) = filter::refuse_forced(host, id, req, &self.reserves) {
                return Err(no);
            }
            return Ok(Choice {
                host_id: id.clone(),
                why: "forced".to_owned(),
            });
        }
        let want = req.template.as_ref();
        let mut eligible = Vec::new();
        let mut local = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            if check(h, req, &self.reserves).is_ok() {
                eligible.push(i);
                if h.locality(want) == 2 {
                    local.push(i);
                }
            }
        }
        if eligible.is_empty() {
            return Err(filter::explain(hosts, req, &self.reserves));
        }
        let need = req.claims();
        let mut best: Option<(f64, usize)> = None;
        for pool in [&local, &eligible] {
            let n = pool.len();
            for pick in rand::seq::index::sample(&mut *rng, n, self.k.min(n)) {
                let i = pool[pick];
                let score = self.score(&hosts[i], need, req);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i));
                }
            }
        }
        // `eligible` is not empty, so at least one host was scored.
        let (score, i) = best.unwrap_or((0.0, eligible[0]));
        let host = &hosts[i];
        let held = match host.locality(want) {
            2 => "holds the template and shape",
            1 => "holds the template",
            _ => "template not present",
        };
        Ok(Choice {
            host_id: host.id.clone(),
            why: format!(
                "best of {} of {} eligible hosts ({held}, score {score:.2})",
                self.k.min(eligible.len()),
                eligible.len()
            ),
        })
    }

    /// Higher is better: how empty `host` stays with the capsule, plus the locality bonus.
    pub fn score(&self, host: &HostView, need: Claims, req: &Request) -> f64 {
        let bonus = match host.locality(req.template.as_ref()) {
            2 => self.shape_bonus,
            1 => self.template_bonus,
            _ => 0.0,
        };
        (1.0 - self.reserves.fill_after(host, need)) + bonus
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_templates;
