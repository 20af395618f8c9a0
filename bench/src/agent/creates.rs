//! 3. Concurrent creates: `CreateCapsule` alone a few times against many at once.

use std::{sync::Arc, time::Instant};

use anyhow::{bail, Context, Result};
use tonic::transport::Channel;
use wrenn_agent::manager::Manager;
use wrenn_proto::agent::v1::agent_client::AgentClient;

use super::cpu::{qemu_cpu_secs, CpuMark, CreateCpu};
use super::{create, destroy, ms, Settings};

pub(super) struct Creates {
    pub(super) single: Vec<f64>,
    pub(super) together: Vec<f64>,
    pub(super) makespan_ms: f64,
    pub(super) destroy_ms: f64,
    /// CPU seconds of each create alone, and of the burst (all its creates together).
    pub(super) single_cpu: Vec<CreateCpu>,
    pub(super) burst_cpu: CreateCpu,
}

pub(super) async fn creates(
    client: &mut AgentClient<Channel>,
    manager: &Arc<Manager>,
    s: &Settings,
) -> Result<Creates> {
    let mut single = Vec::with_capacity(s.single_creates);
    let mut single_cpu = Vec::with_capacity(s.single_creates);
    for i in 0..s.single_creates {
        let mark = CpuMark::now();
        let t = Instant::now();
        let id = create(client, &s.template)
            .await
            .with_context(|| format!("create alone #{i}"))?;
        single.push(ms(t.elapsed()));
        single_cpu.push(mark.since(qemu_cpu_secs(manager, &id)));
        destroy(client, &id).await?;
    }

    let n = s.concurrent;
    let gate = Arc::new(tokio::sync::Barrier::new(n + 1));
    // A JoinSet: if this task is aborted, the creates in flight are dropped with it.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut c = client.clone();
        let gate = gate.clone();
        let template = s.template.clone();
        let manager = manager.clone();
        set.spawn(async move {
            gate.wait().await;
            let t = Instant::now();
            let r = create(&mut c, &template).await;
            let took = t.elapsed();
            let qemu = r.as_ref().map_or(0.0, |id| qemu_cpu_secs(&manager, id));
            (i, took, qemu, r)
        });
    }
    let mark = CpuMark::now();
    gate.wait().await;
    let burst = Instant::now();
    let mut together = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut burst_qemu = 0.0;
    let mut errors = Vec::new();
    while let Some(done) = set.join_next().await {
        match done {
            Ok((_, took, qemu, Ok(id))) => {
                together.push(ms(took));
                burst_qemu += qemu;
                ids.push(id);
            }
            Ok((i, _, _, Err(e))) => errors.push(format!("create #{i} of {n}: {e:#}")),
            Err(e) => errors.push(format!("a create task failed: {e}")),
        }
    }
    let makespan_ms = ms(burst.elapsed());
    let burst_cpu = mark.since(burst_qemu);
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
    Ok(Creates {
        single,
        together,
        makespan_ms,
        destroy_ms,
        single_cpu,
        burst_cpu,
    })
}
