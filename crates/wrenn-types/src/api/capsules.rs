//! `/v1/capsules`: lifecycle, exec, processes, metrics.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::CapsuleStatus;

/// A capsule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capsule {
    #[cfg_attr(feature = "openapi", schema(example = "cl-0123456789abcdefghijklmno"))]
    pub id: String,
    pub status: CapsuleStatus,
    #[cfg_attr(feature = "openapi", schema(example = "minimal"))]
    pub template: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    /// Idle seconds before the capsule is paused (0: never).
    pub timeout_sec: i64,
    pub disk_size_mb: i64,
    pub metadata: BTreeMap<String, String>,
    /// Why the capsule failed (status `error`), else null.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(format = DateTime, required = true))]
    pub started_at: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime, required = true))]
    pub last_active_at: Option<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_updated: String,
}

/// The answer to a create: the capsule, and how to reach its ports (shown this once).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedCapsule {
    #[serde(flatten)]
    pub capsule: Capsule,
    /// Its ports are open to anyone through the proxy.
    pub public: bool,
    /// Opens the capsule's ports through the proxy (`X-Wrenn-Access-Token` or
    /// `?wrenn_token=`). Shown only here; stored hashed.
    pub access_token: String,
}

/// A live fork: how many children.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ForkCapsuleBody {
    /// How many children, 1..=32 (default 1).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 32, example = 2))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// The answer to a fork: the children (each with its proxy access token, shown this once).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForkedCapsules {
    /// The source capsule's id.
    pub source: String,
    pub capsules: Vec<CreatedCapsule>,
    /// How long the source was stopped for its state to be copied, in milliseconds (0 for a
    /// paused source).
    pub source_paused_ms: f64,
}

/// A new capsule; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCapsuleBody {
    /// A platform template or one of the team's snapshots (default `minimal`).
    #[cfg_attr(feature = "openapi", schema(example = "minimal"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// 1..=32 (default: the template's). Ignored for snapshot templates.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 32))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// 128..=65536 (default: the template's). Ignored for snapshot templates.
    #[cfg_attr(feature = "openapi", schema(minimum = 128, maximum = 65536))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Idle seconds before the capsule is paused (default: never).
    #[cfg_attr(feature = "openapi", schema(format = Int64, minimum = 0, maximum = 4294967295.0))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_sec: Option<u32>,
    /// Disk size; larger than the template's grows the disk.
    #[cfg_attr(feature = "openapi", schema(format = Int64, minimum = 0, maximum = 4294967295.0))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Environment variables for every command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envs: Option<BTreeMap<String, String>>,
    /// Internet access (default on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
    /// CIDRs and domain names it may reach (default: every public address); see
    /// `PATCH /v1/capsules/{id}/network`.
    #[cfg_attr(feature = "openapi", schema(example = json!(["example.com", "203.0.113.0/24"])))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_allow: Option<Vec<String>>,
    /// CIDRs and domain names it may not reach (beats `egress_allow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<String>>,
    /// Its ports are open to anyone through the proxy (default: API key or access token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    /// Place it only on a host that has every one of these tags.
    #[cfg_attr(feature = "openapi", schema(example = json!(["gpu"])))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_tags: Option<Vec<String>>,
    /// Platform admins only: place it on this host (an online host the team may use),
    /// whatever the scheduler would choose. Anyone else gets 403 `forbidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
}

/// A command to run in the capsule.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// The program (not a shell line: use `/bin/sh` with `["-c", line]`).
    #[cfg_attr(feature = "openapi", schema(example = "/bin/sh"))]
    pub cmd: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(example = json!(["-c", "echo hello"])))]
    pub args: Vec<String>,
    /// Start it in the background and answer at once (202) with its pid and tag.
    #[serde(default)]
    pub background: bool,
    /// Foreground only: kill it after this many seconds (default 60).
    #[cfg_attr(feature = "openapi", schema(format = Int64, minimum = 0, maximum = 4294967295.0))]
    pub timeout_sec: Option<u32>,
    pub envs: Option<HashMap<String, String>>,
    pub cwd: Option<String>,
    /// Background only: a name to find the process by (default `proc-…`).
    pub tag: Option<String>,
    /// The user to run as (default: the template's).
    pub user: Option<String>,
}

/// How `stdout` and `stderr` are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OutputEncoding {
    /// Both are the output as text.
    #[serde(rename = "utf-8")]
    Utf8,
    /// The output is not UTF-8: both are base64.
    #[serde(rename = "base64")]
    Base64,
}

/// A foreground command's result (a non-zero exit is not an error).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    pub encoding: OutputEncoding,
    /// Set when the process was killed (signal or timeout), else null.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<String>,
    /// The capsule's id.
    pub sandbox_id: String,
    pub cmd: String,
}

/// A background command, started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackgroundProcess {
    pub pid: u32,
    pub tag: String,
    /// The capsule's id.
    pub sandbox_id: String,
    pub cmd: String,
}

/// A process running in a capsule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessInfo {
    pub pid: u32,
    pub tag: String,
    pub cmd: String,
    pub args: Vec<String>,
}

/// A capsule's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

/// The ranges of a capsule's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MetricsRange {
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "10m")]
    M10,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "2h")]
    H2,
    #[serde(rename = "6h")]
    H6,
    #[serde(rename = "12h")]
    H12,
    #[serde(rename = "24h")]
    H24,
}

/// One sample of a capsule's use.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricPoint {
    /// Unix seconds.
    pub timestamp_unix: i64,
    /// CPU use of its VM, in percent of one CPU.
    pub cpu_pct: f64,
    pub mem_bytes: u64,
    /// Disk space its VM has allocated.
    pub disk_bytes: u64,
}

/// A capsule's samples over a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapsuleMetrics {
    /// The capsule's id.
    pub sandbox_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = MetricsRange))]
    pub range: String,
    /// Oldest first.
    pub points: Vec<MetricPoint>,
}
