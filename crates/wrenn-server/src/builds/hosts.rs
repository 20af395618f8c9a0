//! Builds per host: each host runs at most `limit` builds at once (`--max-builds`). A build is
//! placed by the scheduler like any capsule, among the hosts below their limit, and its row
//! records the host (`builds.host_id`); the queue takes a queued build only while some online
//! host has room for one more than the builds already taken but not yet placed. Every control
//! plane reads the same rows, so the bound holds across replicas (placements are serialized
//! within one control plane; two replicas placing at the same instant may exceed it by one).

use std::collections::HashMap;

use wrenn_types::api::hosts::HostStatus;

use super::runner::{Run, Stop};
use crate::{db::HostRecord, state::AppState};

/// The hosts at their limit of running builds.
pub fn busy(running: &HashMap<String, i64>, limit: usize) -> Vec<String> {
    let mut out: Vec<String> = running
        .iter()
        .filter(|(_, &n)| n >= limit as i64)
        .map(|(h, _)| h.clone())
        .collect();
    out.sort();
    out
}

/// How many more builds may start: the room left on the online hosts (each `limit` less the
/// builds running there), less the builds taken and not placed yet.
pub fn room(online: &[String], running: &HashMap<String, i64>, unplaced: i64, limit: usize) -> i64 {
    let free: i64 = online
        .iter()
        .map(|h| (limit as i64 - running.get(h).copied().unwrap_or(0)).max(0))
        .sum();
    (free - unplaced).max(0)
}

/// The ids of the hosts that count for builds: registered and not draining. One that missed
/// its heartbeats (`unreachable`) keeps its room: placement decides, and a build that finds no
/// host fails as a capsule create does (a slow heartbeat never holds the queue).
pub fn online(hosts: &[HostRecord]) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| h.status != HostStatus::Pending && !h.draining)
        .map(|h| h.id.clone())
        .collect()
}

/// [`room`] now, from the database.
pub async fn room_now(state: &AppState, limit: usize) -> crate::error::Result<i64> {
    let hosts = state.db.host_records().await?;
    let (running, unplaced) = state.db.running_builds_by_host().await?;
    Ok(room(&online(&hosts), &running, unplaced, limit))
}

impl Run {
    /// The hosts at their limit of builds, to be left out of this build's placement;
    /// [`Stop::Requeue`] when that is every online host.
    pub(super) async fn busy_hosts(&self) -> Result<Vec<String>, Stop> {
        let (running, _) = self.state.db.running_builds_by_host().await?;
        let busy = busy(&running, self.limit);
        let online = online(&self.state.db.host_records().await?);
        if !online.is_empty() && online.iter().all(|h| busy.contains(h)) {
            return Err(Stop::Requeue);
        }
        Ok(busy)
    }

    /// Records the build capsule's host on the build.
    pub(super) async fn record_host(&self) -> Result<(), Stop> {
        let id = self.capsule.as_deref().unwrap_or_default();
        let row = self.state.db.capsule(&self.caller.team_id, id).await?;
        if let Some(host) = &row.host_id {
            self.state.db.set_build_host(&self.row.id, host).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
        pairs.iter().map(|(h, n)| (h.to_string(), *n)).collect()
    }

    #[test]
    fn a_full_host_gets_no_more_and_queued_builds_wait() {
        let hosts = vec!["h1".to_string(), "h2".to_string()];
        // Two hosts, two builds each: four may run.
        assert_eq!(room(&hosts, &running(&[]), 0, 2), 4);
        // h1 full: only h2's two; the full one is busy.
        let r = running(&[("h1", 2)]);
        assert_eq!(room(&hosts, &r, 0, 2), 2);
        assert_eq!(busy(&r, 2), vec!["h1".to_string()]);
        // Taken but not placed yet count against the room.
        assert_eq!(room(&hosts, &r, 1, 2), 1);
        assert_eq!(room(&hosts, &r, 2, 2), 0);
        // Both full: nothing starts, whatever else is queued.
        let r = running(&[("h1", 2), ("h2", 2)]);
        assert_eq!(room(&hosts, &r, 0, 2), 0);
        assert_eq!(busy(&r, 2), vec!["h1".to_string(), "h2".to_string()]);
        // Over the limit (a lowered --max-builds) is no negative room for the others.
        let r = running(&[("h1", 5)]);
        assert_eq!(room(&hosts, &r, 0, 2), 2);
        // A host gone offline keeps its running builds but gives no room.
        assert_eq!(room(&hosts[1..], &running(&[("h1", 1)]), 0, 2), 2);
        assert_eq!(room(&[], &running(&[]), 0, 2), 0);
    }
}
