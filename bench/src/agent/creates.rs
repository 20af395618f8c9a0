//! Step 3, creates: `CreateCapsule` alone a few times, then bursts of many at once (each
//! burst size cold, then with the warm pool filled first).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tonic::transport::Channel;
use wrenn_agent::manager::Manager;
use wrenn_proto::agent::v1::agent_client::AgentClient;

use super::cpu::{qemu_cpu_secs, qemu_cpu_since, qemus_cpu_now, CpuMark, CreateCpu};
use super::{create, destroy, ms};

/// Creates one after the other (the baseline and the CPU floor's unit).
pub(super) struct Alone {
    pub(super) ms: Vec<f64>,
    /// CPU seconds of each.
    pub(super) cpu: Vec<CreateCpu>,
}

/// `n` creates started together.
pub(super) struct Burst {
    pub(super) n: usize,
    /// Warm machines ready when the burst started (0: the pool was off).
    pub(super) warm: usize,
    /// Each create's time, in the order they finished.
    pub(super) ms: Vec<f64>,
    /// From the start until the last one ran.
    pub(super) makespan_ms: f64,
    /// Destroying the `n` at once.
    pub(super) destroy_ms: f64,
    /// CPU seconds of the whole burst (all its creates together).
    pub(super) cpu: CreateCpu,
    /// The CPUs all `n` capsules' QEMUs used once made, idle (over [`IDLE_WINDOW`]): what the
    /// capsules already made take from the later creates of a burst.
    pub(super) idle_cpus: f64,
}

/// How long the made capsules are watched idle before the destroys.
const IDLE_WINDOW: Duration = Duration::from_secs(5);

impl Burst {
    /// Creates per second over the burst.
    pub(super) fn throughput(&self) -> f64 {
        self.n as f64 / (self.makespan_ms / 1000.0)
    }
}

pub(super) async fn alone(
    client: &mut AgentClient<Channel>,
    manager: &Arc<Manager>,
    template: &str,
    runs: usize,
) -> Result<Alone> {
    let mut out = Alone {
        ms: Vec::with_capacity(runs),
        cpu: Vec::with_capacity(runs),
    };
    for i in 0..runs {
        let mark = CpuMark::now();
        let t = Instant::now();
        let id = create(client, template)
            .await
            .with_context(|| format!("create alone #{i}"))?;
        out.ms.push(ms(t.elapsed()));
        out.cpu.push(mark.since(qemu_cpu_secs(manager, &id)));
        destroy(client, &id).await?;
    }
    Ok(out)
}

/// Turns the warm pool on with `size` machines per shape and waits until they are all made.
pub(super) async fn fill_pool(manager: &Arc<Manager>, size: usize) -> Result<()> {
    manager.set_pool_size(size).await;
    // One machine at a time, 200 ms apart: under TCG on a small loaded host a second or two
    // each.
    let deadline = Instant::now() + Duration::from_secs(30 + 10 * size as u64);
    while manager.pool_count() < size {
        if Instant::now() > deadline {
            bail!(
                "the warm pool made {} of {size} machines in time",
                manager.pool_count()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `n` creates at once; every capsule made is destroyed again before this returns. A warm
/// pool (if on) is turned off and drained once the creates are done, before the destroys.
pub(super) async fn burst(
    client: &mut AgentClient<Channel>,
    manager: &Arc<Manager>,
    template: &str,
    n: usize,
) -> Result<Burst> {
    let warm = manager.pool_count();
    // The warm machines' QEMUs ran their guests up to envd ahead: only what they use from
    // here on is the creates'.
    let before = Arc::new(qemus_cpu_now());
    let gate = Arc::new(tokio::sync::Barrier::new(n + 1));
    // A JoinSet: if this task is aborted, the creates in flight are dropped with it.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut c = client.clone();
        let gate = gate.clone();
        let template = template.to_owned();
        let manager = manager.clone();
        let before = before.clone();
        set.spawn(async move {
            gate.wait().await;
            let t = Instant::now();
            let r = create(&mut c, &template).await;
            let took = t.elapsed();
            let qemu = r
                .as_ref()
                .map_or(0.0, |id| qemu_cpu_since(&manager, id, &before));
            (i, took, qemu, r)
        });
    }
    let mark = CpuMark::now();
    gate.wait().await;
    let started = Instant::now();
    let mut times = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut qemu = 0.0;
    let mut errors = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok((_, took, q, Ok(id))) => {
                times.push(ms(took));
                qemu += q;
                ids.push(id);
            }
            Ok((i, _, _, Err(e))) => errors.push(format!("create #{i} of {n}: {e:#}")),
            Err(e) => errors.push(format!("a create task failed: {e}")),
        }
    }
    let makespan_ms = ms(started.elapsed());
    let cpu = mark.since(qemu);
    if warm > 0 {
        manager.set_pool_size(0).await;
    }
    let idle_cpus = {
        let sum = || ids.iter().map(|id| qemu_cpu_secs(manager, id)).sum::<f64>();
        let before = sum();
        tokio::time::sleep(IDLE_WINDOW).await;
        (sum() - before) / IDLE_WINDOW.as_secs_f64()
    };
    // Destroy whatever was made, failures or not (the agent's cleanup would otherwise).
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let mut c = client.clone();
        set.spawn(async move { destroy(&mut c, &id).await });
    }
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("a destroy task failed: {e}")),
        }
    }
    let destroy_ms = ms(t.elapsed());
    if !errors.is_empty() {
        bail!(
            "{} of {n} concurrent creates or destroys failed:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    Ok(Burst {
        n,
        warm,
        ms: times,
        makespan_ms,
        destroy_ms,
        cpu,
        idle_cpus,
    })
}
