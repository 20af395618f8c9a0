//! Periodic background work that must run once across control-plane replicas: each kind
//! runs only on the replica that holds its [`Lease`]; the others keep trying, and one takes
//! over when the holder stops renewing (it died) and the lease has expired.

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;

use crate::db::{Db, Lease};

/// The lease's lifetime for work done every `every`: a few missed rounds, at least 5 s.
pub fn ttl_for(every: Duration) -> Duration {
    (every * 5).max(Duration::from_secs(5))
}

/// Runs `work` every `every` on whichever replica holds lease `name` (`ttl` long, renewed
/// each round). The task's handle (aborting it stops this replica's part).
pub fn every_once<F, Fut>(
    db: &Db,
    name: &str,
    every: Duration,
    ttl: Duration,
    mut work: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let lease = Lease::new(db, name, ttl);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held = false;
        loop {
            tick.tick().await;
            match lease.try_acquire().await {
                Ok(true) => {
                    if !held {
                        tracing::info!(
                            lease = lease.name(),
                            holder = lease.holder(),
                            "took the lease: this replica does this work now"
                        );
                    }
                    held = true;
                    work().await;
                }
                Ok(false) => {
                    if held {
                        tracing::warn!(
                            lease = lease.name(),
                            holder = lease.holder(),
                            "lost the lease: another replica does this work now"
                        );
                    }
                    held = false;
                }
                Err(e) => {
                    tracing::warn!(lease = lease.name(), error = %e, "taking or renewing the lease");
                    held = false;
                }
            }
        }
    })
}
