//! The held load: `streams` exec streams and `ptys` terminals spread across `capsules`
//! capsules of one `wrenn up`, for `load_secs`. Each exec stream runs a shell loop that prints
//! a numbered line a second for `stream_lines` seconds and is started again when it ends (its
//! whole output is checked); each terminal runs `cat` with echo off and does a round trip
//! (a numbered line typed, the same line read back) every `pty_interval_ms`. Any failure,
//! wrong output or non-zero exit is an error.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use wrenn_client::{Client, CreateCapsule, Exec, PtyEvent, PtyStart, StreamEvent};

use super::{leaks, machine_line, ms, pct, Args, Up, UpConfig};

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

pub struct LoadReport {
    secs: f64,
    load_secs: u64,
    /// The counters' check with the capsules running (`leaks::sees`): `None` when they saw
    /// every capsule's parts.
    blind: Option<String>,
    seen: leaks::Leaks,
    capsules: usize,
    streams: usize,
    ptys: usize,
    stream_lines: u32,
    pty_interval_ms: u64,
    execs: u64,
    exec_lines: u64,
    exec_bytes: u64,
    pty_rts: u64,
    pty_bytes: u64,
    streams_peak: usize,
    ptys_peak: usize,
    errors: u64,
    samples: Samples,
    leaks: leaks::Leaks,
    leaks_after_stop: leaks::Leaks,
    machine: String,
    date: String,
}

impl LoadReport {
    pub fn held(&self) -> bool {
        self.errors == 0
            && self.blind.is_none()
            && self.leaks.clean()
            && self.leaks_after_stop.clean()
    }

    fn figures(&self) -> Vec<(String, String)> {
        let s = &self.samples;
        let per = |n: u64| n as f64 / self.secs.max(1e-9);
        vec![
            (
                "held".into(),
                format!(
                    "{:.0} s, {} of {} exec streams and {} of {} terminals open at once (peak), \
                     across {} capsules",
                    self.secs,
                    self.streams_peak,
                    self.streams,
                    self.ptys_peak,
                    self.ptys,
                    self.capsules
                ),
            ),
            (
                "exec streams".into(),
                format!(
                    "{} completed ({:.2}/s), {} lines, {:.1} MB of output ({:.1} kB/s)",
                    self.execs,
                    per(self.execs),
                    self.exec_lines,
                    self.exec_bytes as f64 / 1e6,
                    per(self.exec_bytes) / 1e3
                ),
            ),
            (
                "exec start (handshake → `start`)".into(),
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
                    pct(&s.exec_start_ms, 50.0),
                    pct(&s.exec_start_ms, 99.0),
                    pct(&s.exec_start_ms, 100.0),
                    s.exec_start_ms.len()
                ),
            ),
            (
                "exec first line (handshake → first stdout)".into(),
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms",
                    pct(&s.exec_first_ms, 50.0),
                    pct(&s.exec_first_ms, 99.0)
                ),
            ),
            (
                "terminal round trips".into(),
                format!(
                    "{} ({:.1}/s), {:.2} MB; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    self.pty_rts,
                    per(self.pty_rts),
                    self.pty_bytes as f64 / 1e6,
                    pct(&s.pty_rt_ms, 50.0),
                    pct(&s.pty_rt_ms, 99.0),
                    pct(&s.pty_rt_ms, 100.0)
                ),
            ),
            ("errors".into(), self.errors.to_string()),
            (
                format!("counted with the {} capsules running", self.capsules),
                match &self.blind {
                    None => format!("{} (the counters see them)", self.seen.line()),
                    Some(why) => format!("COUNTERS BLIND: {why}"),
                },
            ),
            ("left after destroy".into(), self.leaks.line()),
            (
                "left after `wrenn up` stopped".into(),
                self.leaks_after_stop.line(),
            ),
        ]
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "wrenn-bench soak load ({}): {}\n",
            self.machine,
            if self.held() { "HELD" } else { "DID NOT HOLD" }
        );
        for (k, v) in self.figures() {
            let _ = writeln!(out, "  {k:44} {v}");
        }
        for e in &self.samples.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        out
    }

    pub fn row(&self) -> String {
        let s = &self.samples;
        let per = |n: u64| n as f64 / self.secs.max(1e-9);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| Load held: {} exec streams + {} terminals across {} capsules of one `wrenn up` | \
             {:.0} s held; {} execs ({:.2}/s), {} terminal round trips ({:.1}/s), {:.1} MB of \
             output | {} errors; exec start p50 {:.0} ms / p99 {:.0} ms; round trip p50 {:.0} \
             ms / p99 {:.0} ms; leaks after: {} |",
            self.streams,
            self.ptys,
            self.capsules,
            self.secs,
            self.execs,
            per(self.execs),
            self.pty_rts,
            per(self.pty_rts),
            (self.exec_bytes + self.pty_bytes) as f64 / 1e6,
            self.errors,
            pct(&s.exec_start_ms, 50.0),
            pct(&s.exec_start_ms, 99.0),
            pct(&s.pty_rt_ms, 50.0),
            pct(&s.pty_rt_ms, 99.0),
            self.leaks.total() + self.leaks_after_stop.total(),
        );
        out
    }

    pub fn markdown(&self) -> String {
        let s = &self.samples;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run {} on {}: `wrenn-bench soak --phase load --load-secs {} --capsules {} \
             --streams {} --ptys {} --stream-lines {} --pty-interval-ms {}` — **{}**.",
            self.date,
            self.machine,
            self.load_secs,
            self.capsules,
            self.streams,
            self.ptys,
            self.stream_lines,
            self.pty_interval_ms,
            if self.held() { "held" } else { "did not hold" }
        );
        let _ = writeln!(
            out,
            "Each exec stream is `bash -c` printing one ~80-byte line a second for {} s (the \
             second waited by a `read -t 1` on a FIFO it holds, so no process is forked per \
             line), checked \
             line by line and restarted when it ends; each terminal runs `cat` (echo off) and \
             types a numbered line every {} ms, read back whole. They start over a ramp of up \
             to 10 s; \"held\" runs from the end of the ramp to the end of the last stream \
             (streams running at the deadline finish), and the rates are over that time.",
            self.stream_lines, self.pty_interval_ms
        );
        let _ = writeln!(out);
        for (k, v) in self.figures() {
            let _ = writeln!(out, "- {k}: {v}");
        }
        for e in &s.errors {
            let _ = writeln!(out, "- error: `{}`", e.replace('`', "'"));
        }
        out
    }
}

