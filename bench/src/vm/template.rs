//! 3. Template build against a plain cold boot of the same image until envd answers.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use wrenn_vmm::{
    accel::Accel,
    qemu::default_qemu,
    snapshot::{self, Snapshot, SnapshotSpec},
    DiskFormat, Net, QemuVm, VmConfig, Vmm,
};

use super::host::{copy_files, cp_sparse, free_addr, fresh_dir, template_boot};
use super::READY;

pub(super) struct TemplateBuilds {
    pub(super) cold_boot: Vec<f64>,
    pub(super) build: Vec<f64>,
    pub(super) memory_allocated: u64,
}

pub(super) async fn template_builds(
    template_dir: &Path,
    work: &Path,
    accel: Accel,
    spec: &SnapshotSpec,
    runs: usize,
) -> Result<TemplateBuilds> {
    let copy = fresh_dir(work, "template-copy")?;
    copy_files(
        template_dir,
        &copy,
        &["vmlinuz", "initrd.img", "rootfs.img"],
    )
    .await?;
    let made = Snapshot {
        template_dir: copy.clone(),
    };
    let mut out = TemplateBuilds {
        cold_boot: Vec::new(),
        build: Vec::new(),
        memory_allocated: 0,
    };
    for i in 0..runs {
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for wrenn in order {
            if wrenn {
                // Wrenn: the whole template snapshot, on the copy (never the real template).
                let _ = fs::remove_dir_all(made.dir());
                let boot = template_boot(accel, spec.vcpus, spec.memory_mib)?;
                let t = Instant::now();
                snapshot::make_template_snapshot(&copy, &boot)
                    .await
                    .with_context(|| format!("make_template_snapshot on the copy, #{i}"))?;
                out.build.push(t.elapsed().as_secs_f64());
                ensure!(
                    made.spec().is_some(),
                    "the copy's snapshot is incomplete after make_template_snapshot"
                );
                out.memory_allocated = fs::metadata(made.memory())
                    .map(|m| m.blocks() * 512)
                    .unwrap_or(0);
            } else {
                let t = cold_boot(&copy, work, accel, spec, i).await?;
                out.cold_boot.push(t.as_secs_f64());
            }
        }
    }
    fs::remove_dir_all(&copy)?;
    Ok(out)
}

/// Baseline: a plain cold boot of the template copy (on a fresh copy of its disk, not timed)
/// until envd answers; then the VM is stopped and its directory deleted.
pub(super) async fn cold_boot(
    copy: &Path,
    work: &Path,
    accel: Accel,
    spec: &SnapshotSpec,
    i: usize,
) -> Result<Duration> {
    let dir = fresh_dir(work, &format!("cold-boot-{i:02}"))?;
    {
        let (from, to) = (copy.join("rootfs.img"), dir.join("disk.img"));
        tokio::task::spawn_blocking(move || cp_sparse(&from, &to))
            .await
            .context("the copying thread")??;
    }
    let addr = free_addr()?;
    let mut vm = QemuVm::new(VmConfig {
        dir: dir.clone(),
        kernel: copy.join("vmlinuz"),
        initrd: copy.join("initrd.img"),
        disk: dir.join("disk.img"),
        disk_format: DiskFormat::Raw,
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        net: Net::UserForward { host: addr },
        accel,
        qemu: default_qemu(),
        cgroup: None,
        tuning: Default::default(),
    })?;
    let t = Instant::now();
    vm.boot().await.with_context(|| format!("cold boot #{i}"))?;
    vm.wait_ready(addr, READY)
        .await
        .with_context(|| format!("envd after cold boot #{i}"))?;
    let elapsed = t.elapsed();
    vm.stop().await?;
    drop(vm);
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(elapsed)
}
