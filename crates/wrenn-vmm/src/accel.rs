//! Choosing KVM or TCG. KVM is used only when it really accelerates: `/dev/kvm` answers the KVM
//! API *and* the CPU has hardware virtualization (`vmx`/`svm`). A `/dev/kvm` backed by PVM (as on
//! nested cloud hosts) exists but cannot run stock kernels, so it does not count.

use std::{fs::OpenOptions, os::fd::AsRawFd};

/// How guest code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator to use here, with the reason, for the log.
pub fn detect() -> (Accel, String) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    let api = kvm_api_version();
    match (api, hw, pvm) {
        (Some(12), true, false) => (Accel::Kvm, "hardware KVM (vmx/svm, /dev/kvm API 12)".into()),
        (None, _, _) => (Accel::Tcg, "no usable /dev/kvm".into()),
        (Some(_), false, _) | (Some(_), _, true) => (
            Accel::Tcg,
            "/dev/kvm exists but the CPU has no vmx/svm (PVM or emulated KVM cannot run stock kernels)"
                .into(),
        ),
        (Some(v), true, false) => (Accel::Tcg, format!("unexpected KVM API version {v}")),
    }
}

fn kvm_api_version() -> Option<i32> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .ok()?;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    (v >= 0).then_some(v)
}
