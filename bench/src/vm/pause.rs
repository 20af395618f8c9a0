//! 2. Pause (`pause` + `save`) and resume (`restore` + `resume` + `wait_ready`) of a capsule.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Map, Value};
use wrenn_vmm::{snapshot::Snapshot, Vmm};

use super::capsule::{Capsule, Layout};
use super::host::fresh_dir;
use super::{ms, row, PAUSE_TARGET_MS, READY};
use crate::report::{percentile, Row, Target as Goal};

pub(super) struct PauseResume {
    pub(super) pause: Vec<f64>,
    pub(super) stop: Vec<f64>,
    pub(super) save: Vec<f64>,
    pub(super) resume: Vec<f64>,
    /// Resumes into a QEMU started ahead (after the save, untimed, as a pool would).
    pub(super) resume_warm: Vec<f64>,
    /// Resumes of a VMM its pause kept (`save_keeping`, the agent's `--keep-paused`): `cont`
    /// and envd answering; one such cycle follows each measured one.
    pub(super) resume_kept: Vec<f64>,
    /// The pauses of those cycles (stop + save, the VMM kept).
    pub(super) pause_kept: Vec<f64>,
    /// Where the cold resumes' time goes: `restore` (QEMU start, own pages, state load),
    /// `cont`, and envd answering its first `/health` after it.
    pub(super) restore: Vec<f64>,
    pub(super) cont: Vec<f64>,
    pub(super) ready: Vec<f64>,
    /// QEMU's CPU time (user + system) while the guest got to answer, ms: near the `ready`
    /// wall time when TCG translating the guest's code again is what the wait is.
    pub(super) ready_cpu: Vec<f64>,
    pub(super) state_bytes: u64,
    /// Size of the capsule's own saved pages (`memory.delta`) after the last pause.
    pub(super) delta_bytes: u64,
}

pub(super) async fn pause_resume(
    snap: &Snapshot,
    work: &Path,
    cycles: usize,
) -> Result<PauseResume> {
    pause_resume_in(snap, work, cycles, Layout::Template).await
}

