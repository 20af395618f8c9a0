//! Load held while a fault happens: requests counted by outcome, and the verdict on each phase.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::Answer;

/// Requests of a load run, by phase: before the fault, while it lasts, after it.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) answers: Vec<(u8, Result<Answer, String>)>,
}

/// `workers` tasks repeating `request` until `stop`; each answer is tagged with `phase`.
pub(super) fn load<F, Fut>(
    workers: usize,
    phase: Arc<std::sync::atomic::AtomicU8>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    request: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Answer, String>> + Send,
{
    (0..workers)
        .map(|w| {
            let (phase, stop, tally, request) =
                (phase.clone(), stop.clone(), tally.clone(), request.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let started = phase.load(Ordering::SeqCst);
                    let a = request(w, n).await;
                    // A request that straddles a boundary counts as during the fault.
                    let ended = phase.load(Ordering::SeqCst);
                    let p = if started == ended { started } else { 1 };
                    let failed = !matches!(&a, Ok(a) if a.ok());
                    tally.lock().unwrap().answers.push((p, a));
                    n += 1;
                    if failed {
                        // Errors come fast: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect()
}

/// Waits until `probe` succeeds (at most `within`).
pub(super) async fn until_ok<F, Fut>(within: Duration, probe: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Answer, String>>,
{
    let start = Instant::now();
    loop {
        if let Ok(a) = probe().await {
            if a.ok() {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < within, "no recovery within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sorts a load's answers: each must be a success or a clear 503 (`expect_code`), never a
/// hang or another error. Returns (total, ok, refused, slowest refusal in ms).
pub(super) fn judge(tally: &Tally, phase: u8, expect_code: &str) -> (usize, usize, usize, u128) {
    let (mut total, mut ok, mut refused, mut slowest) = (0, 0, 0, 0);
    for (p, a) in &tally.answers {
        if *p != phase {
            continue;
        }
        total += 1;
        match a {
            Ok(a) if a.ok() => ok += 1,
            Ok(a) => {
                assert_eq!(a.status, 503, "phase {phase}: {a:?}");
                assert_eq!(a.code(), expect_code, "phase {phase}: {a:?}");
                assert!(!a.message().is_empty());
                refused += 1;
                slowest = slowest.max(a.took.as_millis());
            }
            Err(e) => panic!("phase {phase}: a request hung or broke: {e}"),
        }
    }
    (total, ok, refused, slowest)
}
