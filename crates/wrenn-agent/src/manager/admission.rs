//! How many creates do their work at once. A create is CPU-bound from its network slot to its
//! guest answering (QEMU's start and state load, the guest's first moments, envd's init): on
//! a host with few CPUs, creates beyond about one per CPU gain nothing and lose a lot — every
//! QEMU is descheduled mid-work, caches and TCG's translations go cold, the guests' timers
//! fire into the delay, so each create costs more CPU and all of them finish late. The rest
//! wait their turn in order (first come, first served), holding no slot, machine or memory.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Manager;

/// Creates at once by default: one per CPU, plus one that does its waiting (helper processes,
/// disk) while the others compute.
pub fn default_create_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) + 1
}

/// The turns of creates (see the module's text).
pub(crate) struct Admission {
    /// The limit (0: none) and its turns, replaced whole when the limit changes: creates
    /// holding a permit of the old one finish under it.
    turns: Mutex<(usize, Arc<Semaphore>)>,
}

impl Admission {
    pub(crate) fn new(parallelism: usize) -> Admission {
        Admission {
            turns: Mutex::new((parallelism, Arc::new(Semaphore::new(permits(parallelism))))),
        }
    }

    /// Waits for a create's turn; it lasts until the permit drops.
    pub(crate) async fn turn(&self) -> OwnedSemaphorePermit {
        let turns = self
            .turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone();
        turns
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the create semaphore is never closed"))
    }
}

/// 0: no limit.
fn permits(parallelism: usize) -> usize {
    match parallelism {
        0 => Semaphore::MAX_PERMITS,
        n => n,
    }
}

impl Manager {
    /// Sets how many creates run at once (0: no limit); the others wait their turn. Creates
    /// already running keep theirs.
    pub fn set_create_parallelism(&self, parallelism: usize) {
        *self
            .admission
            .turns
            .lock()
            .unwrap_or_else(|e| e.into_inner()) =
            (parallelism, Arc::new(Semaphore::new(permits(parallelism))));
    }

    /// How many creates run at once (0: no limit).
    pub fn create_parallelism(&self) -> usize {
        self.admission
            .turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn waits(admission: &Admission) -> bool {
        tokio::time::timeout(Duration::from_millis(50), admission.turn())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn turns_are_limited_and_given_back() {
        let a = Admission::new(2);
        let first = a.turn().await;
        let _second = a.turn().await;
        assert!(waits(&a).await, "a third create waits while two run");
        drop(first);
        let _third = a.turn().await;
        assert!(waits(&a).await);
    }

    #[tokio::test]
    async fn zero_is_no_limit() {
        let a = Admission::new(0);
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(a.turn().await);
        }
        assert!(!waits(&a).await);
    }

    #[tokio::test]
    async fn waiting_creates_go_in_order() {
        let a = Arc::new(Admission::new(1));
        let first = a.turn().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..5 {
            let (a, tx) = (a.clone(), tx.clone());
            tokio::spawn(async move {
                let turn = a.turn().await;
                let _ = tx.send(i);
                drop(turn);
            });
            // Each waiter queued before the next one is spawned.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(first);
        let mut order = Vec::new();
        for _ in 0..5 {
            order.push(rx.recv().await.unwrap());
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
    }
}
