//! The measurements in order, turned into rows, notes and JSON extras.

use std::{sync::Arc, thread, time::Instant};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use tonic::transport::Channel;
use wrenn_agent::{envd_client::EnvdClient, manager::Manager};
use wrenn_proto::agent::v1::agent_client::AgentClient;

use super::cpu::Cpu;
use super::exec::exec_round_trips;
use super::transfer::transfers;
use super::{
    create, destroy, hex, ms, row, Outcome, Settings, EXEC_OVERHEAD_TARGET_MS, THROUGHPUT_TARGET,
    UPLOAD_CHUNK,
};
use super::{create_figures, creates};
use crate::report::{percentile, Row, Target as Goal};

pub(super) async fn bench(
    mut client: AgentClient<Channel>,
    manager: Arc<Manager>,
    s: Settings,
) -> Result<Outcome> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut extra = Map::new();
    if !s.creates_only {
        exec_and_files(&mut client, &manager, &s, &mut rows, &mut notes, &mut extra).await?;
    }

    // ---- 3 ----
    eprintln!(
        "[3/3] creates: {} alone one after the other, then {:?} at once{}",
        s.single_creates,
        s.concurrent,
        match s.warm_pool {
            Some(0) => String::new(),
            Some(p) => format!(", each cold and then into a warm pool of {p}"),
            None => ", each cold and then into a warm pool of its size".into(),
        }
    );
    let alone = creates::alone(&mut client, &manager, &s.template, s.single_creates).await?;
    let mut bursts = Vec::new();
    let show = |b: &creates::Burst| {
        eprintln!(
            "      {} at once ({} warm): all done after {:.0} ms, {:.2} creates/s",
            b.n,
            b.warm,
            b.makespan_ms,
            b.throughput()
        );
    };
    for &n in &s.concurrent {
        bursts.push(creates::burst(&mut client, &manager, &s.template, n).await?);
        show(&bursts[bursts.len() - 1]);
        let pool = s.warm_pool.unwrap_or(n);
        if pool > 0 {
            creates::fill_pool(&manager, pool).await?;
            bursts.push(creates::burst(&mut client, &manager, &s.template, n).await?);
            show(&bursts[bursts.len() - 1]);
        }
    }
    let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    create_figures::figures(&alone, &bursts, cpus, &mut rows, &mut notes, &mut extra);
    Ok(Outcome { rows, notes, extra })
}

/// Steps 1 and 2, on one capsule made for them.
async fn exec_and_files(
    client: &mut AgentClient<Channel>,
    manager: &Arc<Manager>,
    s: &Settings,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
    extra: &mut Map<String, Value>,
) -> Result<()> {
    eprintln!("[0/3] a capsule for exec and files");
    let t = Instant::now();
    let id = create(client, &s.template).await?;
    notes.push(format!(
        "the exec/files capsule was created in {:.0} ms (also warms the template's page cache)",
        ms(t.elapsed())
    ));
    let (addr, token) = manager.envd_of(&id)?;
    let envd = EnvdClient::new(addr, Some(token.clone()));

    // ---- 1 ----
    eprintln!(
        "[1/3] exec round trip of `true`: {} per side (+{} warm-up), interleaved",
        s.exec_runs, s.exec_warmup
    );
    let (agent_ms, direct_ms) = exec_round_trips(client, &envd, &id, s).await?;
    for (rid, label, p) in [
        ("exec_true_p50", "exec true p50", 50.0),
        ("exec_true_p99", "exec true p99", 99.0),
    ] {
        let (a, d) = (percentile(&agent_ms, p), percentile(&direct_ms, p));
        let mut r = row(rid, label, "ms", a, d);
        r.samples = s.exec_runs;
        r.note = format!("overhead {:+.2} ms", a - d);
        r.extra.insert("overhead_ms".into(), json!(a - d));
        if p < 99.0 {
            r.target = Some(Goal {
                text: format!("overhead <= {EXEC_OVERHEAD_TARGET_MS} ms"),
                met: a - d <= EXEC_OVERHEAD_TARGET_MS,
            });
        }
        rows.push(r);
    }
    extra.insert(
        "exec_samples_ms".into(),
        json!({"agent": agent_ms, "direct": direct_ms}),
    );

    // ---- 2 ----
    eprintln!(
        "[2/3] {} MiB streamed upload + download to {}: best of {} per side (+1 warm-up), interleaved",
        s.file_mib(),
        s.guest_file,
        s.transfer_runs
    );
    let qemu_pid = manager
        .get(&id)?
        .vmm_pid
        .context("the capsule has no QEMU pid")?;
    let tr = transfers(client, addr, &token, &id, qemu_pid, s).await?;
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    for (rid, what, runs) in [
        ("upload_mb_s", "upload", &tr.upload),
        ("download_mb_s", "download", &tr.download),
    ] {
        let mut r = row(
            rid,
            &format!("{what} {} MiB", s.file_mib()),
            "MB/s",
            best(&runs[0]),
            best(&runs[1]),
        );
        r.samples = s.transfer_runs;
        r.note = format!("agent at {:.0} % of direct", r.ratio() * 100.0);
        r.target = Some(Goal {
            text: format!(">= {:.0} % of direct", THROUGHPUT_TARGET * 100.0),
            met: r.ratio() >= THROUGHPUT_TARGET,
        });
        r.extra.insert("runs_agent".into(), json!(runs[0]));
        r.extra.insert("runs_direct".into(), json!(runs[1]));
        r.extra.insert("bytes".into(), json!(s.file_bytes));
        rows.push(r);
    }
    notes.push(format!(
        "transfers: {} bytes of pseudo-random data, sha256 {}; every upload's size and every \
         download's size and sha256 checked (off the clock); gRPC upload in {} KiB messages",
        s.file_bytes,
        hex(&tr.sha256),
        UPLOAD_CHUNK / 1024
    ));
    let mean = |v: &[Cpu]| {
        let n = v.len().max(1) as f64;
        (
            v.iter().map(|c| c.this).sum::<f64>() / n,
            v.iter().map(|c| c.qemu).sum::<f64>() / n,
        )
    };
    let cpu_line = |what: &str, runs: &[Vec<Cpu>; 2]| {
        let (a, d) = (mean(&runs[0]), mean(&runs[1]));
        format!(
            "{what}: agent path {:.2} s in this process + {:.2} s QEMU, direct {:.2} s + {:.2} s",
            a.0, a.1, d.0, d.1
        )
    };
    notes.push(format!(
        "host CPU per transfer (mean; this process = bench client + agent): {}; {}",
        cpu_line("upload", &tr.cpu_upload),
        cpu_line("download", &tr.cpu_download)
    ));
    extra.insert(
        "transfer_cpu_s".into(),
        json!({
            "upload_agent": tr.cpu_upload[0].iter().map(|c| [c.this, c.qemu]).collect::<Vec<_>>(),
            "upload_direct": tr.cpu_upload[1].iter().map(|c| [c.this, c.qemu]).collect::<Vec<_>>(),
            "download_agent": tr.cpu_download[0].iter().map(|c| [c.this, c.qemu]).collect::<Vec<_>>(),
            "download_direct": tr.cpu_download[1].iter().map(|c| [c.this, c.qemu]).collect::<Vec<_>>(),
        }),
    );
    destroy(client, &id).await?;

    Ok(())
}
