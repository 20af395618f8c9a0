//! The simulated cluster and its arrivals, made from one seed so every strategy sees the same.
//!
//! Hosts: 40 % small (16 cores, 64 GiB, 500 GiB disk), 40 % medium (32, 128 GiB, 1000 GiB),
//! 20 % large (64, 256 GiB, 2000 GiB); zone tag `eu` (30 %) or `us`, `gpu` (8 %), `ssd`
//! (20 %); 2 % draining, 1 % offline; the first 20 are BYOC hosts of 5 teams (4 each). Half the
//! hosts hold `minimal` 1x512; each snapshot template starts on the one host it was made on.
//!
//! Arrivals: shapes 1x512 (40 %), 2x1024 (25 %), 2x2048 (15 %), 4x4096 (12 %), 8x8192 (5 %),
//! 16x16384 (3 %) with 2, 5 or 10 GiB of disk; 60 % from 5 base templates (Zipf-like), 40 %
//! from 500 snapshot templates (weight 1/rank); 2 % from BYOC teams; tags none (80 %), `eu`
//! (10 %), `gpu` (6 %), `gpu`+`eu` (2 %), `ssd` (2 %).
//!
//! Two phases. **Churn** (the first 70 % of the arrivals): each capsule lives a uniform
//! 1..2M arrivals, M = 60 % of what the open regular hosts hold of the mean capsule, so the
//! cluster settles around 60 % full; a fifth are paused halfway through their lives.
//! **Fill** (the rest): nobody leaves any more (the churn's survivors stay), so the cluster
//! fills up until creates are refused.
use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::Rng;
use wrenn_server::scheduler::{Claims, HostUsage, HostView, Request, Reserves, TemplateWant};
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

/// Disk sizes (MB), equally likely.
const DISKS: [u64; 3] = [2048, 5120, 10240];
/// Share of the arrivals from BYOC teams.
const BYOC_SHARE: f64 = 0.02;
/// Share of the arrivals in the churn phase.
pub const CHURN_SHARE: f64 = 0.7;
/// How full the churn keeps the cluster (of what it can hold), roughly.
const CHURN_FILL: f64 = 0.6;

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
                // Every simulated host builds every base template on first need.
                buildable: BASES.iter().map(|b| (*b).to_owned()).collect(),
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

/// The mean capsule of the arrivals (shape and disk).
fn mean_capsule() -> (f64, f64, f64) {
    let total: f64 = SHAPES.iter().map(|s| f64::from(s.2)).sum();
    let (mut v, mut m) = (0.0, 0.0);
    for (vcpus, mb, w) in SHAPES {
        v += f64::from(vcpus) * f64::from(w) / total;
        m += mb as f64 * f64::from(w) / total;
    }
    let d = DISKS.iter().sum::<u64>() as f64 / DISKS.len() as f64;
    (v, m, d)
}

/// How many mean capsules the open regular hosts hold (each host by its scarcest resource).
pub fn capacity_in_capsules(hosts: &[HostView], reserves: &Reserves) -> f64 {
    let (v, m, d) = mean_capsule();
    hosts
        .iter()
        .filter(|h| h.kind == HostKind::Regular && h.online && !h.draining)
        .map(|h| {
            let u = reserves.usable(h.capacity);
            (u.vcpus as f64 / v)
                .min(u.memory_mb as f64 / m)
                .min(u.disk_mb as f64 / d)
        })
        .sum()
}

/// One capsule of the run.
pub struct Arrival {
    pub req: Request,
    /// The arrival index at which it is stopped (`usize::MAX`: never).
    pub depart_at: usize,
    /// The arrival index at which it is paused, for some.
    pub pause_at: Option<usize>,
}

/// `n` arrivals for a cluster that holds about `capacity` mean capsules.
pub fn arrivals(n: usize, capacity: f64, rng: &mut SmallRng) -> Vec<Arrival> {
    let snapshot_weights: Vec<f64> = (0..SNAPSHOTS).map(|j| 1.0 / (j + 1) as f64).collect();
    let snapshot_total: f64 = snapshot_weights.iter().sum();
    // A snapshot template's shape is its own, drawn once like any other capsule's.
    let snapshot_shapes: Vec<usize> = (0..SNAPSHOTS)
        .map(|_| weighted(rng, SHAPES.map(|s| s.2)))
        .collect();
    let fill_from = (n as f64 * CHURN_SHARE) as usize;
    let life = ((capacity * CHURN_FILL) as usize).max(1);
    (0..n)
        .map(|i| {
            let byoc = rng.random_bool(BYOC_SHARE);
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
                disk_mb: DISKS[rng.random_range(0..DISKS.len())],
                template: Some(template),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                force_host: None,
            };
            let pause = rng.random_bool(0.2);
            // Churn capsules leave unless the fill phase has begun; fill capsules stay.
            let depart_at = if i + lifetime < fill_from {
                i + lifetime
            } else {
                usize::MAX
            };
            Arrival {
                req,
                depart_at,
                pause_at: (pause && i < fill_from).then_some(i + lifetime / 2),
            }
        })
        .collect()
}
