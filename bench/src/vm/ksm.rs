//! KSM (kernel samepage merging) as the alternative way to share guest memory: switched on
//! for a while over idle capsules, its effect on their PSS and the CPU `ksmd` spent.
//! QEMU marks guest RAM mergeable (`mem-merge`, on by default); KSM merges only anonymous
//! private pages, so it can act on a capsule's own (copy-on-write) pages, never on a shared
//! file mapping. The previous `run` setting is put back afterwards.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

const KSM: &str = "/sys/kernel/mm/ksm";

fn read(name: &str) -> Result<u64> {
    let p = Path::new(KSM).join(name);
    fs::read_to_string(&p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parsing {}", p.display()))
}

fn write(name: &str, value: &str) -> Result<()> {
    let p = Path::new(KSM).join(name);
    fs::write(&p, value).with_context(|| format!("writing {}", p.display()))
}

/// CPU seconds `ksmd` has used, from its /proc stat (utime + stime).
fn ksmd_cpu_s() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0.0;
    };
    for e in entries.flatten() {
        let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "ksmd" {
            continue;
        }
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields after the command: state is 0, utime 11, stime 12.
        return (get(11) + get(12)) / ticks;
    }
    0.0
}

pub(super) struct KsmRun {
    pub(super) secs: f64,
    pub(super) full_scans: u64,
    pub(super) pages_sharing: u64,
    pub(super) ksmd_cpu_s: f64,
}

/// Whether this kernel has KSM.
pub(super) fn available() -> bool {
    Path::new(KSM).join("run").is_file()
}

/// Runs KSM until it has scanned everything twice (or `limit` passes), then puts `run` back.
pub(super) fn merge_for(limit: Duration) -> Result<KsmRun> {
    let was = read("run")?;
    let scans0 = read("full_scans")?;
    let cpu0 = ksmd_cpu_s();
    write("pages_to_scan", "2000")?;
    write("sleep_millisecs", "20")?;
    write("run", "1")?;
    let t = Instant::now();
    while read("full_scans")? < scans0 + 2 && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = KsmRun {
        secs: t.elapsed().as_secs_f64(),
        full_scans: read("full_scans")? - scans0,
        pages_sharing: read("pages_sharing")?,
        ksmd_cpu_s: ksmd_cpu_s() - cpu0,
    };
    write("run", &was.to_string())?;
    Ok(out)
}
