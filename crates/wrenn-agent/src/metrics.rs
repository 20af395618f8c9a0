//! Per-capsule resource use, sampled in the background from the VMM process and kept in memory
//! for 24 h at decreasing resolution: 1 s for 10 min, 30 s for 2 h, 5 min for 24 h.

use std::collections::VecDeque;

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub unix: i64,
    pub cpu_pct: f32,
    pub mem_bytes: u64,
    pub disk_bytes: u64,
}

const RAW_KEEP: usize = 600;
const MID_EVERY: usize = 30;
const MID_KEEP: usize = 240;
const LONG_EVERY: usize = 10;
const LONG_KEEP: usize = 288;

fn average(points: &[Point]) -> Point {
    let n = points.len().max(1) as f64;
    Point {
        unix: points.last().map(|p| p.unix).unwrap_or(0),
        cpu_pct: (points.iter().map(|p| f64::from(p.cpu_pct)).sum::<f64>() / n) as f32,
        mem_bytes: (points.iter().map(|p| p.mem_bytes as f64).sum::<f64>() / n) as u64,
        disk_bytes: points.last().map(|p| p.disk_bytes).unwrap_or(0),
    }
}

/// The three tiers of one capsule's history.
#[derive(Debug, Default)]
pub struct History {
    raw: VecDeque<Point>,
    mid: VecDeque<Point>,
    long: VecDeque<Point>,
    raw_since_mid: Vec<Point>,
    mid_since_long: Vec<Point>,
}

fn push_bounded(q: &mut VecDeque<Point>, p: Point, keep: usize) {
    q.push_back(p);
    while q.len() > keep {
        q.pop_front();
    }
}

impl History {
    pub fn record(&mut self, p: Point) {
        push_bounded(&mut self.raw, p, RAW_KEEP);
        self.raw_since_mid.push(p);
        if self.raw_since_mid.len() == MID_EVERY {
            let m = average(&self.raw_since_mid);
            self.raw_since_mid.clear();
            push_bounded(&mut self.mid, m, MID_KEEP);
            self.mid_since_long.push(m);
            if self.mid_since_long.len() == LONG_EVERY {
                let l = average(&self.mid_since_long);
                self.mid_since_long.clear();
                push_bounded(&mut self.long, l, LONG_KEEP);
            }
        }
    }

    /// The points of the last `range_secs`, from the finest tier that covers it.
    pub fn range(&self, range_secs: i64, now: i64) -> Vec<Point> {
        let tier = if range_secs <= RAW_KEEP as i64 {
            &self.raw
        } else if range_secs <= (MID_EVERY * MID_KEEP) as i64 {
            &self.mid
        } else {
            &self.long
        };
        tier.iter()
            .filter(|p| p.unix >= now - range_secs)
            .copied()
            .collect()
    }
}

/// What to sample a VMM process with between two readings.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuClock {
    ticks: u64,
    at: Option<std::time::Instant>,
}

/// Reads one point for the VMM `pid` with `vcpus`, whose disk is `disk`.
pub fn sample(pid: u32, vcpus: u32, disk: &std::path::Path, clock: &mut CpuClock) -> Option<Point> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; after "pid (comm)" they are 12 and 13.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let now = std::time::Instant::now();
    let cpu_pct = match clock.at {
        Some(at) => {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let used = ticks.saturating_sub(clock.ticks) as f64 / hz;
            (used / secs / f64::from(vcpus.max(1)) * 100.0).clamp(0.0, 100.0) as f32
        }
        None => 0.0,
    };
    *clock = CpuClock {
        ticks,
        at: Some(now),
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    use std::os::unix::fs::MetadataExt;
    let disk_bytes = std::fs::metadata(disk)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0);
    Some(Point {
        unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        cpu_pct,
        mem_bytes: rss_kib * 1024,
        disk_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(unix: i64, cpu: f32) -> Point {
        Point {
            unix,
            cpu_pct: cpu,
            mem_bytes: 100,
            disk_bytes: 7,
        }
    }

    #[test]
    fn tiers_fill_and_stay_bounded() {
        let mut h = History::default();
        let start = 1_000_000;
        let total = 24 * 3600 + 600;
        for i in 0..total {
            h.record(p(start + i, (i % 2) as f32 * 10.0));
        }
        let now = start + total - 1;
        assert_eq!(h.range(600, now).len(), 600);
        let two_hours = h.range(7200, now);
        assert!(
            (239..=241).contains(&two_hours.len()),
            "{}",
            two_hours.len()
        );
        assert!((two_hours[0].cpu_pct - 5.0).abs() < 0.01, "averaged");
        let day = h.range(24 * 3600, now);
        assert!((286..=288).contains(&day.len()), "{}", day.len());
        assert!(h.raw.len() <= RAW_KEEP && h.mid.len() <= MID_KEEP && h.long.len() <= LONG_KEEP);
    }

    #[test]
    fn samples_this_process() {
        let mut clock = CpuClock::default();
        let first = sample(
            std::process::id(),
            1,
            std::path::Path::new("/nonexistent"),
            &mut clock,
        )
        .unwrap();
        assert!(first.mem_bytes > 0);
        // 100 ms of this process's CPU time, however long the machine takes to give it (a
        // wall-clock spin on a loaded machine got under 10 %).
        let cpu_ms = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime(2) writes only the timespec it is given.
            unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
            t.tv_sec * 1000 + t.tv_nsec / 1_000_000
        };
        let start = cpu_ms();
        while cpu_ms() - start < 100 {}
        let second = sample(
            std::process::id(),
            1,
            std::path::Path::new("/nonexistent"),
            &mut clock,
        )
        .unwrap();
        assert!(second.cpu_pct > 0.0, "{}", second.cpu_pct);
    }
}
