//! 1. Create from the template snapshot: `wrenn-vmm` against the raw restore, interleaved.

use std::path::Path;

use anyhow::{Context, Result};
use wrenn_vmm::snapshot::{Snapshot, SnapshotSpec};

use super::capsule::Capsule;
use super::host::fresh_dir;
use super::ms;
use super::raw::raw_restore;

#[derive(Default)]
pub(super) struct Creates {
    pub(super) wrenn_total: Vec<f64>,
    pub(super) wrenn_files: Vec<f64>,
    pub(super) raw_total: Vec<f64>,
    pub(super) raw_files: Vec<f64>,
    /// Creates from a QEMU started ahead (what the warm pool hands out): load, resume, ready.
    pub(super) warm_total: Vec<f64>,
    /// PSS of each QEMU while it waited (KiB): an idle warm machine's memory.
    pub(super) warm_idle_pss_kib: Vec<u64>,
    /// Creates from a ready machine (what the warm pool hands out now: the guest already
    /// run up to envd and stopped): cont, ready.
    pub(super) ready_total: Vec<f64>,
    /// PSS of each ready machine while stopped (KiB).
    pub(super) ready_idle_pss_kib: Vec<u64>,
}

impl Creates {
    /// What an idle warm and a ready machine cost, for the notes.
    pub(super) fn warm_note(&self) -> String {
        let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;
        format!(
            "warm machine: a QEMU waiting for its state costs {:.1} MiB PSS (mean of {}; in the \
             agent it also holds a network slot); the warm rows time only load + cont + envd /health; \
             a ready machine (the pool's now: state loaded, guest run up to envd, stopped) {:.1} MiB PSS, \
             its rows time only cont + envd /health",
            mean(&self.warm_idle_pss_kib),
            self.warm_idle_pss_kib.len(),
            mean(&self.ready_idle_pss_kib),
        )
    }

    pub(super) fn wrenn_rest(&self) -> Vec<f64> {
        self.wrenn_total
            .iter()
            .zip(&self.wrenn_files)
            .map(|(t, f)| t - f)
            .collect()
    }
    pub(super) fn raw_rest(&self) -> Vec<f64> {
        self.raw_total
            .iter()
            .zip(&self.raw_files)
            .map(|(t, f)| t - f)
            .collect()
    }
}

pub(super) async fn creates(
    snap: &Snapshot,
    spec: &SnapshotSpec,
    work: &Path,
    runs: usize,
) -> Result<Creates> {
    let mut out = Creates::default();
    for i in 0..=runs {
        let warm_up = i == 0;
        // Alternate which side goes first, so that neither always follows the other.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let dir = fresh_dir(work, &format!("create-warm-{i:02}"))?;
        let (capsule, t, idle_pss) = Capsule::create_warm(snap, dir)
            .await
            .with_context(|| format!("warm create #{i}"))?;
        capsule.destroy().await?;
        if !warm_up {
            out.warm_total.push(ms(t));
            out.warm_idle_pss_kib.push(idle_pss);
        }
        let dir = fresh_dir(work, &format!("create-ready-{i:02}"))?;
        let (capsule, t, ready_pss) = Capsule::create_ready(snap, dir)
            .await
            .with_context(|| format!("ready create #{i}"))?;
        capsule.destroy().await?;
        if !warm_up {
            out.ready_total.push(ms(t));
            out.ready_idle_pss_kib.push(ready_pss);
        }
        for wrenn in order {
            if wrenn {
                let dir = fresh_dir(work, &format!("create-wrenn-{i:02}"))?;
                let (capsule, t) = Capsule::create(snap, dir)
                    .await
                    .with_context(|| format!("wrenn create #{i}"))?;
                capsule.destroy().await?;
                if !warm_up {
                    out.wrenn_total.push(ms(t.total));
                    out.wrenn_files.push(ms(t.files));
                }
            } else {
                let dir = fresh_dir(work, &format!("create-raw-{i:02}"))?;
                let (snap, spec) = (snap.clone(), spec.clone());
                let t = tokio::task::spawn_blocking(move || raw_restore(&snap, &spec, &dir))
                    .await
                    .context("the raw restore thread")?
                    .with_context(|| format!("raw restore #{i}"))?;
                if !warm_up {
                    out.raw_total.push(ms(t.total));
                    out.raw_files.push(ms(t.files));
                }
            }
        }
    }
    Ok(out)
}
