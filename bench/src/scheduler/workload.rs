//! The simulated cluster and its arrivals, made from one seed so every strategy sees the same.
//!
//! Hosts: 40 % small (16 cores, 64 GiB, 500 GiB disk), 40 % medium (32, 128 GiB, 1000 GiB),
//! 20 % large (64, 256 GiB, 2000 GiB); zone tag `eu` (30 %) or `us`, `gpu` (8 %), `ssd`
//! (20 %); 2 % draining, 1 % offline; the first 20 are BYOC hosts of 5 teams (4 each). Half the
//! hosts hold `minimal` 1x512; each snapshot template starts on the one host it was made on.
//!
//! Arrivals: shapes 1x512 (40 %), 2x1024 (25 %), 2x2048 (15 %), 4x4096 (12 %), 8x8192 (5 %),
//! 16x16384 (3 %) with 2, 5 or 10 GiB of disk; 60 % from 5 base templates (Zipf-like), 40 %
//! from 500 snapshot templates (weight 1/rank); 5 % from BYOC teams; tags none (80 %), `eu`
//! (10 %), `gpu` (6 %), `gpu`+`eu` (2 %), `ssd` (2 %). Each lives a uniform 1..2L arrivals
//! (L = half the arrivals: the cluster fills towards the end); a fifth are paused halfway.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::Rng;
use wrenn_server::scheduler::{Claims, HostUsage, HostView, Request, TemplateWant};
use wrenn_types::api::hosts::HostKind;

pub const BYOC_TEAMS: usize = 5;
const BYOC_HOSTS_PER_TEAM: usize = 4;
const BASES: [&str; 5] = ["minimal", "python", "node", "go", "rust"];
const BASE_WEIGHTS: [u32; 5] = [50, 25, 12, 8, 5];
pub const SNAPSHOTS: usize = 500;
/// (vCPUs, MB, weight)
const SHAPES: [(u32, u64, u32); 6] = [
    (1, 512, 40),
    (2, 1024, 25),
    (2, 2048, 15),
    (4, 4096, 12),
    (8, 8192, 5),
    (16, 16384, 3),
];

fn weighted<const N: usize>(rng: &mut SmallRng, weights: [u32; N]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.random_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    N - 1
}

fn shape_name(vcpus: u32, memory_mb: u64) -> String {
    format!("{vcpus}x{memory_mb}")
}

pub fn hosts(n: usize, rng: &mut SmallRng) -> Vec<HostView> {
    (0..n)
        .map(|i| {
            let (cores, mem_gib, disk_gib) = match weighted(rng, [40, 40, 20]) {
                0 => (16, 64, 500),
                1 => (32, 128, 1000),
                _ => (64, 256, 2000),
            };
            let byoc = i < BYOC_TEAMS * BYOC_HOSTS_PER_TEAM;
            let mut tags = vec![if rng.random_bool(0.3) { "eu" } else { "us" }.to_owned()];
            if rng.random_bool(0.08) {
                tags.push("gpu".to_owned());
            }
            if rng.random_bool(0.2) {
                tags.push("ssd".to_owned());
            }
            let mut templates = BTreeMap::new();
            if rng.random_bool(0.5) {
                templates.insert("minimal".to_owned(), vec![shape_name(1, 512)]);
            }
            HostView {
                id: format!("host-{i:04}"),
                kind: if byoc {
                    HostKind::Byoc
                } else {
                    HostKind::Regular
                },
                team: byoc.then(|| format!("byoc-{}", i / BYOC_HOSTS_PER_TEAM)),
                tags,
                online: byoc || !rng.random_bool(0.01),
                draining: !byoc && rng.random_bool(0.02),
                capacity: Claims::new(cores, mem_gib * 1024, disk_gib * 1024),
                usage: HostUsage::default(),
                templates,
                // The simulated hosts are bounded by CPU, memory and disk only.
                slots: None,
            }
        })
        .collect()
}

/// Each snapshot template on the one host it was made on.
pub fn seed_snapshots(hosts: &mut [HostView], rng: &mut SmallRng) {
    for j in 0..SNAPSHOTS {
        let h = rng.random_range(0..hosts.len());
        hosts[h].templates.insert(format!("snap-{j}"), Vec::new());
    }
}

/// One capsule of the run.
pub struct Arrival {
    pub req: Request,
    /// The arrival index at which it is stopped.
    pub depart_at: usize,
    /// The arrival index at which it is paused, for some.
    pub pause_at: Option<usize>,
}

pub fn arrivals(n: usize, rng: &mut SmallRng) -> Vec<Arrival> {
    let snapshot_weights: Vec<f64> = (0..SNAPSHOTS).map(|j| 1.0 / (j + 1) as f64).collect();
    let snapshot_total: f64 = snapshot_weights.iter().sum();
    // A snapshot template's shape is its own, drawn once like any other capsule's.
    let snapshot_shapes: Vec<usize> = (0..SNAPSHOTS)
        .map(|_| weighted(rng, SHAPES.map(|s| s.2)))
        .collect();
    let life = (n / 2).max(1);
    (0..n)
        .map(|i| {
            let byoc = rng.random_bool(0.05);
            let (template, vcpus, memory_mb) = if rng.random_bool(0.6) {
                let (v, m, _) = SHAPES[weighted(rng, SHAPES.map(|s| s.2))];
                let want = TemplateWant {
                    name: BASES[weighted(rng, BASE_WEIGHTS)].to_owned(),
                    shape: Some(shape_name(v, m)),
                };
                (want, v, m)
            } else {
                let mut x = rng.random_range(0.0..snapshot_total);
                let j = snapshot_weights
                    .iter()
                    .position(|w| {
                        x -= w;
                        x < 0.0
                    })
                    .unwrap_or(SNAPSHOTS - 1);
                let (v, m, _) = SHAPES[snapshot_shapes[j]];
                let want = TemplateWant {
                    name: format!("snap-{j}"),
                    shape: None,
                };
                (want, v, m)
            };
            let tags: &[&str] = if byoc {
                &[]
            } else {
                match weighted(rng, [80, 10, 6, 2, 2]) {
                    0 => &[],
                    1 => &["eu"],
                    2 => &["gpu"],
                    3 => &["gpu", "eu"],
                    _ => &["ssd"],
                }
            };
            let lifetime = rng.random_range(1..=2 * life);
            let req = Request {
                team: if byoc {
                    format!("byoc-{}", rng.random_range(0..BYOC_TEAMS))
                } else {
                    format!("team-{}", rng.random_range(0..1000))
                },
                team_is_byoc: byoc,
                vcpus,
                memory_mb,
                disk_mb: [2048, 5120, 10240][rng.random_range(0..3)],
                template: Some(template),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                force_host: None,
            };
            Arrival {
                req,
                depart_at: i + lifetime,
                pause_at: rng.random_bool(0.2).then_some(i + lifetime / 2),
            }
        })
        .collect()
}
