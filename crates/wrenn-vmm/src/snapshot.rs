//! Template snapshots and capsules made from them.
//!
//! A template folder holds `vmlinuz`, `initrd.img` and `rootfs.img`. Its snapshot
//! (`snapshot/{disk.img, memory, state, vm.json}`) is made once: boot a copy of the root disk,
//! wait for envd, pause, save. A capsule is then a restore of that snapshot with its own
//! copy-on-write disk (a qcow2 overlay on the snapshot disk) and its own copy of the memory file
//! (a reflink where the filesystem allows, else a sparse copy).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    accel::Accel,
    config::{DiskFormat, Net, VmConfig},
    error::{Result, VmmError},
    files, Backend, Vmm,
};

/// Bumped whenever what goes into a snapshot changes (kernel arguments, devices): older
/// snapshots are then remade.
pub const SNAPSHOT_FORMAT: u32 = 4;

/// The machine shape a snapshot was taken with; restores must use the same.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotSpec {
    pub format: u32,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub accel: String,
}

/// Paths of a template's snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub template_dir: PathBuf,
}

impl Snapshot {
    pub fn dir(&self) -> PathBuf {
        self.template_dir.join("snapshot")
    }
    /// The snapshot's disk: raw `disk.img`, or for a fork image the checkpointed qcow2
    /// overlay (`disk.qcow2`, on its own backing file).
    pub fn disk(&self) -> PathBuf {
        let overlay = self.dir().join(crate::checkpoint::DISK);
        if overlay.is_file() {
            overlay
        } else {
            self.dir().join("disk.img")
        }
    }
    pub fn memory(&self) -> PathBuf {
        self.dir().join("memory")
    }
    pub fn state(&self) -> PathBuf {
        self.dir().join("state")
    }
    fn spec_path(&self) -> PathBuf {
        self.dir().join("vm.json")
    }

    /// The snapshot's machine shape (`vm.json`) if it is of this version, whether or not its
    /// memory and state are there: what a capsule's VM is configured from (a capsule moved
    /// from another host keeps only its template's kernel, initrd, disk and `vm.json`).
    pub fn machine(&self) -> Option<SnapshotSpec> {
        let text = std::fs::read_to_string(self.spec_path()).ok()?;
        let spec: SnapshotSpec = serde_json::from_str(&text).ok()?;
        (spec.format == SNAPSHOT_FORMAT && self.disk().is_file()).then_some(spec)
    }

    /// The snapshot's machine shape, if it is complete.
    pub fn spec(&self) -> Option<SnapshotSpec> {
        let spec = self.machine()?;
        (self.disk().is_file() && self.memory().is_file() && self.state().is_file()).then_some(spec)
    }
}

/// Options for making a template's snapshot.
#[derive(Debug, Clone)]
pub struct TemplateBoot {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub accel: Accel,
    pub qemu: PathBuf,
    /// The network to boot with. Use the kind capsules will use: a snapshot restores only into
    /// a VM whose network keeps no device state of its own (a TAP does not; QEMU's user network
    /// saves its state, so a snapshot made with it restores only into user networking).
    pub net: Net,
    /// Where envd answers while booting.
    pub envd: SocketAddr,
    pub ready_timeout: Duration,
}

/// Boots the template once, waits for envd, pauses and saves: the template's ready snapshot.
/// Replaces any previous snapshot only once the new one is complete.
pub async fn make_template_snapshot(template_dir: &Path, boot: &TemplateBoot) -> Result<Snapshot> {
    make_template_snapshot_then(template_dir, boot, || async { Ok(()) }).await
}

