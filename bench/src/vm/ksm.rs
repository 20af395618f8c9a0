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
use serde_json::{json, Value};

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

/// The bench's note about a KSM run over `n` capsules whose PSS mean was `mean` MiB before,
/// and its JSON; a note saying it was not measured when there was none.
pub(super) fn report(
    ksm: Option<&(Vec<u64>, KsmRun)>,
    n: usize,
    mean: f64,
) -> (String, Option<Value>) {
    let Some((after, run)) = ksm else {
        return (
            "KSM: not measured (`--ksm` not given or no KSM here)".into(),
            None,
        );
    };
    let kmean = after.iter().sum::<u64>() as f64 / n as f64 / 1024.0;
    let note = format!(
        "KSM (alternative, off by default): run over the {n} idle capsules for {:.1} s ({} full \
         scans): PSS mean {mean:.1} -> {kmean:.1} MiB, pages_sharing {}, ksmd CPU {:.2} s \
         ({:.0}% of one core); KSM merges only anonymous pages, so it cannot act on the \
         own-file layout's shared mapping",
        run.secs,
        run.full_scans,
        run.pages_sharing,
        run.ksmd_cpu_s,
        100.0 * run.ksmd_cpu_s / run.secs.max(0.001)
    );
    let v = json!({"pss_after_kib": after, "secs": run.secs, "full_scans": run.full_scans,
                   "pages_sharing": run.pages_sharing, "ksmd_cpu_s": run.ksmd_cpu_s});
    (note, Some(v))
}
