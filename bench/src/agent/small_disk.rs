//! The bench's own copy of a template with a smaller disk. The agent promises every capsule its
//! whole disk and RAM against the host's free space (`check_disk`), so fifty capsules of
//! `minimal` (2 GiB disk each) do not fit a host with tens of GB free. The copy (in the bench's
//! data dir, under the same name) has the template's kernel, initrd and files on an ext4 shrunk
//! to a smaller size, and its own snapshot booted afresh the way `make images` makes one: the
//! same guest and shape, so its creates cost what the template's do. A bench choice; the
//! product's promise is unchanged.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use wrenn_vmm::snapshot::{Snapshot, SnapshotSpec};

/// Disk of each capsule when the template's own does not fit the largest burst.
pub(super) const SMALL_DISK_MIB: u64 = 512;
/// What `check_disk` adds to a capsule's disk and RAM (its overlay's first writes, logs).
const CREATE_MARGIN_MIB: u64 = 64;

/// Whether `n` capsules of `disk_mib` and `spec`'s RAM fit the free space of `dir`'s
/// filesystem the way the agent counts it (each one's disk and RAM in full, and the reserve
/// it keeps: 5 % of the filesystem, at most 2 GiB).
pub(super) fn fits(dir: &Path, n: usize, disk_mib: u64, spec: &SnapshotSpec) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) reads the NUL-terminated path and writes into the struct we own.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading the free space of {}", dir.display()));
    }
    let total = st.f_blocks * st.f_frsize;
    let free = st.f_bavail * st.f_frsize;
    let reserve = (total / 20).min(2 << 30);
    let each = (disk_mib + u64::from(spec.memory_mib) + CREATE_MARGIN_MIB) << 20;
    Ok(reserve + each * n as u64 <= free)
}

/// Copies `template` from `images` into `into` with a `disk_mib` root disk and makes its
/// snapshot in network slot `slot` (free; released after). How long that took.
pub(super) async fn make(
    images: &Path,
    template: &str,
    into: &Path,
    disk_mib: u64,
    slot: u32,
) -> Result<Duration> {
    let started = Instant::now();
    let src = images.join(template);
    let spec = Snapshot {
        template_dir: src.clone(),
    }
    .spec()
    .with_context(|| format!("{} has no snapshot", src.display()))?;
    let dst = into.join(template);
    std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(src.join(f), dst.join(f)).with_context(|| format!("copying {f}"))?;
    }
    let rootfs = dst.join("rootfs.img");
    wrenn_vmm::files::copy_sparse(&src.join("rootfs.img"), &rootfs)?;
    shrink(&rootfs, disk_mib)?;
    let accel = wrenn_vmm::accel::detect().0;
    wrenn_agent::netslot::ensure_host_rules().await?;
    wrenn_agent::images::snapshot_in_slot(
        &dst,
        slot,
        spec.vcpus,
        spec.memory_mib,
        accel,
        wrenn_vmm::qemu::default_qemu(),
    )
    .await
    .context("snapshotting the small-disk copy")?;
    Ok(started.elapsed())
}

/// Shrinks the ext4 image `path` (a copy) to `mib`: checked, resized, the file cut to match.
fn shrink(path: &Path, mib: u64) -> Result<()> {
    let run = |program: &str, args: &[&str], ok: &[i32]| -> Result<()> {
        let out = Command::new(program)
            .args(args)
            .arg(path)
            .output()
            .with_context(|| format!("running {program}"))?;
        let code = out.status.code().unwrap_or(-1);
        ensure!(
            ok.contains(&code),
            "{program} {}: exit {code}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    };
    // e2fsck: 0 clean, 1 errors corrected. resize2fs wants a freshly checked filesystem.
    run("e2fsck", &["-f", "-y"], &[0, 1])?;
    let size = format!("{mib}M");
    let out = Command::new("resize2fs")
        .arg(path)
        .arg(&size)
        .output()
        .context("running resize2fs")?;
    ensure!(
        out.status.success(),
        "resize2fs {} {size}: {} (the files need more room: ask for a larger --disk-mib)",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(mib << 20))
        .with_context(|| format!("cutting {} to {size}", path.display()))?;
    Ok(())
}
