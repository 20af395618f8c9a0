//! QEMU's command line for one VM: a `-M microvm` machine with its RAM in a shared memory file,
//! a virtio-mmio disk and NIC, QMP on a Unix socket and QEMU's seccomp sandbox on.

use super::{tsc_khz, QemuVm, MACHINE};
use crate::{
    accel::Accel,
    config::{Net, GUEST_GATEWAY, GUEST_IP, GUEST_MAC, GUEST_PREFIX},
    memory::MemoryLayout,
};

impl QemuVm {
    pub(super) fn args(&self, incoming: bool) -> Vec<String> {
        let c = &self.config;
        let mem = format!("{}M", c.memory_mib);
        let mut machine = format!("{MACHINE},memory-backend=mem0");
        let mut kernel_args = format!(
            "console=ttyS0 quiet panic=-1 init_on_free=1 wrenn.ip={GUEST_IP}/{GUEST_PREFIX},{GUEST_GATEWAY}"
        );
        let mut a: Vec<String> = Vec::new();
        match c.accel {
            Accel::Kvm => a.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]),
            Accel::Tcg => {
                machine.push_str(",pit=on,pic=on,rtc=on");
                kernel_args.push_str(&format!(" tsc_early_khz={}", tsc_khz()));
                // A bounded translation cache keeps QEMU's own memory small (the default grows
                // to hundreds of MiB per VM).
                a.extend([
                    "-accel".into(),
                    format!("tcg,tb-size={}", c.tuning.tcg_tb_mib),
                    "-cpu".into(),
                    "max".into(),
                ]);
            }
        }
        a.extend([
            "-M".into(),
            machine,
            "-m".into(),
            mem.clone(),
            "-smp".into(),
            c.vcpus.to_string(),
            "-object".into(),
            {
                // Own layout: the VM's file, shared (pause writes nothing). Template layout:
                // the template's file, private (copy-on-write; never written back).
                let layout = MemoryLayout::of(&c.dir);
                let share = match layout {
                    MemoryLayout::Own(_) => "on",
                    MemoryLayout::Template { .. } => "off",
                };
                format!(
                    "memory-backend-file,id=mem0,size={mem},mem-path={},share={share}",
                    layout.mapped_file().display()
                )
            },
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-chardev".into(),
            format!("file,id=con0,path={},append=on", c.console_path().display()),
            "-serial".into(),
            "chardev:con0".into(),
            "-drive".into(),
            format!(
                "id=root,file={},format={},if=none,cache=writeback,discard=unmap",
                c.disk.display(),
                c.disk_format.as_str()
            ),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", c.qmp_path().display()),
            "-sandbox".into(),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
        ]);
        // A restore brings the running kernel back in guest memory: loading the kernel and
        // initrd again would only cost QEMU ~15 MiB of copies it keeps for a reboot.
        if !incoming {
            a.extend([
                "-kernel".into(),
                c.kernel.display().to_string(),
                "-initrd".into(),
                c.initrd.display().to_string(),
                "-append".into(),
                kernel_args,
            ]);
        }
        match &c.net {
            Net::None => {}
            Net::UserForward { host } => a.extend([
                "-netdev".into(),
                format!(
                    "user,id=n0,net=169.254.0.0/24,host={GUEST_GATEWAY},dhcpstart=169.254.0.100,restrict=on,hostfwd=tcp:{}:{}-{GUEST_IP}:{}",
                    host.ip(),
                    host.port(),
                    crate::config::ENVD_PORT
                ),
            ]),
            Net::Tap { tap, .. } => a.extend([
                "-netdev".into(),
                format!("tap,id=n0,ifname={tap},script=no,downscript=no,vnet_hdr=off"),
            ]),
        }
        if c.net != Net::None {
            a.extend([
                "-device".into(),
                format!("virtio-net-device,netdev=n0,mac={GUEST_MAC}"),
            ]);
        }
        if incoming {
            // `-S`: a loaded state stays paused until `cont`, whatever run state it recorded.
            a.extend(["-S".into(), "-incoming".into(), "defer".into()]);
        }
        a
    }
}
