//! Which slots exist and which an agent hands out.

use super::{ip, SlotAddrs, MAX_SLOT, NETNS_PREFIX, VETH_PREFIX};
use crate::error::{AgentError, Result};

/// The slots an agent hands out: its range, minus those in use.
#[derive(Debug)]
pub struct SlotPool {
    range: std::ops::RangeInclusive<u32>,
    used: std::sync::Mutex<std::collections::BTreeSet<u32>>,
}

impl SlotPool {
    pub fn new(range: std::ops::RangeInclusive<u32>, used: impl IntoIterator<Item = u32>) -> Self {
        SlotPool {
            range,
            used: std::sync::Mutex::new(used.into_iter().collect()),
        }
    }

    pub fn range(&self) -> &std::ops::RangeInclusive<u32> {
        &self.range
    }

    /// The lowest free slot, now taken.
    pub fn take(&self) -> Result<u32> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let n = self
            .range
            .clone()
            .find(|n| !used.contains(n))
            .ok_or(AgentError::NoFreeSlot)?;
        used.insert(n);
        Ok(n)
    }

    pub fn free(&self, n: u32) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&n);
    }
}

/// Slot indexes whose netns or host veth exist.
pub async fn existing_slots() -> Result<Vec<u32>> {
    let mut found = std::collections::BTreeSet::new();
    for line in ip(&["netns", "list"]).await?.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(n) = name.strip_prefix(NETNS_PREFIX).and_then(|n| n.parse().ok()) {
            found.insert(n);
        }
    }
    for line in ip(&["-o", "link", "show"]).await?.lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        let name = name.split('@').next().unwrap_or("");
        if let Some(n) = name.strip_prefix(VETH_PREFIX).and_then(|n| n.parse().ok()) {
            found.insert(n);
        }
    }
    Ok(found.into_iter().collect())
}

/// A free slot for a template build, taken from the top of the range (capsules take from the
/// bottom).
pub async fn free_build_slot() -> Result<u32> {
    let used = existing_slots().await?;
    (1..=MAX_SLOT)
        .rev()
        .find(|n| !used.contains(n))
        .ok_or_else(|| AgentError::Network("no free network slot".into()))
}

/// Removes whatever exists of slot `index` (its netns and host veth).
pub async fn remove(index: u32) -> Result<()> {
    let a = SlotAddrs::new(index)?;
    let _ = ip(&["netns", "delete", &a.netns]).await;
    let _ = ip(&["link", "delete", &a.host_veth]).await;
    Ok(())
}

/// Removes the netns and veth of every slot in `range` but not in `keep`.
pub async fn cleanup_orphans(
    keep: &[u32],
    range: &std::ops::RangeInclusive<u32>,
) -> Result<Vec<u32>> {
    let mut removed = Vec::new();
    for n in existing_slots().await? {
        if range.contains(&n) && !keep.contains(&n) {
            remove(n).await?;
            removed.push(n);
        }
    }
    Ok(removed)
}
