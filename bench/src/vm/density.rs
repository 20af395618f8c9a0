//! 4. PSS of idle capsules: one alone, then many at once.

use std::{fs, net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result};
use wrenn_vmm::snapshot::Snapshot;

use super::capsule::{Capsule, Layout};
use super::host::{fresh_dir, health_204, meminfo, qemu_under, wait_no_qemu_under};
use super::ksm;

pub(super) struct Density {
    pub(super) alone_pss_kib: u64,
    pub(super) pss_kib: Vec<u64>,
    /// The part of `pss_kib` that is the guest RAM mapping (the memory file).
    pub(super) ram_pss_kib: Vec<u64>,
    pub(super) rss_kib: Vec<u64>,
    /// The part of `pss_kib` that is QEMU's TCG translated-code buffer.
    pub(super) tcg_pss_kib: Vec<u64>,
    /// PSS per capsule after KSM ran over them, and what that run did (`--ksm`).
    pub(super) ksm: Option<(Vec<u64>, ksm::KsmRun)>,
    pub(super) mem_total_kib: u64,
    pub(super) mem_available_kib: u64,
    pub(super) healthy: usize,
    pub(super) running: usize,
    pub(super) left_after_stop: usize,
}

pub(super) async fn density(
    snap: &Snapshot,
    work: &Path,
    n: usize,
    idle: Duration,
    layout: Layout,
    tuning: wrenn_vmm::Tuning,
    with_ksm: bool,
) -> Result<Density> {
    let (mem_total_kib, mem_available_kib) = meminfo()?;
    let group = fresh_dir(work, "idle")?;
    let mut capsules = Vec::with_capacity(n);
    let (first, _) = Capsule::create_in(snap, fresh_dir(&group, "c00")?, layout, tuning)
        .await
        .context("idle capsule #0")?;
    tokio::time::sleep(idle).await;
    let (_, alone_pss_kib) = first.rss_pss_kib()?;
    capsules.push(first);
    for i in 1..n {
        let (c, _) = Capsule::create_in(
            snap,
            fresh_dir(&group, &format!("c{i:02}"))?,
            layout,
            tuning,
        )
        .await
        .with_context(|| format!("idle capsule #{i}"))?;
        capsules.push(c);
    }
    tokio::time::sleep(idle).await;
    let mut pss_kib = Vec::with_capacity(n);
    let mut rss_kib = Vec::with_capacity(n);
    let mut ram_pss_kib = Vec::with_capacity(n);
    let mut tcg_pss_kib = Vec::with_capacity(n);
    for c in &capsules {
        let (rss, pss) = c.rss_pss_kib()?;
        rss_kib.push(rss);
        pss_kib.push(pss);
        ram_pss_kib.push(c.guest_ram_pss_kib()?);
        tcg_pss_kib.push(c.tcg_pss_kib()?);
    }
    let ksm = if with_ksm && ksm::available() {
        let run = tokio::task::spawn_blocking(|| ksm::merge_for(Duration::from_secs(90)))
            .await
            .context("the KSM thread")??;
        let mut after = Vec::with_capacity(n);
        for c in &capsules {
            after.push(c.rss_pss_kib()?.1);
        }
        Some((after, run))
    } else {
        None
    };
    let running = qemu_under(&group).len();
    let addrs: Vec<SocketAddr> = capsules.iter().map(|c| c.envd).collect();
    let healthy =
        tokio::task::spawn_blocking(move || addrs.into_iter().filter(|a| health_204(*a)).count())
            .await
            .context("the health check thread")?;
    for c in capsules {
        c.destroy().await?;
    }
    let left_after_stop = wait_no_qemu_under(&group, Duration::from_secs(3)).len();
    fs::remove_dir(&group).with_context(|| format!("removing {}", group.display()))?;
    Ok(Density {
        alone_pss_kib,
        pss_kib,
        ram_pss_kib,
        rss_kib,
        tcg_pss_kib,
        ksm,
        mem_total_kib,
        mem_available_kib,
        healthy,
        running,
        left_after_stop,
    })
}

fn mean_mib(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0
}

/// Where an idle capsule's PSS goes (template layout `d`), beside the own-file layout's `own`.
pub(super) fn split_note(d: &Density, own: &Density) -> String {
    let (mean, ram, tcg) = (
        mean_mib(&d.pss_kib),
        mean_mib(&d.ram_pss_kib),
        mean_mib(&d.tcg_pss_kib),
    );
    format!(
        "PSS split (template layout, mean of {}): guest RAM mapping {ram:.1} MiB (the template's \
         shared pages divided among the capsules + each one's own copy-on-write pages); TCG \
         translated-code buffer {tcg:.1} MiB; the rest of QEMU (heap, libraries, device state) \
         {:.1} MiB; own-file layout: guest RAM {:.1} MiB of its {:.1} MiB",
        d.pss_kib.len(),
        mean - ram - tcg,
        mean_mib(&own.ram_pss_kib),
        mean_mib(&own.pss_kib)
    )
}
