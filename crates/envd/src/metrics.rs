//! A background sampler of CPU, memory and disk use, so `/metrics` answers at once.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::Serialize;

/// One reading, in the field names of E2B's and Wrenn's envd.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metrics {
    pub ts: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f32,
    pub mem_total_mib: u64,
    pub mem_used_mib: u64,
    pub mem_total: u64,
    pub mem_used: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

fn cpu_times(stat: &str) -> Option<(CpuTimes, u32)> {
    let mut lines = stat.lines();
    let first = lines.next()?;
    let fields: Vec<u64> = first
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    let count = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32;
    Some((
        CpuTimes {
            busy: total - idle,
            total,
        },
        count,
    ))
}

fn meminfo(text: &str) -> (u64, u64) {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = kib("MemTotal:");
    let available = kib("MemAvailable:");
    (total, total.saturating_sub(available))
}

fn disk() -> (u64, u64) {
    match nix::sys::statvfs::statvfs("/") {
        Ok(s) => {
            let frsize = s.fragment_size();
            let total = s.blocks() * frsize;
            let free = s.blocks_free() * frsize;
            (total.saturating_sub(free), total)
        }
        Err(_) => (0, 0),
    }
}

/// Holds the latest reading, refreshed every `period` by a background task.
#[derive(Debug, Clone, Default)]
pub struct Sampler {
    latest: Arc<RwLock<Metrics>>,
}

impl Sampler {
    pub fn start(period: Duration) -> Sampler {
        let sampler = Sampler::default();
        let latest = Arc::downgrade(&sampler.latest);
        tokio::spawn(async move {
            let mut prev: Option<CpuTimes> = None;
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(latest) = latest.upgrade() else {
                    return;
                };
                let m = sample(&mut prev);
                *latest.write().unwrap_or_else(|e| e.into_inner()) = m;
            }
        });
        sampler
    }

    pub fn latest(&self) -> Metrics {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn sample(prev: &mut Option<CpuTimes>) -> Metrics {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (cpu, cpu_count) = cpu_times(&stat).unwrap_or_default();
    let pct = match prev {
        Some(p) if cpu.total > p.total => {
            (cpu.busy.saturating_sub(p.busy)) as f64 / (cpu.total - p.total) as f64 * 100.0
        }
        _ => 0.0,
    };
    *prev = Some(cpu);
    let (mem_total, mem_used) =
        meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let (disk_used, disk_total) = disk();
    Metrics {
        ts: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        cpu_count: cpu_count.max(1),
        cpu_used_pct: ((pct * 100.0).round() / 100.0) as f32,
        mem_total_mib: mem_total >> 20,
        mem_used_mib: mem_used >> 20,
        mem_total,
        mem_used,
        disk_used,
        disk_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        let (t, n) = cpu_times(stat).unwrap();
        assert_eq!((t.busy, t.total, n), (150, 1000, 2));
        let (total, used) = meminfo("MemTotal:  1024 kB\nMemFree: 10 kB\nMemAvailable:  256 kB\n");
        assert_eq!((total, used), (1024 * 1024, 768 * 1024));
    }
}
