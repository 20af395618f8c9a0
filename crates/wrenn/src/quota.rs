//! The platform's default per-team quotas (`--quota-*`).

/// The platform's default per-team quotas (teams may have overrides: `PUT
/// /v1/teams/{id}/quotas`). A number, or `unlimited`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuotaArgs {
    /// Live capsules (pending, starting, running, paused) per team.
    #[arg(long, env = "WRENN_QUOTA_CAPSULES", default_value = "64", value_parser = parse_quota)]
    pub quota_capsules: Quota,
    /// vCPUs of a team's running capsules.
    #[arg(long, env = "WRENN_QUOTA_VCPUS", default_value = "64", value_parser = parse_quota)]
    pub quota_vcpus: Quota,
    /// Memory of a team's running capsules, MB.
    #[arg(long, env = "WRENN_QUOTA_MEMORY_MB", default_value = "131072", value_parser = parse_quota)]
    pub quota_memory_mb: Quota,
    /// Disk of a team's running and paused capsules, MB.
    #[arg(long, env = "WRENN_QUOTA_DISK_MB", default_value = "262144", value_parser = parse_quota)]
    pub quota_disk_mb: Quota,
    /// Snapshots (templates) per team.
    #[arg(long, env = "WRENN_QUOTA_SNAPSHOTS", default_value = "100", value_parser = parse_quota)]
    pub quota_snapshots: Quota,
}

/// A limit, or none.
#[derive(Debug, Clone, Copy)]
pub struct Quota(pub Option<i64>);

fn parse_quota(s: &str) -> Result<Quota, String> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(Quota(None));
    }
    s.parse::<u32>()
        .map(|n| Quota(Some(n.into())))
        .map_err(|_| format!("{s:?}: expected a number (0..=4294967295) or `unlimited`"))
}

impl QuotaArgs {
    pub fn limits(&self) -> wrenn_server::quotas::Limits {
        wrenn_server::quotas::Limits {
            capsules: self.quota_capsules.0,
            vcpus: self.quota_vcpus.0,
            memory_mb: self.quota_memory_mb.0,
            disk_mb: self.quota_disk_mb.0,
            snapshots: self.quota_snapshots.0,
        }
    }
}
