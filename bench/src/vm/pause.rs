//! 2. Pause (`pause` + `save`) and resume (`restore` + `resume` + `wait_ready`) of a capsule.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use wrenn_vmm::{snapshot::Snapshot, Vmm};

use super::capsule::Capsule;
use super::host::fresh_dir;
use super::{ms, READY};

pub(super) struct PauseResume {
    pub(super) pause: Vec<f64>,
    pub(super) stop: Vec<f64>,
    pub(super) save: Vec<f64>,
    pub(super) resume: Vec<f64>,
    pub(super) state_bytes: u64,
}

pub(super) async fn pause_resume(
    snap: &Snapshot,
    work: &Path,
    cycles: usize,
) -> Result<PauseResume> {
    let (mut c, _) = Capsule::create(snap, fresh_dir(work, "pause-resume")?)
        .await
        .context("creating the pause/resume capsule")?;
    let state = c.dir.join("state");
    let mut out = PauseResume {
        pause: Vec::new(),
        stop: Vec::new(),
        save: Vec::new(),
        resume: Vec::new(),
        state_bytes: 0,
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
        let t = Instant::now();
        c.vm.restore(&state)
            .await
            .with_context(|| format!("restore #{i}"))?;
        c.vm.resume()
            .await
            .with_context(|| format!("resume #{i}"))?;
        c.vm.wait_ready(c.envd, READY)
            .await
            .with_context(|| format!("envd after resume #{i}"))?;
        let resumed = t.elapsed();
        if i > 0 {
            out.pause.push(ms(paused));
            out.stop.push(ms(stopped));
            out.save.push(ms(paused - stopped));
            out.resume.push(ms(resumed));
        }
    }
    out.state_bytes = fs::metadata(&state).map(|m| m.len()).unwrap_or(0);
    c.destroy().await?;
    Ok(out)
}
