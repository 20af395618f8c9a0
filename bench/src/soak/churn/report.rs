//! The churn run's figures, printed and written to docs/reliability.md.

use std::fmt::Write as _;

use super::shared::Counts;
use crate::soak::leaks;

pub struct ChurnReport {
    pub(super) secs: f64,
    pub(super) churn_secs: u64,
    pub(super) capacity: usize,
    pub(super) kill_every_secs: u64,
    pub(super) seed: u64,
    pub(super) counts: Counts,
    pub(super) error_count: u64,
    pub(super) leaks: leaks::Leaks,
    pub(super) leaks_after_stop: leaks::Leaks,
    pub(super) machine: String,
    pub(super) date: String,
}

impl ChurnReport {
    pub fn held(&self) -> bool {
        self.error_count == 0
            && self.counts.bad_files == 0
            && self.counts.killed_other.is_empty()
            && self.counts.killed_destroyed == self.counts.kills
            && self.leaks.clean()
            && self.leaks_after_stop.clean()
    }

    fn figures(&self) -> Vec<(String, String)> {
        let k = &self.counts;
        vec![
            (
                "operations".into(),
                format!(
                    "{} creates ({} from snapshots), {} execs, {} file writes ({:.1} MB), {} file \
                     checks, {} pauses, {} resumes, {} snapshots ({} templates deleted), {} \
                     destroys",
                    k.creates,
                    k.snapshot_capsules,
                    k.execs,
                    k.writes,
                    k.bytes_written as f64 / 1e6,
                    k.file_checks,
                    k.pauses,
                    k.resumes,
                    k.snapshots,
                    k.templates_deleted,
                    k.destroys
                ),
            ),
            (
                "VMMs killed (SIGKILL)".into(),
                format!(
                    "{}: {} showed `error`, {} destroyed, {} otherwise{}",
                    k.kills,
                    k.killed_error,
                    k.killed_destroyed,
                    k.killed_other.len(),
                    k.killed_other
                        .iter()
                        .map(|s| format!(" [{s}]"))
                        .collect::<String>()
                ),
            ),
            (
                "surviving capsules' files".into(),
                format!(
                    "{} capsules alive at the end, {} files intact (sha256); {} files differed \
                     in the whole run",
                    k.survivors, k.survivor_files, k.bad_files
                ),
            ),
            ("errors".into(), self.error_count.to_string()),
            ("left after destroy".into(), self.leaks.line()),
            (
                "left after `wrenn up` stopped".into(),
                self.leaks_after_stop.line(),
            ),
        ]
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "wrenn-bench soak churn ({}, seed {}): {}\n",
            self.machine,
            self.seed,
            if self.held() { "HELD" } else { "DID NOT HOLD" }
        );
        for (k, v) in self.figures() {
            let _ = writeln!(out, "  {k:28} {v}");
        }
        for e in &self.counts.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        out
    }

    pub fn row(&self) -> String {
        let k = &self.counts;
        let mut out = String::new();
        let leaks = self.leaks.total() + self.leaks_after_stop.total();
        let _ = writeln!(
            out,
            "| Churn at capacity ({} capsules): create / exec / write / pause / resume / \
             snapshot / destroy, random `kill -9` of VMMs | {:.0} s; {} creates, {} execs, {} \
             writes, {} pauses + resumes, {} snapshots, {} destroys; {} VMMs killed | {} \
             errors; killed → `error` {}/{}, destroyed {}/{}; {} files of the surviving \
             capsules intact, {} differed in the run; leaks: {} (QEMU, netns, veths/TAPs, cgroups, folders, rows) |",
            self.capacity,
            self.secs,
            k.creates,
            k.execs,
            k.writes,
            k.pauses,
            k.snapshots,
            k.destroys,
            k.kills,
            self.error_count,
            k.killed_error,
            k.kills,
            k.killed_destroyed,
            k.kills,
            k.survivor_files,
            k.bad_files,
            leaks
        );
        out
    }

    pub fn markdown(&self) -> String {
        let k = &self.counts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run {} on {}: `wrenn-bench soak --phase churn --churn-secs {} --capacity {} \
             --kill-every-secs {} --seed {}` — **{}**.",
            self.date,
            self.machine,
            self.churn_secs,
            self.capacity,
            self.kill_every_secs,
            self.seed,
            if self.held() { "held" } else { "did not hold" }
        );
        let _ = writeln!(
            out,
            "{} workers each run a capsule through 4–15 random operations (files of 1–64 KiB \
             of random bytes, checked by sha256 through `sha256sum` in the guest and by \
             reading them back), then check all its files and destroy it; the last place of \
             the capacity is for capsules made from the snapshots. A killer sends SIGKILL to \
             the QEMU of a random capsule in use, only QEMUs naming the run's own data folder.",
            self.capacity.saturating_sub(1).max(1)
        );
        let _ = writeln!(out);
        for (key, v) in self.figures() {
            let _ = writeln!(out, "- {key}: {v}");
        }
        for e in &k.errors {
            let _ = writeln!(out, "- error: `{}`", e.replace('`', "'"));
        }
        out
    }
}