/// One streamed exec to its end, checked. Returns (start, first line) latencies and the bytes.
async fn one_stream(
    client: &Client,
    capsule: &str,
    tag: &str,
    lines: u32,
    stats: &Stats,
) -> Result<()> {
    let script = format!(
        "f=/tmp/soak-$$; mkfifo $f && exec 3<>$f && rm $f || exit 1; i=0; \
             while [ $i -lt {lines} ]; do echo {tag}-$i-{PAD}; i=$((i+1)); read -t 1 -u 3; \
             done; exit 0"
    );
    let t = Instant::now();
    let mut stream = client
        .exec_stream(
            capsule,
            &Exec::new("/bin/bash").args(["-c", script.as_str()]),
        )
        .await
        .context("opening the stream")?;
    open(&stats.streams_open, &stats.streams_peak);
    let result = async {
        let mut out = String::new();
        let mut first = None;
        let mut start = None;
        let limit = Duration::from_secs(u64::from(lines) + 120);
        loop {
            let ev = tokio::time::timeout(limit.saturating_sub(t.elapsed()), stream.next())
                .await
                .map_err(|_| anyhow::anyhow!("no end after {limit:?}"))?;
            match ev {
                None => bail!("the stream closed before the exit ({} bytes)", out.len()),
                Some(Err(e)) => bail!("the stream failed: {e}"),
                Some(Ok(StreamEvent::Start { .. })) => start = Some(ms(t.elapsed())),
                Some(Ok(StreamEvent::Stdout(s))) => {
                    first.get_or_insert_with(|| ms(t.elapsed()));
                    out.push_str(&s);
                }
                Some(Ok(StreamEvent::Stderr(s))) => bail!("stderr: {s}"),
                Some(Ok(StreamEvent::Error(e))) => bail!("error event: {e}"),
                Some(Ok(StreamEvent::Other(v))) => bail!("unexpected event: {v}"),
                Some(Ok(StreamEvent::Exit { exit_code })) => {
                    if exit_code != 0 {
                        bail!("exit code {exit_code}");
                    }
                    break;
                }
            }
        }
        let expected: String = (0..lines).map(|i| format!("{tag}-{i}-{PAD}\n")).collect();
        if out != expected {
            bail!(
                "output differs: {} bytes, expected {} (first 120: {:?})",
                out.len(),
                expected.len(),
                &out.chars().take(120).collect::<String>()
            );
        }
        let mut s = stats.samples();
        s.exec_start_ms.push(start.context("no start event")?);
        s.exec_first_ms.extend(first);
        drop(s);
        stats.execs.fetch_add(1, Relaxed);
        stats.exec_lines.fetch_add(u64::from(lines), Relaxed);
        stats.exec_bytes.fetch_add(out.len() as u64, Relaxed);
        Ok(())
    }
    .await;
    stats.streams_open.fetch_sub(1, Relaxed);
    result
}