/// [`make_template_snapshot`], with `prepare` run once envd answers and before the pause (to
/// set what the snapshot's envd holds); its error stops the VM and fails the snapshot.
pub async fn make_template_snapshot_then<F, Fut>(
    template_dir: &Path,
    boot: &TemplateBoot,
    prepare: F,
) -> Result<Snapshot>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let snap = Snapshot {
        template_dir: template_dir.to_path_buf(),
    };
    let work = template_dir.join(".snapshot-new");
    let _ = std::fs::remove_dir_all(&work);
    // Guest memory, disk and device state: a 0700 folder of 0600 files.
    files::private_dir(&work)?;
    let result = async {
        files::copy_sparse(&template_dir.join("rootfs.img"), &work.join("disk.img"))?;
        let mut vm = Backend::default().create(VmConfig {
            dir: work.clone(),
            kernel: template_dir.join("vmlinuz"),
            initrd: template_dir.join("initrd.img"),
            disk: work.join("disk.img"),
            disk_format: DiskFormat::Raw,
            vcpus: boot.vcpus,
            memory_mib: boot.memory_mib,
            net: boot.net.clone(),
            accel: boot.accel,
            qemu: boot.qemu.clone(),
            cgroup: None,
            tuning: Default::default(),
        })?;
        vm.boot().await?;
        let ready = vm.wait_ready(boot.envd, boot.ready_timeout).await;
        if let Err(e) = ready {
            let _ = vm.stop().await;
            return Err(e);
        }
        if let Err(e) = prepare().await {
            let _ = vm.stop().await;
            return Err(VmmError::Prepare(e));
        }
        vm.pause().await?;
        vm.save(&work.join("state")).await?;
        let allocated = files::punch_zero_pages(&work.join("memory"))?;
        tracing::info!(
            template = %template_dir.display(),
            memory_bytes = allocated,
            "template snapshot saved"
        );
        let spec = SnapshotSpec {
            format: SNAPSHOT_FORMAT,
            vcpus: boot.vcpus,
            memory_mib: boot.memory_mib,
            accel: boot.accel.as_str().into(),
        };
        files::write_private(
            &work.join("vm.json"),
            &serde_json::to_vec_pretty(&spec).unwrap_or_default(),
        )?;
        for f in ["qmp.sock", "console.log", "qemu.log"] {
            let _ = std::fs::remove_file(work.join(f));
        }
        files::private_tree(&work)
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(snap.dir());
    std::fs::rename(&work, snap.dir()).map_err(|e| VmmError::io("publishing the snapshot", e))?;
    Ok(snap)
}

/// The VM configuration of a capsule made from `snap` in `capsule_dir`.
pub fn capsule_config(
    snap: &Snapshot,
    capsule_dir: &Path,
    net: Net,
    qemu: PathBuf,
) -> Result<VmConfig> {
    let spec = snap.machine().ok_or_else(|| {
        VmmError::Config(format!(
            "template at {} has no complete snapshot",
            snap.template_dir.display()
        ))
    })?;
    let accel = match spec.accel.as_str() {
        "kvm" => Accel::Kvm,
        _ => Accel::Tcg,
    };
    Ok(VmConfig {
        dir: capsule_dir.to_path_buf(),
        kernel: snap.template_dir.join("vmlinuz"),
        initrd: snap.template_dir.join("initrd.img"),
        disk: capsule_dir.join("disk.qcow2"),
        disk_format: DiskFormat::Qcow2,
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        net,
        accel,
        qemu,
        cgroup: None,
        tuning: Default::default(),
    })
}

/// Prepares `capsule_dir` to restore `snap`: a link to the template's memory and a qcow2
/// overlay disk.
/// Returns the VM configuration to restore with.
pub fn prepare_capsule(
    snap: &Snapshot,
    capsule_dir: &Path,
    net: Net,
    qemu: PathBuf,
) -> Result<VmConfig> {
    let config = capsule_config(snap, capsule_dir, net, qemu)?;
    files::private_dir(capsule_dir)?;
    // Guest RAM is a private mapping of the template's memory file (see `memory`): pages the
    // guest never writes stay shared with every capsule of the template.
    crate::memory::link_template(&snap.memory(), capsule_dir)?;
    create_overlay(&snap.disk(), &config.disk, None)?;
    Ok(config)
}

/// `qemu-img create -f qcow2 -b BASE -F raw OVERLAY [SIZE]`: a copy-on-write disk over `base`
/// (`-F qcow2` when `base` is a checkpointed overlay, `*.qcow2`), as large as `base` or
/// `size` bytes.
pub fn create_overlay(base: &Path, overlay: &Path, size: Option<u64>) -> Result<()> {
    let format = if base.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(base)
        .arg(overlay);
    if let Some(size) = size {
        cmd.arg(size.to_string());
    }
    let out = cmd.output().map_err(|e| VmmError::Spawn {
        program: "qemu-img".into(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(VmmError::Config(format!(
            "qemu-img create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    files::private_file(overlay)
}
