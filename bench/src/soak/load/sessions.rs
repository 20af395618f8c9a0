//! The sessions held: exec streams (a numbered line a second, the whole output checked) and
//! terminals (`cat` with echo off, a typed line read back).

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use wrenn_client::{Client, Exec, PtyEvent, PtyStart, StreamEvent};

use super::{open, Stats, PAD};
use crate::soak::ms;

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

pub(super) async fn stream_loop(
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

pub(super) async fn pty_loop(
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
