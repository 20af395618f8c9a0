//! Counting what a run left behind: VMM processes (QEMUs naming the run's data folder), network
//! namespaces and host veths of its slot range (each capsule's TAP lives in its namespace),
//! VMM cgroups of those slots, capsule folders, and database rows that disagree with the agent.

use std::{collections::BTreeSet, fmt::Write as _, ops::RangeInclusive, path::Path};

use anyhow::Result;
use wrenn_client::CapsuleStatus;
use wrenn_proto::agent::v1::ListCapsulesRequest;

use super::Up;

/// Leftovers; every field should be 0.
#[derive(Debug, Default, Clone)]
pub struct Leaks {
    pub qemu: usize,
    pub netns: usize,
    pub veths: usize,
    pub cgroups: usize,
    pub capsule_dirs: usize,
    /// Capsules the database shows as not stopped.
    pub rows_not_stopped: usize,
    /// Of those, the ones the agent does not hold.
    pub rows_not_on_agent: usize,
    /// Capsules the agent still holds.
    pub agent_capsules: usize,
    /// Snapshot templates the API still lists.
    pub templates: usize,
    /// What could not be counted (then the count is not trusted).
    pub notes: Vec<String>,
    /// Whether the database and the agent were counted too (not after `wrenn up` stopped).
    pub db: bool,
}

impl Leaks {
    pub fn total(&self) -> usize {
        self.qemu
            + self.netns
            + self.veths
            + self.cgroups
            + self.capsule_dirs
            + self.rows_not_stopped
            + self.rows_not_on_agent
            + self.agent_capsules
            + self.templates
    }

    pub fn clean(&self) -> bool {
        self.total() == 0 && self.notes.is_empty()
    }

    pub fn line(&self) -> String {
        let mut s = format!(
            "{} QEMU, {} netns, {} veths, {} cgroups, {} capsule folders",
            self.qemu, self.netns, self.veths, self.cgroups, self.capsule_dirs,
        );
        if self.db {
            let _ = write!(
                s,
                ", {} rows not stopped ({} of them not on the agent), {} capsules on the agent",
                self.rows_not_stopped, self.rows_not_on_agent, self.agent_capsules
            );
        }
        if self.db || self.templates > 0 {
            let _ = write!(s, ", {} snapshot templates", self.templates);
        }
        for n in &self.notes {
            let _ = write!(s, "; could not count: {n}");
        }
        s
    }
}

fn slot_names(text: &str, prefix: &str, slots: &RangeInclusive<u32>) -> BTreeSet<u32> {
    text.lines()
        .filter_map(|l| {
            // `ip netns list`: "wrenn-12 (id: 3)"; `ip -o link`: "7: wn-12@if2: <...>"
            let name = if prefix.starts_with("wn") {
                l.split(':').nth(1)?.trim().split('@').next()?
            } else {
                l.split_whitespace().next()?
            };
            name.strip_prefix(prefix)?.parse::<u32>().ok()
        })
        .filter(|n| slots.contains(n))
        .collect()
}

fn ip(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the host holds for this run: QEMUs naming `data`, and netns, veths and cgroups of
/// `slots`.
pub fn host(data: &Path, slots: &RangeInclusive<u32>, leaks: &mut Leaks) {
    leaks.qemu = wrenn_vmm::qemu::processes_under(data).len();
    match ip(&["netns", "list"]) {
        Ok(t) => leaks.netns = slot_names(&t, "wrenn-", slots).len(),
        Err(e) => leaks.notes.push(format!("netns: {e}")),
    }
    match ip(&["-o", "link", "show"]) {
        Ok(t) => leaks.veths = slot_names(&t, "wn-", slots).len(),
        Err(e) => leaks.notes.push(format!("links: {e}")),
    }
    leaks.cgroups = wrenn_vmm::cgroup::existing()
        .iter()
        .filter_map(|n| n.strip_prefix("wrenn-")?.parse::<u32>().ok())
        .filter(|n| slots.contains(n))
        .count();
    let capsules = data.join("capsules");
    leaks.capsule_dirs = match std::fs::read_dir(&capsules) {
        Ok(rd) => rd.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            leaks.notes.push(format!("{}: {e}", capsules.display()));
            0
        }
    };
}

/// Everything, while `up` still runs: the host's leftovers and the database against the agent.
pub async fn count(up: &Up, slots: &RangeInclusive<u32>) -> Leaks {
    let mut leaks = Leaks {
        db: true,
        ..Leaks::default()
    };
    host(&up.dir, slots, &mut leaks);
    let on_agent: Option<BTreeSet<String>> = match up.agent().await {
        Ok(mut agent) => match agent.list_capsules(ListCapsulesRequest {}).await {
            Ok(r) => Some(r.into_inner().capsules.into_iter().map(|c| c.id).collect()),
            Err(e) => {
                leaks.notes.push(format!("the agent's capsules: {e}"));
                None
            }
        },
        Err(e) => {
            leaks.notes.push(format!("the agent's socket: {e}"));
            None
        }
    };
    leaks.agent_capsules = on_agent.as_ref().map_or(0, |s| s.len());
    match up.client() {
        Ok(client) => {
            match client.list_capsules().await {
                Ok(list) => {
                    for c in list.iter().filter(|c| c.status != CapsuleStatus::Stopped) {
                        leaks.rows_not_stopped += 1;
                        if on_agent.as_ref().is_some_and(|s| !s.contains(&c.id)) {
                            leaks.rows_not_on_agent += 1;
                        }
                    }
                }
                Err(e) => leaks.notes.push(format!("the database's capsules: {e}")),
            }
            match client
                .list_templates(Some(wrenn_client::TemplateKind::Snapshot))
                .await
            {
                Ok(t) => leaks.templates = t.len(),
                Err(e) => leaks.notes.push(format!("templates: {e}")),
            }
        }
        Err(e) => leaks.notes.push(format!("a client: {e}")),
    }
    leaks
}

/// Whether the counters see what a run holds: with `n` capsules running, `n` of each (or why
/// not). Checked once per run, so a count of 0 at the end means something.
pub fn sees(seen: &Leaks, n: usize) -> Option<String> {
    let ok = seen.qemu == n
        && seen.netns == n
        && seen.veths == n
        && seen.capsule_dirs == n
        && seen.agent_capsules == n
        && seen.rows_not_stopped == n
        && (seen.cgroups == n || wrenn_vmm::cgroup::bases().is_none())
        && seen.notes.is_empty();
    (!ok).then(|| format!("with {n} capsules running the counters saw {}", seen.line()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_read_from_ip_output_within_the_range() {
        let netns = "wrenn-3700 (id: 4)\nwrenn-12 (id: 2)\nother\nwrenn-3999\n";
        assert_eq!(
            slot_names(netns, "wrenn-", &(3700..=3999)),
            BTreeSet::from([3700, 3999])
        );
        let links = "1: lo: <LOOPBACK>\n7: wn-3701@if2: <BROADCAST>\n8: wn-5@if2: <UP>\n";
        assert_eq!(
            slot_names(links, "wn-", &(3700..=3999)),
            BTreeSet::from([3701])
        );
    }
}
