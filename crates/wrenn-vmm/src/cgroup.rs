//! One cgroup per VMM: a CPU cap (vCPUs' worth of CPU time) and a memory cap (guest RAM plus
//! the VMM's own overhead).
//!
//! cgroup v2 is used when its `cpu` and `memory` controllers are available (`/sys/fs/cgroup/
//! wrenn/<name>`); hosts with only v1 controllers (like ours) get one group per controller,
//! nested under the agent's own group of that controller (`<mount>/<own path>/wrenn/<name>`).
//! A VMM joins its group before it execs (the spawner writes `0` to the group's
//! `cgroup.procs` from the child), so every byte it allocates is accounted.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use crate::error::{Result, VmmError};

const ROOT: &str = "/sys/fs/cgroup";
/// The folder under which every capsule's group lives.
const GROUP: &str = "wrenn";
/// The scheduler period the CPU cap is expressed in (µs).
const PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy a host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy with `cpu` and `memory` enabled.
    V2,
    /// Separate `cpu` and `memory` hierarchies.
    V1,
}

/// What a VMM may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU time, in CPUs (a VM with 2 vCPUs gets at most 2 CPUs' worth).
    pub cpus: u32,
    /// Memory, in bytes (guest RAM plus VMM overhead).
    pub memory_bytes: u64,
}

/// The groups of one VMM (one folder on v2, one per controller on v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub hierarchy: Hierarchy,
    pub dirs: Vec<PathBuf>,
}

fn v2_available() -> bool {
    std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers"))
        .map(|c| {
            let have: Vec<&str> = c.split_whitespace().collect();
            have.contains(&"cpu") && have.contains(&"memory")
        })
        .unwrap_or(false)
}

/// The agent's own group in a v1 controller's hierarchy (from `/proc/self/cgroup`).
fn own_v1_path(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _ = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| PathBuf::from(path.trim_start_matches('/')))
    })
}

/// The folders under which VMM groups are made, or `None` when the host offers no usable
/// cgroups (then VMs run without caps and the agent says so).
pub fn bases() -> Option<(Hierarchy, Vec<PathBuf>)> {
    if v2_available() {
        return Some((Hierarchy::V2, vec![Path::new(ROOT).join(GROUP)]));
    }
    let mut dirs = Vec::new();
    for controller in ["cpu", "memory"] {
        let mount = Path::new(ROOT).join(controller);
        if !mount.join("cgroup.procs").is_file() {
            return None;
        }
        let own = own_v1_path(controller)?;
        dirs.push(mount.join(own).join(GROUP));
    }
    Some((Hierarchy::V1, dirs))
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value)
        .map_err(|e| VmmError::io(format!("writing {value:?} to {}", path.display()), e))
}

fn ensure_base(hierarchy: Hierarchy, base: &Path) -> Result<()> {
    if base.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(base)
        .map_err(|e| VmmError::io(format!("creating cgroup {}", base.display()), e))?;
    if hierarchy == Hierarchy::V2 {
        // Children of `wrenn` need the controllers; the root hands them down to `wrenn` first.
        let _ = write(
            &Path::new(ROOT).join("cgroup.subtree_control"),
            "+cpu +memory",
        );
        write(&base.join("cgroup.subtree_control"), "+cpu +memory")?;
    }
    Ok(())
}

impl Cgroup {
    /// The groups called `name`, whether or not they exist.
    pub fn named(name: &str) -> Option<Cgroup> {
        let (hierarchy, bases) = bases()?;
        Some(Cgroup {
            hierarchy,
            dirs: bases.iter().map(|b| b.join(name)).collect(),
        })
    }

