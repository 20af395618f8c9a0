//! The held load: `streams` exec streams and `ptys` terminals spread across `capsules`
//! capsules of one `wrenn up`, for `load_secs`. Each exec stream runs a shell loop that prints
//! a numbered line a second for `stream_lines` seconds and is started again when it ends (its
//! whole output is checked); each terminal runs `cat` with echo off and does a round trip
//! (a numbered line typed, the same line read back) every `pty_interval_ms`. Any failure,
//! wrong output or non-zero exit is an error.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use wrenn_client::CreateCapsule;

use super::{leaks, machine_line, Args, Up, UpConfig};

mod report;
mod sessions;
use self::report::LoadReport;
use self::sessions::{pty_loop, stream_loop};

/// Padding that makes each streamed line about 80 bytes.
const PAD: &str = "the-quick-brown-fox-jumps-over-the-lazy-dog-0123456789";
/// Errors kept word for word in the report (the rest are counted).
const KEEP_ERRORS: usize = 20;

#[derive(Default)]
struct Stats {
    execs: AtomicU64,
    exec_lines: AtomicU64,
    exec_bytes: AtomicU64,
    pty_rts: AtomicU64,
    pty_bytes: AtomicU64,
    streams_open: AtomicUsize,
    streams_peak: AtomicUsize,
    ptys_open: AtomicUsize,
    ptys_peak: AtomicUsize,
    errors: AtomicU64,
    samples: Mutex<Samples>,
}

#[derive(Default)]
struct Samples {
    /// Handshake to the `start` event.
    exec_start_ms: Vec<f64>,
    /// Handshake to the first line.
    exec_first_ms: Vec<f64>,
    pty_rt_ms: Vec<f64>,
    errors: Vec<String>,
}

impl Stats {
    /// An error: counted; the first few of each kind (streams, terminals) kept word for word.
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        let mut s = self.samples();
        let kind = what.split_whitespace().next().unwrap_or("").to_string();
        let same = s.errors.iter().filter(|e| e.starts_with(&kind)).count();
        if same < KEEP_ERRORS / 2 {
            eprintln!("soak load: error: {what}");
            s.errors.push(what);
        }
    }

    fn samples(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn open(count: &AtomicUsize, peak: &AtomicUsize) {
    let now = count.fetch_add(1, Relaxed) + 1;
    peak.fetch_max(now, Relaxed);
}
pub fn run(args: &Args, rt: &tokio::runtime::Runtime, stamp: &str) -> Result<LoadReport> {
    anyhow::ensure!(args.capsules > 0, "--capsules must be at least 1");
    let dir = args.work_dir.join(format!("wrenn-soak-load-{stamp}"));
    let log = args.work_dir.join(format!("wrenn-soak-load-{stamp}.log"));
    let mut up = Up::start(
        &UpConfig {
            wrenn: &args.wrenn,
            images: &args.images,
            template: &args.template,
            slots: &args.slots,
            max_capsules: args.capsules,
        },
        dir.clone(),
        log.clone(),
    )?;
    eprintln!(
        "soak load: wrenn up at {} (data {}, log {}), {} capsules, {} exec streams, {} terminals, \
         {} s",
        up.base,
        dir.display(),
        log.display(),
        args.capsules,
        args.streams,
        args.ptys,
        args.load_secs
    );
    let client = up.client()?;
    let stats = Arc::new(Stats::default());
    let (secs, seen, leaks) = rt.block_on(async {
        // The capsules, two at a time (a burst of restores on two cores only queues).
        let mut ids = Vec::new();
        for pair in (0..args.capsules).collect::<Vec<_>>().chunks(2) {
            let mut set = tokio::task::JoinSet::new();
            for _ in pair {
                let c = client.clone();
                let template = args.template.clone();
                set.spawn(async move {
                    c.create_capsule(&CreateCapsule {
                        template: Some(template),
                        timeout_sec: Some(0),
                        ..CreateCapsule::default()
                    })
                    .await
                });
            }
            while let Some(r) = set.join_next().await {
                ids.push(r?.context("creating a capsule")?.id);
            }
        }
        eprintln!("soak load: {} capsules running", ids.len());
        let seen = leaks::count(&up, &args.slots).await;
        // Streams and terminals start spread over a ramp, then hold until the deadline.
        let ramp = Duration::from_secs(10.min(args.load_secs / 4).max(1));
        let began = Instant::now();
        let deadline = began + ramp + Duration::from_secs(args.load_secs);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..args.streams {
            tasks.spawn(stream_loop(
                client.clone(),
                ids[i % ids.len()].clone(),
                i,
                args.stream_lines,
                ramp.mul_f64(i as f64 / args.streams.max(1) as f64),
                deadline,
                stats.clone(),
            ));
        }
        for j in 0..args.ptys {
            tasks.spawn(pty_loop(
                client.clone(),
                ids[j % ids.len()].clone(),
                j,
                Duration::from_millis(args.pty_interval_ms),
                ramp.mul_f64(j as f64 / args.ptys.max(1) as f64),
                deadline,
                stats.clone(),
            ));
        }
        let progress = {
            let stats = stats.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(15)).await;
                    eprintln!(
                        "soak load: {:>4.0} s: {} streams and {} terminals open, {} execs, {} \
                         round trips, {} errors",
                        began.elapsed().as_secs_f64(),
                        stats.streams_open.load(Relaxed),
                        stats.ptys_open.load(Relaxed),
                        stats.execs.load(Relaxed),
                        stats.pty_rts.load(Relaxed),
                        stats.errors.load(Relaxed)
                    );
                }
            })
        };
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                stats.error(format!("a load task failed: {e}"));
            }
        }
        progress.abort();
        // Streams that began before the deadline ran to their end: the held time is to the
        // last end, from the end of the ramp.
        let secs = began.elapsed().saturating_sub(ramp).as_secs_f64();
        for id in &ids {
            if let Err(e) = client.destroy_capsule(id).await {
                stats.error(format!("destroying {id}: {e}"));
            }
        }
        anyhow::Ok((secs, seen, leaks::count(&up, &args.slots).await))
    })?;
    let stopped = up.stop();
    let mut leaks_after_stop = leaks::Leaks::default();
    leaks::host(&dir, &args.slots, &mut leaks_after_stop);
    if !stopped {
        leaks_after_stop
            .notes
            .push("wrenn up did not stop within a minute of SIGINT".into());
    }
    if leaks_after_stop.clean() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let samples = std::mem::take(&mut *stats.samples());
    Ok(LoadReport {
        secs,
        load_secs: args.load_secs,
        blind: leaks::sees(&seen, args.capsules),
        seen,
        capsules: args.capsules,
        streams: args.streams,
        ptys: args.ptys,
        stream_lines: args.stream_lines,
        pty_interval_ms: args.pty_interval_ms,
        execs: stats.execs.load(Relaxed),
        exec_lines: stats.exec_lines.load(Relaxed),
        exec_bytes: stats.exec_bytes.load(Relaxed),
        pty_rts: stats.pty_rts.load(Relaxed),
        pty_bytes: stats.pty_bytes.load(Relaxed),
        streams_peak: stats.streams_peak.load(Relaxed),
        ptys_peak: stats.ptys_peak.load(Relaxed),
        errors: stats.errors.load(Relaxed),
        samples,
        leaks,
        leaks_after_stop,
        machine: machine_line(),
        date: super::doc::now_utc(),
    })
}
