//! The warm pool: per template shape (a snapshot folder), a few capsules' machines made ahead
//! — folder with the memory link and disk overlay, network slot, cgroup, and a VMM that has
//! loaded the template's state and run its guest until envd answered, then stopped
//! ([`capsule::Prepared::run_ready`]). A create (or nothing, when the pool is empty or off)
//! takes one, gives it its own egress, runs it on and gives its envd the capsule's identity:
//! no QEMU start, no state load, and under TCG none of the guest's code translated again.
//!
//! Refill is one machine at a time, only while no create is in flight, with a pause between
//! two, and only into the memory budget's free room (a machine counts like a capsule and ends
//! first when work needs the room: `capacity.rs`): it never competes with the work it is
//! there to speed up. A shape is kept warm once a
//! create has used it. A warm machine is in `capsules/<id>/` with no `capsule.json`, so an
//! agent that crashed leaves nothing a start does not remove (the folder, the QEMU under it,
//! the slot and the cgroup are swept like any capsule that cannot be adopted); a stop drains
//! it ([`Manager::drain_pool`]).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::Notify;
use wrenn_types::{Id, IdKind};
use wrenn_vmm::{
    snapshot::{Snapshot, SnapshotSpec},
    VmStatus, Vmm,
};

use super::Manager;
use crate::{
    capsule::{self, Prepared},
    netslot::Egress,
    templates::Resolved,
};

/// Pause between two refills.
const REFILL_GAP: Duration = Duration::from_millis(200);

/// One warm machine.
pub(crate) struct Warm {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
    pub(crate) slot_index: u32,
    pub(crate) prepared: Prepared,
    /// The template memory's inode when it was made (a rebuilt template is a new file: a
    /// warm machine of the old one is never used for the new state).
    memory_ino: (u64, u64),
}

/// The warm machines and which shapes to keep warm.
#[derive(Default)]
pub(crate) struct WarmPool {
    /// Machines per shape (0: the pool is off).
    size: AtomicUsize,
    entries: Mutex<HashMap<PathBuf, Vec<Warm>>>,
    /// The shapes to keep warm, with the envd token their snapshot's guest holds.
    shapes: Mutex<HashMap<PathBuf, (SnapshotSpec, Option<String>)>>,
    /// Creates in flight: refill waits while there are any.
    busy: AtomicUsize,
    wake: Notify,
}

fn inode(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl WarmPool {
    pub(crate) fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// How many warm machines there are now.
    pub(crate) fn count(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// A warm machine of the resolved snapshot, if one is ready (made from its current memory
    /// file, its VMM alive); remembers the shape to keep warm. Stale or dead machines found on
    /// the way are returned in `stale` for the caller to discard.
    pub(crate) fn take(&self, resolved: &Resolved, stale: &mut Vec<Warm>) -> Option<Warm> {
        let snap = &resolved.snapshot;
        // Remembered with the pool off too: turning it on warms the shapes creates used.
        self.shapes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                snap.template_dir.clone(),
                (resolved.spec.clone(), resolved.envd_token.clone()),
            );
        if self.size() == 0 {
            return None;
        }
        self.wake.notify_one();
        let now = inode(&snap.memory());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let list = entries.get_mut(&snap.template_dir)?;
        while let Some(w) = list.pop() {
            if Some(w.memory_ino) == now && w.prepared.vm.status() == VmStatus::Paused {
                return Some(w);
            }
            stale.push(w);
        }
        None
    }

    /// Each warm machine's guest memory, MiB.
    pub(crate) fn memory_mibs(&self) -> Vec<u32> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .map(|w| w.prepared.vm.config().memory_mib)
            .collect()
    }

    /// Any warm machine (to give its slot to a create, or its memory, when they run out).
    pub(crate) fn pop_any(&self) -> Option<Warm> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values_mut().find_map(Vec::pop)
    }

    /// Marks a create in flight until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        BusyGuard(self.clone())
    }
}

