//! What a VM is made of. Every capsule has the same guest address inside its own network,
//! so any snapshot restores into any slot.

use std::{net::SocketAddr, path::PathBuf};

use crate::accel::Accel;

/// The guest's address on its virtual network, the same in every capsule.
pub const GUEST_IP: &str = "169.254.0.21";
/// The guest's gateway (the host side of the TAP).
pub const GUEST_GATEWAY: &str = "169.254.0.22";
/// Prefix length of the guest network.
pub const GUEST_PREFIX: u8 = 30;
/// The guest NIC's MAC address (fixed: it is part of every snapshot).
pub const GUEST_MAC: &str = "02:fc:00:00:00:01";
/// Where envd listens inside the guest.
pub const ENVD_PORT: u16 = 49983;

/// Disk image formats QEMU is told about explicitly (never probed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// How the guest's NIC reaches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// No NIC.
    None,
    /// QEMU's user-mode network, isolated (`restrict=on`), with the guest's envd forwarded to
    /// `host` on the host. For development and the VM-layer tests; capsules use `Tap`.
    UserForward { host: SocketAddr },
    /// A TAP device inside a network namespace (QEMU runs inside that namespace).
    Tap { netns: String, tap: String },
}

/// How a VMM process is sized: what trades a little speed for density. The defaults are
/// measured (`wrenn-bench vm-tuning`; docs/vm.md "Memory per capsule").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// TCG's translated-code cache per VM, MiB (`-accel tcg,tb-size=N`; when full it is
    /// flushed and code translated again). KVM runs guest code natively and has none.
    pub tcg_tb_mib: u32,
    /// Whether the VMM may use transparent huge pages. QEMU asks for them on its TCG code
    /// buffer (`MADV_HUGEPAGE`), so each 2 MiB of it that holds any code is all resident; off
    /// (`PR_SET_THP_DISABLE`, set before QEMU starts), only the 4 KiB pages written are.
    pub huge_pages: bool,
}

/// [`Tuning::tcg_tb_mib`] by default.
pub const DEFAULT_TCG_TB_MIB: u32 = 32;

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            tcg_tb_mib: DEFAULT_TCG_TB_MIB,
            huge_pages: false,
        }
    }
}

impl Tuning {
    pub fn validate(&self) -> crate::Result<()> {
        if !(1..=2048).contains(&self.tcg_tb_mib) {
            return Err(crate::VmmError::Config(format!(
                "the TCG translation cache must be 1..=2048 MiB, not {}",
                self.tcg_tb_mib
            )));
        }
        Ok(())
    }
}

/// One VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The VM's own folder: memory file, QMP socket, console log.
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub disk_format: DiskFormat,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub net: Net,
    pub accel: Accel,
    /// The VMM program: for [`crate::Backend::Qemu`], the QEMU binary (`qemu-system-x86_64`
    /// from `PATH` by default).
    pub qemu: PathBuf,
    /// The groups the VMM runs in (CPU and memory caps); `None` runs it uncapped.
    pub cgroup: Option<crate::cgroup::Cgroup>,
    /// Density settings of the VMM process.
    pub tuning: Tuning,
}

impl VmConfig {
    /// The file that backs guest RAM (shared mapping: pausing never copies memory).
    pub fn memory_path(&self) -> PathBuf {
        self.dir.join("memory")
    }
    pub fn console_path(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn qmp_path(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn qemu_log_path(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }

    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::VmmError::Config(m));
        self.tuning.validate()?;
        if self.vcpus == 0 || self.vcpus > 64 {
            return bad(format!("vcpus must be 1..=64, not {}", self.vcpus));
        }
        if self.memory_mib < 64 || self.memory_mib > 256 * 1024 {
            return bad(format!(
                "memory must be 64..=262144 MiB, not {}",
                self.memory_mib
            ));
        }
        for (what, p) in [
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
            ("disk", &self.disk),
        ] {
            if !p.is_file() {
                return bad(format!("{what} {} does not exist", p.display()));
            }
        }
        if !self.dir.is_dir() {
            return bad(format!("VM folder {} does not exist", self.dir.display()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_bounds() {
        assert!(Tuning::default().validate().is_ok());
        assert!(
            !Tuning::default().huge_pages,
            "QEMU runs without huge pages by default"
        );
        for bad in [0, 2049] {
            let t = Tuning {
                tcg_tb_mib: bad,
                ..Tuning::default()
            };
            assert!(matches!(t.validate(), Err(crate::VmmError::Config(_))));
        }
    }
}
