//! A real `wrenn up` (control plane + agent + microVMs) driven over HTTP: the port proxy (HTTP
//! and an upgraded connection to a server inside a capsule), its access rules, and bad input.
//! Needs root, QEMU and the `python` image (`make images`).

#[path = "../common/mod.rs"]
mod common;

use common::Up;

mod audit;
mod mtls;
mod proxy;
mod tenants;

impl Up {
    /// A `wrenn up` owning network slots `slots` (tests run in parallel: each its own range).
    fn start(slots: &str) -> Up {
        Up::in_temp_dir(slots, "minimal,python", |cmd| {
            cmd.env("WRENN_SIGNUP", "open");
            // The host's own limits are under test here, not the team's disk quota.
            cmd.env("WRENN_QUOTA_DISK_MB", "unlimited");
        })
    }
}