async fn stream_loop(
    client: Client,
    capsule: String,
    idx: usize,
    lines: u32,
    delay: Duration,
    deadline: Instant,
    stats: Arc<Stats>,
) {
    tokio::time::sleep(delay).await;
    let mut round = 0u64;
    while Instant::now() < deadline {
        let tag = format!("s{idx}r{round}");
        if let Err(e) = one_stream(&client, &capsule, &tag, lines, &stats).await {
            stats.error(format!("exec stream {tag} on {capsule}: {e:#}"));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        round += 1;
    }
}

/// Reads the terminal until `needle` has been seen; returns the bytes read.
async fn read_until(pty: &mut wrenn_client::Pty, buf: &mut Vec<u8>, needle: &[u8]) -> Result<u64> {
    let mut read = 0u64;
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(at) = buf.windows(needle.len()).position(|w| w == needle) {
            buf.drain(..at + needle.len());
            return Ok(read);
        }
        let ev = tokio::time::timeout(limit.saturating_duration_since(Instant::now()), pty.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{:?} not seen within 60 s (have {:?})",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(buf)
                )
            })?;
        match ev {
            Some(Ok(PtyEvent::Output(b))) => {
                read += b.len() as u64;
                buf.extend_from_slice(&b);
            }
            Some(Ok(other)) => bail!("unexpected terminal event: {other:?}"),
            Some(Err(e)) => bail!("the terminal failed: {e}"),
            None => bail!("the terminal closed"),
        }
    }
}

async fn pty_session(
    client: &Client,
    capsule: &str,
    idx: usize,
    interval: Duration,
    deadline: Instant,
    stats: &Stats,
) -> Result<()> {
    let start = PtyStart {
        cmd: Some("/bin/sh".into()),
        args: vec!["-c".into(), "stty -echo; echo READY; exec cat".into()],
        ..PtyStart::default()
    };
    let mut pty = client
        .pty_start(capsule, &start)
        .await
        .context("starting")?;
    open(&stats.ptys_open, &stats.ptys_peak);
    let result = async {
        let mut buf = Vec::new();
        read_until(&mut pty, &mut buf, b"READY").await?;
        let mut n = 0u64;
        while Instant::now() < deadline {
            let line = format!("p{idx}n{n}-{PAD}");
            let t = Instant::now();
            pty.writer().write(format!("{line}\n")).await?;
            let read = read_until(&mut pty, &mut buf, format!("{line}\r\n").as_bytes()).await?;
            stats.samples().pty_rt_ms.push(ms(t.elapsed()));
            stats.pty_rts.fetch_add(1, Relaxed);
            stats.pty_bytes.fetch_add(read, Relaxed);
            n += 1;
            tokio::time::sleep(interval).await;
        }
        pty.writer().kill().await?;
        // The end: `exit` (or the server closing after it).
        let limit = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout(limit.saturating_duration_since(Instant::now()), pty.next())
                .await
            {
                Err(_) => bail!("no exit within 30 s of the kill"),
                Ok(None) | Ok(Some(Ok(PtyEvent::Exit { .. }))) => return Ok(()),
                Ok(Some(Ok(PtyEvent::Output(_)))) => {}
                Ok(Some(Ok(other))) => bail!("after the kill: {other:?}"),
                Ok(Some(Err(e))) => bail!("after the kill: {e}"),
            }
        }
    }
    .await;
    stats.ptys_open.fetch_sub(1, Relaxed);
    result
}

async fn pty_loop(
    client: Client,
    capsule: String,
    idx: usize,
    interval: Duration,
    delay: Duration,
    deadline: Instant,
    stats: Arc<Stats>,
) {
    tokio::time::sleep(delay).await;
    while Instant::now() < deadline {
        if let Err(e) = pty_session(&client, &capsule, idx, interval, deadline, &stats).await {
            stats.error(format!("terminal {idx} on {capsule}: {e:#}"));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
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
