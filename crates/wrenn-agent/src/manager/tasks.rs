//! The manager's background tasks: the timeout reaper and the resource sampler.

use wrenn_types::CapsuleStatus;

use super::Manager;
use crate::{capsule::Handle, error::Result, record};

impl Manager {
    /// Starts the reaper: every second, running capsules idle for longer than their timeout
    /// are paused or destroyed, as each asks, and VMMs kept too long are released.
    pub fn spawn_reaper(self: &std::sync::Arc<Self>) {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(mgr) = weak.upgrade() else { return };
                mgr.release_expired().await;
                let expired: Vec<(String, record::TimeoutAction)> = mgr
                    .capsules
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .filter_map(|h| {
                        let r = h.record();
                        (r.state == CapsuleStatus::Running
                            && r.timeout_secs > 0
                            && h.idle_secs() >= i64::from(r.timeout_secs))
                        .then_some((r.id, r.on_timeout))
                    })
                    .collect();
                for (id, action) in expired {
                    tracing::info!(%id, ?action, "capsule timed out");
                    let result = match action {
                        // Nobody is there to resume it soon: its VMM is not kept.
                        record::TimeoutAction::Pause => match mgr.handle(&id) {
                            Ok(h) => h.pause().await,
                            Err(e) => Err(e),
                        },
                        record::TimeoutAction::Destroy => mgr.destroy(&id).await,
                    };
                    if let Err(e) = result {
                        tracing::warn!(%id, error = %e, "timeout action failed; destroying");
                        let _ = mgr.destroy(&id).await;
                    }
                }
            }
        });
    }

    /// Starts the sampler: every second, each running capsule's VMM CPU, memory and disk use.
    pub fn spawn_sampler(self: &std::sync::Arc<Self>) {
        let weak = std::sync::Arc::downgrade(self);
        let data_dir = self.config.data_dir.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(mgr) = weak.upgrade() else { return };
                let handles: Vec<Handle> = mgr
                    .capsules
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect();
                drop(mgr);
                for h in handles {
                    let r = h.record();
                    let (Some(pid), CapsuleStatus::Running) = (r.vmm_pid, r.state) else {
                        continue;
                    };
                    let disk = data_dir.join("capsules").join(&r.id).join("disk.qcow2");
                    let mut m = h.metrics.lock().unwrap_or_else(|e| e.into_inner());
                    let (history, clock) = &mut *m;
                    if let Some(p) = crate::metrics::sample(pid, r.vcpus, &disk, clock) {
                        history.record(p);
                    }
                }
            }
        });
    }

    /// A capsule's resource use over the last `range_secs`.
    pub fn metrics(&self, id: &str, range_secs: i64) -> Result<Vec<crate::metrics::Point>> {
        let h = self.handle(id)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let m = h.metrics.lock().unwrap_or_else(|e| e.into_inner());
        Ok(m.0.range(range_secs, now))
    }
}
