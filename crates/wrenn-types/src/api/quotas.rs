//! `/v1/teams/{id}/quotas`: a team's limits and what it uses.

use serde::{Deserialize, Serialize};

/// Limits of one team (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Live capsules (pending, starting, running or paused).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub capsules: Option<i64>,
    /// vCPUs of running capsules.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub vcpus: Option<i64>,
    /// Memory of running capsules, MB.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub memory_mb: Option<i64>,
    /// Disk of running and paused capsules, MB.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub disk_mb: Option<i64>,
    /// Snapshots (the team's templates).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub snapshots: Option<i64>,
}

impl Limits {
    /// Each override where set, else the default.
    pub fn over(self, defaults: Limits) -> Limits {
        Limits {
            capsules: self.capsules.or(defaults.capsules),
            vcpus: self.vcpus.or(defaults.vcpus),
            memory_mb: self.memory_mb.or(defaults.memory_mb),
            disk_mb: self.disk_mb.or(defaults.disk_mb),
            snapshots: self.snapshots.or(defaults.snapshots),
        }
    }

    /// Each limit with its name.
    pub fn named(&self) -> [(&'static str, Option<i64>); 5] {
        [
            ("capsules", self.capsules),
            ("vcpus", self.vcpus),
            ("memory_mb", self.memory_mb),
            ("disk_mb", self.disk_mb),
            ("snapshots", self.snapshots),
        ]
    }
}

/// An amount of each resource: a team's use, or what a request adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Amounts {
    pub capsules: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub snapshots: i64,
}

impl Amounts {
    /// Each amount with its name.
    pub fn named(&self) -> [(&'static str, i64); 5] {
        [
            ("capsules", self.capsules),
            ("vcpus", self.vcpus),
            ("memory_mb", self.memory_mb),
            ("disk_mb", self.disk_mb),
            ("snapshots", self.snapshots),
        ]
    }
}

/// A team's quotas: its limits (override or default), its own overrides, and its use.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeamQuotas {
    pub team_id: String,
    /// What applies now (`null`: unlimited).
    pub limits: Limits,
    /// The team's overrides (`null`: the platform default applies).
    pub overrides: Limits,
    /// The platform's defaults.
    pub defaults: Limits,
    /// What the team uses now (including requests in flight).
    pub usage: Amounts,
}
