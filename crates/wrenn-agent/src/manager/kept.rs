//! Kept VMMs: a capsule its user pauses saves its state to its files as always, and its
//! stopped VMM may stay alive too, so a resume only runs it on (no QEMU start, no state load,
//! no translating the guest's code again under TCG). At most `keep_paused` of them per host
//! (the oldest pause goes first), each for at most [`DEFAULT_KEPT_FOR`] unless set otherwise; the host's shutdown, a
//! snapshot, an export, a destroy or the VMM's death end one, and the capsule then resumes
//! from its files (a fork only copies those files and leaves the VMM kept). A kept VMM counts in the
//! host's memory budget like a running capsule and ends first when memory is short
//! ([`Manager::make_room`]). Off (0) unless configured.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use super::Manager;

/// The longest a paused capsule keeps its VMM, unless set otherwise
/// ([`Manager::set_keep_paused_for`]).
pub const DEFAULT_KEPT_FOR: Duration = Duration::from_secs(300);

/// Which paused capsules keep their VMM, oldest pause first.
#[derive(Default)]
pub(crate) struct Kept {
    /// Most kept at once (0: none).
    limit: AtomicUsize,
    /// The longest one is kept, seconds (0: [`DEFAULT_KEPT_FOR`]).
    for_secs: AtomicU64,
    order: Mutex<VecDeque<(String, Instant)>>,
}

impl Kept {
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    fn kept_for(&self) -> Duration {
        match self.for_secs.load(Ordering::Relaxed) {
            0 => DEFAULT_KEPT_FOR,
            s => Duration::from_secs(s),
        }
    }

    /// The capsules keeping their VMM now.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.lock().iter().map(|(id, _)| id.clone()).collect()
    }

    /// Takes out the oldest, to release.
    pub(crate) fn pop_oldest(&self) -> Option<String> {
        self.lock().pop_front().map(|(id, _)| id)
    }

    /// Forgets `id` (resumed, destroyed or released).
    pub(crate) fn forget(&self, id: &str) {
        self.lock().retain(|(k, _)| k != id);
    }

    /// Adds `id` and returns the capsules beyond the limit, to release.
    fn add(&self, id: &str) -> Vec<String> {
        let mut order = self.lock();
        order.retain(|(k, _)| k != id);
        order.push_back((id.to_owned(), Instant::now()));
        Self::beyond(&mut order, self.limit(), None)
    }

    /// Takes out those beyond `limit`, and with `now` and how long one may be kept, those
    /// kept longer.
    fn beyond(
        order: &mut VecDeque<(String, Instant)>,
        limit: usize,
        now: Option<(Instant, Duration)>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        while order.len() > limit
            || order
                .front()
                .zip(now)
                .is_some_and(|((_, at), (now, most))| now.duration_since(*at) >= most)
        {
            if let Some((id, _)) = order.pop_front() {
                out.push(id);
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Instant)>> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Manager {
    /// Sets how many paused capsules may keep their VMM (0: none, and those kept now are
    /// released).
    pub async fn set_keep_paused(&self, limit: usize) {
        self.kept.limit.store(limit, Ordering::Relaxed);
        let over = Kept::beyond(&mut self.kept.lock(), limit, None);
        self.release_all(over).await;
    }

    /// How many paused capsules may keep their VMM (0: none).
    pub fn keep_paused(&self) -> usize {
        self.kept.limit()
    }

    /// Sets the longest a paused capsule keeps its VMM (at least a second); the reaper ends
    /// those kept longer within a second.
    pub fn set_keep_paused_for(&self, most: Duration) {
        self.kept
            .for_secs
            .store(most.as_secs().max(1), Ordering::Relaxed);
    }

    /// The longest a paused capsule keeps its VMM.
    pub fn keep_paused_for(&self) -> Duration {
        self.kept.kept_for()
    }

    /// The paused capsules that keep their VMM now.
    pub fn kept_count(&self) -> usize {
        self.kept.lock().len()
    }

    /// A user's pause: the VMM is kept when the host keeps any.
    pub(super) async fn pause_keeping(
        &self,
        h: &crate::capsule::Handle,
    ) -> crate::error::Result<()> {
        if self.kept.limit() == 0 {
            return h.pause().await;
        }
        h.pause_keeping().await?;
        let over = self.kept.add(&h.record().id);
        self.release_all(over).await;
        Ok(())
    }

    /// Releases the VMMs kept longer than they may be (the reaper calls it every second).
    pub(super) async fn release_expired(&self) {
        let most = self.kept.kept_for();
        let over = Kept::beyond(
            &mut self.kept.lock(),
            self.kept.limit(),
            Some((Instant::now(), most)),
        );
        self.release_all(over).await;
    }

    /// Releases the VMM capsule `id` kept, if any (before its files are read or changed).
    pub(super) async fn release_kept(&self, id: &str) -> crate::error::Result<()> {
        self.kept.forget(id);
        self.handle(id)?.release().await
    }

    /// Releases every kept VMM (the host's shutdown).
    pub(super) async fn release_every_kept(&self) {
        let all: Vec<String> = self.kept.lock().drain(..).map(|(id, _)| id).collect();
        self.release_all(all).await;
    }

    pub(super) async fn release_all(&self, ids: Vec<String>) {
        for id in ids {
            if let Ok(h) = self.handle(&id) {
                if let Err(e) = h.release().await {
                    tracing::warn!(%id, error = %e, "releasing a kept VMM");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_beyond_the_limit_and_after_their_time() {
        let kept = Kept::default();
        kept.limit.store(2, Ordering::Relaxed);
        assert!(kept.add("a").is_empty());
        assert!(kept.add("b").is_empty());
        assert_eq!(kept.add("c"), vec!["a".to_string()]);
        // Paused again: it moves to the end.
        assert!(kept.add("b").is_empty());
        assert_eq!(kept.add("d"), vec!["c".to_string()]);
        kept.forget("b");
        assert_eq!(kept.lock().len(), 1);
        assert_eq!(kept.kept_for(), DEFAULT_KEPT_FOR);
        let later = Instant::now() + DEFAULT_KEPT_FOR;
        assert!(
            Kept::beyond(&mut kept.lock(), 2, Some((later, DEFAULT_KEPT_FOR * 2))).is_empty(),
            "not yet, with a longer time"
        );
        assert_eq!(
            Kept::beyond(&mut kept.lock(), 2, Some((later, DEFAULT_KEPT_FOR))),
            vec!["d".to_string()]
        );
        assert_eq!(
            Kept::beyond(&mut kept.lock(), 0, None),
            Vec::<String>::new()
        );
    }
}