/// A create in flight (see [`WarmPool::busy`]).
pub(crate) struct BusyGuard(Arc<WarmPool>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

impl Manager {
    /// Sets how many warm machines to keep per template shape (0 turns the pool off and
    /// drains it).
    pub async fn set_pool_size(&self, size: usize) {
        self.pool.size.store(size, Ordering::Relaxed);
        if size == 0 {
            self.drain_pool().await;
        }
        self.pool.wake.notify_one();
    }

    /// Warm machines kept per template shape (0: no pool).
    pub fn pool_size(&self) -> usize {
        self.pool.size.load(Ordering::Relaxed)
    }

    /// Warm machines now (for tests and metrics).
    pub fn pool_count(&self) -> usize {
        self.pool.count()
    }

    /// Stops every warm machine and releases its slot, cgroup and folder.
    pub async fn drain_pool(&self) {
        let all: Vec<Warm> = {
            let mut entries = self.pool.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.drain().flat_map(|(_, v)| v).collect()
        };
        for w in all {
            self.discard_warm(w).await;
        }
    }

    pub(crate) async fn discard_warm(&self, w: Warm) {
        w.prepared.discard().await;
        let _ = std::fs::remove_dir_all(&w.dir);
        self.slots.free(w.slot_index);
    }

    /// Keeps the pool filled, in the background, for as long as the manager lives.
    pub fn spawn_pool_filler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = pool.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                loop {
                    let Some(manager) = weak.upgrade() else {
                        return;
                    };
                    if pool.busy.load(Ordering::SeqCst) > 0 {
                        break; // a create's end wakes the filler again
                    }
                    match manager.refill_one().await {
                        Some(true) => tokio::time::sleep(REFILL_GAP).await,
                        Some(false) => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break;
                        }
                        None => break,
                    }
                }
            }
        });
    }

    /// Makes one warm machine for a shape short of them: `Some(true)` made, `Some(false)`
    /// failed (logged), `None` nothing to do.
    async fn refill_one(&self) -> Option<bool> {
        let size = self.pool.size();
        if size == 0 {
            return None;
        }
        let want: Option<(PathBuf, (SnapshotSpec, Option<String>))> = {
            let shapes = self.pool.shapes.lock().unwrap_or_else(|e| e.into_inner());
            let entries = self.pool.entries.lock().unwrap_or_else(|e| e.into_inner());
            shapes
                .iter()
                .find(|(dir, _)| entries.get(*dir).map_or(0, Vec::len) < size)
                .map(|(d, s)| (d.clone(), s.clone()))
        };
        let (template_dir, (spec, envd_token)) = want?;
        // Only into memory the budget has free (a warm machine counts like a capsule), and
        // only below the capsule limit (beyond it no create could take the machine).
        self.check_capacity_for(spec.memory_mib, 1).ok()?;
        let snap = Snapshot { template_dir };
        if snap.spec().is_none() {
            // The template (or shape) is gone: keep nothing warm for it.
            self.pool
                .shapes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&snap.template_dir);
            return Some(false);
        }
        let memory_ino = inode(&snap.memory())?;
        let slot_index = self.slots.take().ok()?;
        let id = Id::new(IdKind::Capsule).to_string();
        let dir = self.config.data_dir.join("capsules").join(&id);
        let made = async {
            wrenn_vmm::files::private_dir(&dir)?;
            // Egress off while the template's guest runs here: whatever it starts by itself
            // reaches no network before a create gives it the capsule's own egress.
            let mut p = capsule::prepare(
                &dir,
                &snap,
                &spec,
                slot_index,
                Egress::default(),
                &self.runtime,
            )
            .await?;
            let ready = async {
                p.start_waiting().await?;
                p.run_ready(&snap, envd_token.as_deref()).await
            }
            .await;
            if let Err(e) = ready {
                p.discard().await;
                return Err(e);
            }
            crate::Result::Ok(p)
        }
        .await;
        match made {
            // Turned off (drained) while this one was being made: it is not kept either.
            Ok(prepared) if self.pool.size() == 0 => {
                prepared.discard().await;
                let _ = std::fs::remove_dir_all(&dir);
                self.slots.free(slot_index);
                None
            }
            Ok(prepared) => {
                tracing::debug!(%id, template = %snap.template_dir.display(), "warm machine ready");
                self.pool
                    .entries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(snap.template_dir.clone())
                    .or_default()
                    .push(Warm {
                        id,
                        dir,
                        slot_index,
                        prepared,
                        memory_ino,
                    });
                Some(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "making a warm machine failed");
                let _ = std::fs::remove_dir_all(&dir);
                self.slots.free(slot_index);
                Some(false)
            }
        }
    }
}
