//! CPU seconds, by who used them: this process (the agent and the client), the capsule's QEMU,
//! reaped helper processes, the whole machine.

use std::{collections::HashMap, fs};

use serde_json::{json, Value};
use wrenn_agent::manager::Manager;

/// CPU seconds used during a transfer: by this process (the bench's client and the agent)
/// and by the capsule's QEMU.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cpu {
    pub(super) this: f64,
    pub(super) qemu: f64,
}

/// Reads the CPU time of this process (all threads) and of one QEMU.
pub(super) struct CpuMeter {
    pub(super) qemu_pid: u32,
}

impl CpuMeter {
    pub(super) fn read(&self) -> Cpu {
        Cpu {
            this: proc_cpu_secs(std::process::id()),
            qemu: proc_cpu_secs(self.qemu_pid),
        }
    }

    pub(super) fn since(&self, before: Cpu) -> Cpu {
        let now = self.read();
        Cpu {
            this: now.this - before.this,
            qemu: now.qemu - before.qemu,
        }
    }
}

/// Busy CPU seconds of the whole machine since boot (all CPUs: everything but idle and
/// iowait), from /proc/stat.
fn machine_busy_secs() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return 0.0;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    busy as f64 / hz as f64
}

/// utime + stime of a process, in seconds (0 when it cannot be read).
fn proc_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // "pid (comm) state ...": utime and stime are the 12th and 13th fields after comm.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(u), Some(s)) = (ticks(11), ticks(12)) else {
        return 0.0;
    };
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    (u + s) as f64 / hz as f64
}

/// CPU seconds a create used, by who used them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CreateCpu {
    /// The capsule's QEMU, up to the moment its create returned.
    pub(super) qemu: f64,
    /// This process: the agent (and the bench's gRPC client).
    pub(super) agent: f64,
    /// The agent's helper processes once reaped (`ip`, `nft`, `qemu-img`, ...).
    pub(super) helpers: f64,
    /// The whole machine, every process: other load on the host counts here too.
    pub(super) machine: f64,
}

impl CreateCpu {
    /// What the create itself used (QEMU, agent, helpers), without the host's other load.
    pub(super) fn own(&self) -> f64 {
        self.qemu + self.agent + self.helpers
    }

    pub(super) fn to_json(self) -> Value {
        json!({"qemu": self.qemu, "agent": self.agent, "helpers": self.helpers,
               "machine": self.machine})
    }
}

/// CPU counters of this process, its reaped children and the machine, read together.
#[derive(Clone, Copy)]
pub(super) struct CpuMark {
    this: f64,
    children: f64,
    machine: f64,
}

impl CpuMark {
    pub(super) fn now() -> CpuMark {
        CpuMark {
            this: proc_cpu_secs(std::process::id()),
            children: children_cpu_secs(),
            machine: machine_busy_secs(),
        }
    }

    /// The CPU used since `self`, plus `qemu` seconds of QEMU.
    pub(super) fn since(self, qemu: f64) -> CreateCpu {
        let now = CpuMark::now();
        CreateCpu {
            qemu,
            agent: now.this - self.this,
            helpers: now.children - self.children,
            machine: now.machine - self.machine,
        }
    }
}

/// user + system CPU seconds of this process's children that have been waited for.
fn children_cpu_secs() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writes into the rusage we own.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// The CPU seconds a capsule's QEMU has used so far (0 if it has none).
pub(super) fn qemu_cpu_secs(manager: &Manager, id: &str) -> f64 {
    qemu_cpu_since(manager, id, &HashMap::new())
}

/// The CPU seconds of every QEMU on the machine now, by pid.
pub(super) fn qemus_cpu_now() -> HashMap<u32, f64> {
    wrenn_vmm::qemu::processes_under(std::path::Path::new("/"))
        .into_iter()
        .map(|(pid, _)| (pid, proc_cpu_secs(pid)))
        .collect()
}

/// The CPU seconds a capsule's QEMU has used since `before` was read ([`qemus_cpu_now`]; a
/// QEMU not in it started since): a warm machine's work before its create does not count.
pub(super) fn qemu_cpu_since(manager: &Manager, id: &str, before: &HashMap<u32, f64>) -> f64 {
    manager
        .get(id)
        .ok()
        .and_then(|r| r.vmm_pid)
        .map_or(0.0, |pid| {
            proc_cpu_secs(pid) - before.get(&pid).copied().unwrap_or(0.0)
        })
}