/// As [`pause_resume`], for a capsule of memory layout `layout`.
pub(super) async fn pause_resume_in(
    snap: &Snapshot,
    work: &Path,
    cycles: usize,
    layout: Layout,
) -> Result<PauseResume> {
    let name = match layout {
        Layout::Template => "pause-resume",
        Layout::Own => "pause-resume-own",
    };
    let (mut c, _) = Capsule::create_in(snap, fresh_dir(work, name)?, layout, Default::default())
        .await
        .context("creating the pause/resume capsule")?;
    let state = c.dir.join("state");
    let mut out = PauseResume {
        pause: Vec::new(),
        stop: Vec::new(),
        save: Vec::new(),
        resume: Vec::new(),
        resume_warm: Vec::new(),
        resume_kept: Vec::new(),
        pause_kept: Vec::new(),
        restore: Vec::new(),
        cont: Vec::new(),
        ready: Vec::new(),
        ready_cpu: Vec::new(),
        state_bytes: 0,
        delta_bytes: 0,
    };
    for i in 0..=cycles {
        // Let the guest run a moment between cycles.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        c.vm.pause().await.with_context(|| format!("pause #{i}"))?;
        let stopped = t.elapsed();
        c.vm.save(&state)
            .await
            .with_context(|| format!("save #{i}"))?;
        let paused = t.elapsed();
        ensure!(c.vm.pid().is_none(), "QEMU still runs after save #{i}");
        // Odd cycles resume into a QEMU started ahead (the warm path), even ones cold.
        let warm = i % 2 == 1;
        if warm {
            c.vm.start_waiting()
                .await
                .with_context(|| format!("warm QEMU #{i}"))?;
        }
        let t = Instant::now();
        c.vm.restore(&state)
            .await
            .with_context(|| format!("restore #{i}"))?;
        let restored = t.elapsed();
        c.vm.resume()
            .await
            .with_context(|| format!("resume #{i}"))?;
        let continued = t.elapsed();
        let cpu_before = qemu_cpu_ms(&c.vm);
        c.vm.wait_ready(c.envd, READY)
            .await
            .with_context(|| format!("envd after resume #{i}"))?;
        let resumed = t.elapsed();
        let ready_cpu = qemu_cpu_ms(&c.vm) - cpu_before;
        if i > 0 {
            out.pause.push(ms(paused));
            out.stop.push(ms(stopped));
            out.save.push(ms(paused - stopped));
            if warm {
                out.resume_warm.push(ms(resumed));
            } else {
                out.resume.push(ms(resumed));
                out.restore.push(ms(restored));
                out.cont.push(ms(continued - restored));
                out.ready.push(ms(resumed - continued));
                out.ready_cpu.push(ready_cpu);
            }
            let (paused, resumed) = kept_cycle(&mut c, &state)
                .await
                .with_context(|| format!("kept cycle #{i}"))?;
            out.pause_kept.push(paused);
            out.resume_kept.push(resumed);
        }
    }
    out.state_bytes = fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
    out.delta_bytes = fs::metadata(c.dir.join(wrenn_vmm::memory::DELTA_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    c.destroy().await?;
    Ok(out)
}

/// One pause whose VMM is kept and its resume (ms each): the resume is `cont` and envd's
/// first answer, in the same process.
async fn kept_cycle(c: &mut Capsule, state: &Path) -> Result<(f64, f64)> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    c.vm.pause().await?;
    c.vm.save_keeping(state).await?;
    let paused = t.elapsed();
    ensure!(c.vm.pid().is_some(), "the VMM was not kept");
    let t = Instant::now();
    c.vm.resume().await?;
    c.vm.wait_ready(c.envd, READY).await?;
    Ok((ms(paused), ms(t.elapsed())))
}

/// Step [2] of the bench: pause/resume cycles of a template-layout capsule and of an own-file
/// one, their rows (baseline: the raw restore p50 of [1], for scale), note and samples.
pub(super) async fn step(
    snap: &Snapshot,
    work: &Path,
    cycles: usize,
    raw_p50: f64,
    memory_mib: u32,
    (rows, notes, extra): (&mut Vec<Row>, &mut Vec<String>, &mut Map<String, Value>),
) -> Result<()> {
    let pr = pause_resume(snap, work, cycles).await?;
    let pause_p50 = percentile(&pr.pause, 50.0);
    let mut r = row("pause_p50", "pause p50", "ms", pause_p50, raw_p50);
    r.samples = cycles;
    r.note = format!(
        "stop {:.1} + save {:.1} ms; p99 {:.1} ms",
        percentile(&pr.stop, 50.0),
        percentile(&pr.save, 50.0),
        percentile(&pr.pause, 99.0)
    );
    r.target = Some(Goal {
        text: format!("<= {PAUSE_TARGET_MS} ms"),
        met: pause_p50 <= PAUSE_TARGET_MS,
    });
    rows.push(r);
    let resume_p50 = percentile(&pr.resume, 50.0);
    let mut r = row("resume_p50", "resume p50", "ms", resume_p50, raw_p50);
    r.samples = cycles;
    r.note = format!(
        "p99 {:.1} ms; p50 of restore {:.1} + cont {:.1} + envd answering {:.1} ms (QEMU CPU in that \
         wait {:.0} ms)",
        percentile(&pr.resume, 99.0),
        percentile(&pr.restore, 50.0),
        percentile(&pr.cont, 50.0),
        percentile(&pr.ready, 50.0),
        percentile(&pr.ready_cpu, 50.0)
    );
    rows.push(r);
    rows.push(vs_cold_resume(
        ("resume_warm_p50", "resume p50, warm QEMU"),
        &pr.resume_warm,
        resume_p50,
        "baseline = the cold resumes of the same capsule (cycles alternate)".into(),
    ));
    rows.push(vs_cold_resume(
        ("resume_kept_p50", "resume p50, kept VMM"),
        &pr.resume_kept,
        resume_p50,
        format!(
            "a pause that kept its stopped VMM (`--keep-paused`): `cont` + envd answering; p99 \
             {:.1} ms; its pause p50 {:.1} ms; baseline = the cold resumes of the same capsule",
            percentile(&pr.resume_kept, 99.0),
            percentile(&pr.pause_kept, 50.0)
        ),
    ));
    let own = pause_resume_in(snap, work, cycles, Layout::Own).await?;
    for (id, label, w, b) in [
        (
            "pause_vs_own",
            "pause p50 vs own-file layout",
            &pr.pause,
            &own.pause,
        ),
        (
            "resume_vs_own",
            "resume p50 vs own-file layout",
            &pr.resume,
            &own.resume,
        ),
    ] {
        let mut r = row(id, label, "ms", percentile(w, 50.0), percentile(b, 50.0));
        r.samples = cycles;
        r.note = "baseline = the same cycles with a whole memory copy per capsule".into();
        rows.push(r);
    }
    notes.push(format!(
        "pause/resume: {} MiB guest, saved device state {:.1} KiB + the capsule's own pages {:.1} MiB \
         (memory.delta; the template's pages are not saved); own-file layout: state {:.1} KiB, RAM in \
         its memory file; baseline of pause/resume p50 = raw restore p50 of [1]",
        memory_mib,
        pr.state_bytes as f64 / 1024.0,
        pr.delta_bytes as f64 / f64::from(1 << 20),
        own.state_bytes as f64 / 1024.0,
    ));
    extra.insert(
        "pause_resume_samples_ms".into(),
        json!({"pause": pr.pause, "stop": pr.stop, "save": pr.save, "resume": pr.resume,
               "resume_warm": pr.resume_warm, "resume_kept": pr.resume_kept,
               "pause_kept": pr.pause_kept, "resume_restore": pr.restore,
               "resume_cont": pr.cont, "resume_ready": pr.ready,
               "resume_ready_qemu_cpu": pr.ready_cpu}),
    );
    Ok(())
}

/// The row of a faster way to resume (p50 of `samples`) against the cold resume p50, with its
/// target of half that.
fn vs_cold_resume(
    (id, label): (&'static str, &'static str),
    samples: &[f64],
    cold_p50: f64,
    note: String,
) -> Row {
    let mut r = row(id, label, "ms", percentile(samples, 50.0), cold_p50);
    r.samples = samples.len();
    r.note = note;
    r.target = Some(Goal {
        text: "<= 0.5x cold resume".into(),
        met: r.ratio() <= 0.5,
    });
    r
}

/// CPU time (user + system) of the VM's QEMU so far, ms (0 without one).
fn qemu_cpu_ms(vm: &wrenn_vmm::QemuVm) -> f64 {
    let Some(pid) = vm.pid() else { return 0.0 };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks * 1000.0 / hz
}
