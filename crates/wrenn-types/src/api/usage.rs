//! `/v1/capsules/stats` and `/v1/capsules/usage`: capsule statistics and usage over time.

use serde::Serialize;

/// The ranges of team statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StatsRange {
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "6h")]
    H6,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "30d")]
    D30,
}

/// What the team runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CurrentUse {
    pub running_count: i64,
    pub vcpus_reserved: i64,
    pub memory_mb_reserved: i64,
}

/// The most the team ran at once over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeakUse {
    pub running_count: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

/// The range in buckets: the largest value of each bucket (all arrays are as long as `labels`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UseSeries {
    /// Each bucket's start (RFC 3339).
    pub labels: Vec<String>,
    pub running: Vec<i64>,
    pub vcpus: Vec<i64>,
    pub memory_mb: Vec<i64>,
}

/// The team's capsule statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapsuleStats {
    #[cfg_attr(feature = "openapi", schema(value_type = StatsRange))]
    pub range: String,
    pub current: CurrentUse,
    pub peaks: PeakUse,
    pub series: UseSeries,
}

/// One day's use.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsagePoint {
    #[cfg_attr(feature = "openapi", schema(format = Date))]
    pub date: String,
    /// vCPU-minutes reserved by running capsules.
    pub cpu_minutes: f64,
    /// MiB-minutes of memory reserved by running capsules.
    pub ram_mb_minutes: f64,
}

/// The team's use per day.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    #[cfg_attr(feature = "openapi", schema(format = Date))]
    pub from: String,
    #[cfg_attr(feature = "openapi", schema(format = Date))]
    pub to: String,
    /// Every day from `from` to `to`.
    pub points: Vec<UsagePoint>,
}
