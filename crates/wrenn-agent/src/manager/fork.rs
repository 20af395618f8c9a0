//! Live fork: children that continue from a capsule's exact state, on this host.

use std::time::Duration;

use wrenn_types::{Id, IdKind};

use super::Manager;
use crate::{
    capsule::{self, CreateSpec},
    error::{AgentError, Result},
    record::CapsuleRecord,
    templates::Resolved,
};

/// Most children one fork makes.
pub const MAX_FORK_CHILDREN: u32 = 32;

/// What a fork made.
#[derive(Debug)]
pub struct Forked {
    pub children: Vec<CapsuleRecord>,
    /// How long the source's guest was stopped (zero for a paused source).
    pub source_paused_for: Duration,
    /// Where the fork's time went.
    pub phases: ForkPhases,
}

/// How long each step of a fork took.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForkPhases {
    /// The source's checkpoint (device state, own pages, disk copied).
    pub checkpoint: Duration,
    /// The fork image made of it (RAM flattened into one file).
    pub image: Duration,
    /// The children made from the image, all at once.
    pub children: Duration,
    /// The source's pause, step by step (zero for a paused source).
    pub pause: capsule::PauseSteps,
}

impl Manager {
    /// Makes `count` children of capsule `id` (running or paused): its state is checkpointed
    /// (a running source is stopped only for that, then runs on) into a fork image, and each
    /// child restores it with its own id, slot and envd token. Room for all of them (capsule
    /// limit, memory, disk, slots) is checked before anything is made; if any child fails,
    /// every child made is destroyed and the fork image removed. Run to its end by a task of
    /// its own ([`Manager::fork`]).
    pub(super) async fn fork_now(&self, id: &str, count: u32) -> Result<Forked> {
        if !(1..=MAX_FORK_CHILDREN).contains(&count) {
            return Err(AgentError::ForkCount {
                count,
                max: MAX_FORK_CHILDREN,
            });
        }
        let h = self.handle(id)?;
        let src = h.record();
        let n = count as usize;
        self.make_room(src.memory_mib, n).await?;
        self.check_disk(
            (u64::from(src.disk_mib) << 20) * u64::from(count),
            src.memory_mib.saturating_mul(count + 1),
        )?;
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            match self.slots.take() {
                Ok(s) => slots.push(s),
                Err(e) => {
                    slots.iter().for_each(|s| self.slots.free(*s));
                    return Err(e);
                }
            }
        }
        let made = self.fork_into(&h, &src, &slots).await;
        if made.is_err() {
            slots.iter().for_each(|s| self.slots.free(*s));
            self.collect_forks();
        }
        made
    }

    async fn fork_into(
        &self,
        h: &capsule::Handle,
        src: &CapsuleRecord,
        slots: &[u32],
    ) -> Result<Forked> {
        let t = std::time::Instant::now();
        let (work, cp_dir) = self.forks.begin()?;
        let cp = match h.checkpoint(cp_dir).await {
            Ok(cp) => cp,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        let checkpoint = t.elapsed();
        let snapshot = self.forks.finish(&work, &cp).await?;
        let image = snapshot.template_dir.clone();
        let made_image = t.elapsed();
        let made = self.make_children(src, slots, snapshot, cp).await;
        // From here the children's records name the image (or there are none).
        self.forks.done(&image);
        made.map(|mut f| {
            f.phases = ForkPhases {
                checkpoint,
                image: made_image - checkpoint,
                children: t.elapsed() - made_image,
                pause: f.phases.pause,
            };
            f
        })
    }

    async fn make_children(
        &self,
        src: &CapsuleRecord,
        slots: &[u32],
        snapshot: wrenn_vmm::snapshot::Snapshot,
        cp: capsule::Checkpointed,
    ) -> Result<Forked> {
        tracing::info!(source = %src.id, image = %snapshot.template_dir.display(), children = slots.len(), "fork image made");
        let resolved = Resolved {
            snapshot,
            spec: cp.spec.clone(),
            disk_bytes: u64::from(cp.record.disk_mib) << 20,
            envd_token: Some(cp.record.access_token.clone()),
        };
        let spec = CreateSpec {
            template: cp.record.template.clone(),
            kind: crate::templates::TemplateKind::Base,
            vcpus: cp.spec.vcpus,
            memory_mib: cp.spec.memory_mib,
            disk_mib: 0,
            env_vars: cp.record.env_vars.clone(),
            metadata: cp.record.metadata.clone(),
            egress: cp.record.egress,
            egress_policy: cp.record.egress_policy.clone(),
            timeout_secs: cp.record.timeout_secs,
            on_timeout: cp.record.on_timeout,
        };
        let capsules = self.config.data_dir.join("capsules");
        let creates = slots.iter().map(|slot| {
            let child = Id::new(IdKind::Capsule).to_string();
            capsule::create(
                child.clone(),
                capsules.join(&child),
                resolved.clone(),
                *slot,
                spec.clone(),
                &self.runtime,
                None,
            )
        });
        let results = futures_util::future::join_all(creates).await;
        let mut handles = Vec::new();
        let mut failed = None;
        for r in results {
            match r {
                Ok(h) => handles.push(h),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            tracing::warn!(source = %src.id, error = %e, "a fork child failed: undoing the fork");
            for h in handles {
                let _ = h.destroy().await;
            }
            return Err(e);
        }
        let mut children = Vec::new();
        let mut map = self.capsules.lock().unwrap_or_else(|e| e.into_inner());
        for h in handles {
            let rec = h.record();
            map.insert(rec.id.clone(), h);
            children.push(rec);
        }
        Ok(Forked {
            children,
            source_paused_for: cp.pause.total,
            phases: ForkPhases {
                pause: cp.pause,
                ..Default::default()
            },
        })
    }

    /// Removes the fork images nothing needs any more.
    pub(super) fn collect_forks(&self) {
        let records = self.list();
        self.forks.collect(|dir| {
            records.iter().any(|r| {
                r.snapshot_dir
                    .as_deref()
                    .is_some_and(|d| d.starts_with(dir))
            })
        });
    }
}
