//! The held load's figures, printed and written to docs/reliability.md.

use std::fmt::Write as _;

use super::Samples;
use crate::soak::{leaks, pct};

pub struct LoadReport {
    pub(super) secs: f64,
    pub(super) load_secs: u64,
    /// The counters' check with the capsules running (`leaks::sees`): `None` when they saw
    /// every capsule's parts.
    pub(super) blind: Option<String>,
    pub(super) seen: leaks::Leaks,
    pub(super) capsules: usize,
    pub(super) streams: usize,
    pub(super) ptys: usize,
    pub(super) stream_lines: u32,
    pub(super) pty_interval_ms: u64,
    pub(super) execs: u64,
    pub(super) exec_lines: u64,
    pub(super) exec_bytes: u64,
    pub(super) pty_rts: u64,
    pub(super) pty_bytes: u64,
    pub(super) streams_peak: usize,
    pub(super) ptys_peak: usize,
    pub(super) errors: u64,
    pub(super) samples: Samples,
    pub(super) leaks: leaks::Leaks,
    pub(super) leaks_after_stop: leaks::Leaks,
    pub(super) machine: String,
    pub(super) date: String,
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