    /// Creates (or updates) the groups called `name` with `limits`.
    pub fn create(name: &str, limits: Limits) -> Result<Option<Cgroup>> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(VmmError::Config(format!("bad cgroup name {name:?}")));
        }
        let Some((hierarchy, bases)) = bases() else {
            return Ok(None);
        };
        let group = Cgroup {
            hierarchy,
            dirs: bases.iter().map(|b| b.join(name)).collect(),
        };
        for (base, dir) in bases.iter().zip(&group.dirs) {
            ensure_base(hierarchy, base)?;
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(VmmError::io(
                        format!("creating cgroup {}", dir.display()),
                        e,
                    ))
                }
            }
        }
        if let Err(e) = group.apply(limits) {
            group.remove();
            return Err(e);
        }
        group.weigh_parent();
        Ok(Some(group))
    }

    /// Gives the `wrenn` group the CPU weight of as many processes as it holds VM groups (at
    /// least one). Without it every VMM on the host shares the weight of a single process
    /// against the host's other work (the groups are siblings under one parent), so ten VMs
    /// restored at once get a tenth of what ten QEMUs outside any group would.
    fn weigh_parent(&self) {
        let Some(parent) = self.dirs.first().and_then(|d| d.parent()) else {
            return;
        };
        let groups = std::fs::read_dir(parent)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .count()
            })
            .unwrap_or(0)
            .max(1) as u64;
        let (file, weight) = match self.hierarchy {
            Hierarchy::V2 => ("cpu.weight", (100 * groups).min(10_000)),
            Hierarchy::V1 => ("cpu.shares", (1024 * groups).min(262_144)),
        };
        if let Err(e) = write(&parent.join(file), &weight.to_string()) {
            tracing::debug!(error = %e, "weighing the VMs' parent group");
        }
    }

    fn apply(&self, limits: Limits) -> Result<()> {
        let quota = u64::from(limits.cpus.max(1)) * PERIOD_US;
        match self.hierarchy {
            Hierarchy::V2 => {
                let dir = &self.dirs[0];
                write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                // Guest RAM is a file mapping: under pressure it is written back to its file
                // rather than swapped.
                let _ = write(&dir.join("memory.swap.max"), "0");
            }
            Hierarchy::V1 => {
                let (cpu, mem) = (&self.dirs[0], &self.dirs[1]);
                write(&cpu.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
            }
        }
        Ok(())
    }

    /// The limits the groups enforce now.
    pub fn limits(&self) -> Result<Limits> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_string())
                .map_err(|e| VmmError::io(format!("reading {}", p.display()), e))
        };
        let num = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| VmmError::Config(format!("unexpected {what} value {s:?}")))
        };
        let (quota, memory) = match self.hierarchy {
            Hierarchy::V2 => {
                let cpu = read(self.dirs[0].join("cpu.max"))?;
                let quota = cpu.split_whitespace().next().unwrap_or("max").to_string();
                (quota, read(self.dirs[0].join("memory.max"))?)
            }
            Hierarchy::V1 => (
                read(self.dirs[0].join("cpu.cfs_quota_us"))?,
                read(self.dirs[1].join("memory.limit_in_bytes"))?,
            ),
        };
        Ok(Limits {
            cpus: (num(&quota, "CPU quota")? / PERIOD_US) as u32,
            memory_bytes: num(&memory, "memory limit")?,
        })
    }

    /// Opens each group's `cgroup.procs` for the spawner: a child writes `0` to each before
    /// it execs, and so starts inside its groups.
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .map(OwnedFd::from)
                    .map_err(|e| VmmError::io(format!("opening {}/cgroup.procs", d.display()), e))
            })
            .collect()
    }

    /// The processes in the groups.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether `pid` is in every one of the groups.
    pub fn contains(&self, pid: u32) -> bool {
        self.dirs.iter().all(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .map(|t| t.lines().any(|l| l.trim() == pid.to_string()))
                .unwrap_or(false)
        })
    }

    /// Removes the groups. A group still holding a process (a VMM being reaped) is retried
    /// briefly; whatever is left is logged.
    pub fn remove(&self) {
        for dir in &self.dirs {
            if !dir.exists() {
                continue;
            }
            let mut last = None;
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if let Some(e) = last {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a cgroup");
            }
        }
        self.weigh_parent();
    }
}

/// The names of every VMM group on this host.
pub fn existing() -> Vec<String> {
    let Some((_, bases)) = bases() else {
        return Vec::new();
    };
    let mut names: Vec<String> = bases
        .iter()
        .filter_map(|b| std::fs::read_dir(b).ok())
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Writes `0` to each descriptor: the calling process joins the groups. Only
/// async-signal-safe calls, so it can run between fork and exec.
///
/// # Safety
/// Call only in a freshly forked child (e.g. from `pre_exec`); `fds` must be open.
pub unsafe fn join_from_child(fds: &[i32]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: write(2) of a static 1-byte buffer to an open descriptor.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raw descriptors of `fds` (they stay owned by the caller).
pub fn raw(fds: &[OwnedFd]) -> Vec<i32> {
    fds.iter().map(AsRawFd::as_raw_fd).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_caps_cpu_and_memory_and_holds_its_child() {
        if bases().is_none() {
            eprintln!("no usable cgroups here; skipping");
            return;
        }
        let name = format!("test-{}", std::process::id());
        let limits = Limits {
            cpus: 2,
            memory_bytes: 300 << 20,
        };
        let group = Cgroup::create(&name, limits).unwrap().unwrap();
        assert_eq!(group.limits().unwrap(), limits);
        assert!(existing().contains(&name));
        // A child joins before exec.
        let fds = group.open_procs().unwrap();
        let raw_fds = raw(&fds);
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: join_from_child only calls write(2).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                join_from_child(&raw_fds)
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(fds);
        assert!(group.contains(child.id()), "the child is in its group");
        assert_eq!(group.pids(), vec![child.id()]);
        child.kill().unwrap();
        child.wait().unwrap();
        group.remove();
        assert!(group.dirs.iter().all(|d| !d.exists()));
        assert!(!existing().contains(&name));
        assert!(Cgroup::create("../x", limits).is_err());
    }
}
