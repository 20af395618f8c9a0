//! E2B's JSON shapes (camelCase, as the SDK's generated models read them) and how a capsule
//! row maps onto them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wrenn_types::CapsuleStatus;

use crate::{
    db::{CapsuleRow, E2bLifetime},
    time::rfc3339,
};

/// E2B's default lifetime when a create or connect names none (seconds).
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// The longest lifetime one call may ask for (seconds): a day, as E2B's plans allow.
pub const MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// `POST /v2/sandboxes` (and v1 `POST /sandboxes`, which adds `secure`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub timeout: Option<u64>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub auto_pause: Option<bool>,
    pub auto_pause_memory: Option<bool>,
    pub auto_resume: Option<serde_json::Value>,
    /// The one snake_case field of the SDK's create body.
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    pub secure: Option<bool>,
    pub network: Option<serde_json::Value>,
    pub mcp: Option<serde_json::Value>,
    pub iam: Option<serde_json::Value>,
    pub volume_mounts: Option<serde_json::Value>,
}

impl NewSandbox {
    /// The asked features Wrenn does not have: refused (400) rather than ignored.
    pub fn unsupported(&self) -> Option<&'static str> {
        let given = |v: &Option<serde_json::Value>| v.as_ref().is_some_and(|v| !v.is_null());
        let resume = self
            .auto_resume
            .as_ref()
            .and_then(|v| v.get("enabled"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if resume {
            Some("autoResume (resume on inbound traffic)")
        } else if self.auto_pause_memory == Some(false) {
            Some("autoPauseMemory=false (filesystem-only pause)")
        } else if given(&self.network) {
            Some("network (per-sandbox traffic rules)")
        } else if given(&self.mcp) {
            Some("mcp (the MCP gateway)")
        } else if given(&self.iam) {
            Some("iam (workload identity)")
        } else if given(&self.volume_mounts) {
            Some("volumeMounts (volumes)")
        } else {
            None
        }
    }
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutBody {
    pub timeout: u64,
}

/// `POST /v2/sandboxes/{id}/connect` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectBody {
    pub timeout: Option<u64>,
    /// `false` asks for a reboot instead of a memory resume (not supported).
    pub memory: Option<bool>,
}

/// `POST /sandboxes/{id}/pause` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PauseBody {
    pub memory: Option<bool>,
    pub require_healthy_guest: Option<bool>,
}

/// A created or connected sandbox (E2B's `Sandbox`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sandbox {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub alias: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(rename = "envdAccessToken")]
    pub envd_access_token: String,
    #[serde(rename = "trafficAccessToken")]
    pub traffic_access_token: Option<String>,
    pub domain: String,
}

/// A sandbox in a list or a get (E2B's `ListedSandbox` / `SandboxDetail`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub alias: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub started_at: String,
    pub end_at: String,
    pub envd_version: String,
    pub cpu_count: i64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i64,
    pub state: &'static str,
    pub metadata: BTreeMap<String, String>,
    pub domain: String,
    pub lifecycle: Lifecycle,
}

/// What happens at the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub auto_resume: bool,
    /// `kill` or `pause`.
    pub on_timeout: &'static str,
}

/// One metrics sample (E2B's `SandboxMetric`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: i64,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// A template (E2B's `Template`, the fields its list needs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub aliases: Vec<String>,
    pub names: Vec<String>,
    pub public: bool,
    pub cpu_count: i64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i64,
    pub envd_version: String,
    pub created_at: String,
    pub updated_at: String,
    pub build_status: &'static str,
}

/// A capsule's E2B state: only `running` and `paused` exist for the SDK (any other word
/// breaks its parser); a capsule in any other status is not shown.
pub fn state_of(status: CapsuleStatus) -> Option<&'static str> {
    match status {
        CapsuleStatus::Running => Some("running"),
        CapsuleStatus::Paused => Some("paused"),
        _ => None,
    }
}

/// The farthest `endAt` (a capsule without any timeout).
const NEVER: i64 = 253_402_300_799_000; // 9999-12-31T23:59:59Z

/// When a capsule ends: its E2B deadline, else (made through `/v1`) the end of its idle
/// timeout from its last activity, else never.
pub fn end_at(c: &CapsuleRow, life: Option<E2bLifetime>) -> i64 {
    match life {
        Some(l) => l.end_at,
        None if c.timeout_sec > 0 => {
            let since = c.last_active_at.or(c.started_at).unwrap_or(c.created_at);
            since.saturating_add(c.timeout_sec.saturating_mul(1000))
        }
        None => NEVER,
    }
}

/// The id of the host a capsule is on, as E2B's `clientID`.
fn client_id(c: &CapsuleRow) -> String {
    c.host_id.clone().unwrap_or_else(|| "wrenn".into())
}

/// The answer to a create or connect.
pub fn sandbox(c: &CapsuleRow, token: String, domain: &str) -> Sandbox {
    Sandbox {
        sandbox_id: c.id.clone(),
        template_id: c.template.clone(),
        alias: c.template.clone(),
        client_id: client_id(c),
        envd_version: super::ENVD_VERSION.into(),
        envd_access_token: token,
        traffic_access_token: None,
        domain: domain.into(),
    }
}

/// A capsule in a list or a get, or `None` when its status has no E2B state.
pub fn detail(c: &CapsuleRow, life: Option<E2bLifetime>, domain: &str) -> Option<SandboxDetail> {
    Some(SandboxDetail {
        sandbox_id: c.id.clone(),
        template_id: c.template.clone(),
        alias: c.template.clone(),
        client_id: client_id(c),
        started_at: rfc3339(c.started_at.unwrap_or(c.created_at)),
        end_at: rfc3339(end_at(c, life)),
        envd_version: super::ENVD_VERSION.into(),
        cpu_count: c.vcpus,
        memory_mb: c.memory_mb,
        disk_size_mb: c.disk_size_mb,
        state: state_of(c.status)?,
        metadata: c.metadata.clone().into_iter().collect(),
        domain: domain.into(),
        lifecycle: Lifecycle {
            auto_resume: false,
            on_timeout: if life.is_some_and(|l| l.auto_pause) {
                "pause"
            } else {
                "kill"
            },
        },
    })
}

/// A Wrenn metrics sample as E2B's, for capsule `c`.
pub fn metric(c: &CapsuleRow, p: &wrenn_proto::agent::v1::MetricPoint) -> SandboxMetric {
    const MIB: u64 = 1 << 20;
    let mb = |v: i64| u64::try_from(v).unwrap_or(0) * MIB;
    SandboxMetric {
        timestamp: rfc3339(p.unix.saturating_mul(1000)),
        timestamp_unix: p.unix,
        cpu_count: c.vcpus,
        cpu_used_pct: f64::from(p.cpu_pct),
        mem_used: p.mem_bytes,
        mem_total: mb(c.memory_mb),
        mem_cache: 0,
        disk_used: p.disk_bytes,
        disk_total: mb(c.disk_size_mb),
    }
}
