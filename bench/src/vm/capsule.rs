//! Capsules made through `wrenn-vmm` (the Wrenn side of every figure).

use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use wrenn_vmm::{
    qemu::default_qemu,
    snapshot::{self, Snapshot},
    Net, QemuVm, Tuning, Vmm,
};

use super::host::{anon_exec_pss_kib, free_addr, mapping_pss_kib, rss_pss_kib};
use super::READY;

/// A capsule made through `wrenn-vmm`, running, with envd ready. Dropping it kills its QEMU
/// (`QemuVm`'s own drop); its directory goes with the scratch dir.
pub(super) struct Capsule {
    pub(super) vm: QemuVm,
    pub(super) envd: SocketAddr,
    pub(super) dir: PathBuf,
}

/// How long a create took: the files step (memory copy and overlay) and all of it.
pub(super) struct Phases {
    pub(super) files: Duration,
    pub(super) total: Duration,
}

impl Capsule {
    pub(super) async fn create(snap: &Snapshot, dir: PathBuf) -> Result<(Capsule, Phases)> {
        Capsule::create_in(snap, dir, Layout::Template, Tuning::default()).await
    }

    /// A capsule with guest RAM laid out as `layout`, its QEMU sized by `tuning`.
    pub(super) async fn create_in(
        snap: &Snapshot,
        dir: PathBuf,
        layout: Layout,
        tuning: Tuning,
    ) -> Result<(Capsule, Phases)> {
        let envd = free_addr()?;
        let t = Instant::now();
        let mut config =
            snapshot::prepare_capsule(snap, &dir, Net::UserForward { host: envd }, default_qemu())
                .context("preparing the capsule")?;
        config.tuning = tuning;
        if layout == Layout::Own {
            // The layout before template memory was shared: a whole copy of the template's
            // memory file, allocated, mapped shared.
            wrenn_vmm::memory::make_own(&dir).context("copying the memory file")?;
        }
        let files = t.elapsed();
        let mut vm = QemuVm::new(config)?;
        vm.restore(&snap.state()).await.context("restoring")?;
        vm.resume().await.context("resuming")?;
        vm.wait_ready(envd, READY)
            .await
            .context("waiting for envd")?;
        let total = t.elapsed();
        Ok((Capsule { vm, envd, dir }, Phases { files, total }))
    }

    /// What a warm pool hands out: the capsule's files made and its QEMU started, waiting
    /// for the state (untimed, as a pool does it ahead of time); then only the timed part:
    /// load the state, resume, envd answers. Returns the capsule and that time.
    /// Also returns the PSS (KiB) of the waiting QEMU: what one warm machine costs.
    pub(super) async fn create_warm(
        snap: &Snapshot,
        dir: PathBuf,
    ) -> Result<(Capsule, Duration, u64)> {
        let envd = free_addr()?;
        let config =
            snapshot::prepare_capsule(snap, &dir, Net::UserForward { host: envd }, default_qemu())
                .context("preparing the capsule")?;
        let mut vm = QemuVm::new(config)?;
        vm.start_waiting().await.context("starting QEMU waiting")?;
        let (_, waiting_pss) = rss_pss_kib(vm.pid().context("no waiting QEMU")?)?;
        let t = Instant::now();
        vm.restore(&snap.state()).await.context("restoring")?;
        vm.resume().await.context("resuming")?;
        vm.wait_ready(envd, READY)
            .await
            .context("waiting for envd")?;
        Ok((Capsule { vm, envd, dir }, t.elapsed(), waiting_pss))
    }

    /// What the agent's warm pool hands out now: as [`Capsule::create_warm`], and then, still
    /// untimed, the state loaded, the guest run until envd answers and stopped there (a ready
    /// machine); timed: `cont` and envd answering. Also returns the PSS (KiB) of the stopped
    /// ready QEMU.
    pub(super) async fn create_ready(
        snap: &Snapshot,
        dir: PathBuf,
    ) -> Result<(Capsule, Duration, u64)> {
        let (mut c, _, _) = Capsule::create_warm(snap, dir).await?;
        c.vm.pause().await.context("stopping the ready machine")?;
        let (_, ready_pss) = c.rss_pss_kib()?;
        let t = Instant::now();
        c.vm.resume().await.context("running it on")?;
        c.vm.wait_ready(c.envd, READY)
            .await
            .context("waiting for envd")?;
        Ok((c, t.elapsed(), ready_pss))
    }

    /// Stops the VM and deletes its directory.
    pub(super) async fn destroy(mut self) -> Result<()> {
        self.vm.stop().await?;
        fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }

    pub(super) fn rss_pss_kib(&self) -> Result<(u64, u64)> {
        let pid = self.vm.pid().context("the capsule has no QEMU")?;
        rss_pss_kib(pid)
    }

    /// The PSS of the guest RAM mapping (the capsule's memory file, or the template's mapped
    /// privately), in KiB.
    pub(super) fn guest_ram_pss_kib(&self) -> Result<u64> {
        let pid = self.vm.pid().context("the capsule has no QEMU")?;
        let layout = wrenn_vmm::memory::MemoryLayout::of(&self.dir);
        mapping_pss_kib(pid, layout.mapped_file())
    }

    /// The PSS of QEMU's TCG translated-code buffer (its anonymous executable mappings), KiB.
    pub(super) fn tcg_pss_kib(&self) -> Result<u64> {
        let pid = self.vm.pid().context("the capsule has no QEMU")?;
        anon_exec_pss_kib(pid)
    }
}

/// How a bench capsule's guest RAM is laid out (`wrenn_vmm::memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// The template's memory file mapped privately (what capsules use).
    Template,
    /// A whole copy per capsule, mapped shared (the layout before; the baseline).
    Own,
}
