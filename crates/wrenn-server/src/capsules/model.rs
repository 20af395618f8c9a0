//! A capsule as the API shows it, and the names it goes by.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use wrenn_proto::agent::v1::CapsuleState as PbState;

use crate::{db::CapsuleRow, time::rfc3339};

/// The status names of the API (the SDK's enum).
pub fn status_name(state: i32) -> &'static str {
    match PbState::try_from(state).unwrap_or(PbState::Unspecified) {
        PbState::Pending | PbState::Unspecified => "pending",
        PbState::Starting => "starting",
        PbState::Running => "running",
        PbState::Paused => "paused",
        PbState::Stopped => "stopped",
        PbState::Error => "error",
    }
}

/// A capsule's status (the SDK's enum has more values; this server uses these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapsuleStatus {
    Pending,
    Starting,
    Running,
    Paused,
    /// Destroyed (its calls answer `not_found`).
    Stopped,
    /// Failed; `error` says why.
    Error,
}

/// A capsule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Capsule {
    #[schema(example = "cl-0123456789abcdefghijklmno")]
    pub id: String,
    #[schema(value_type = CapsuleStatus)]
    pub status: String,
    #[schema(example = "minimal")]
    pub template: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    /// Idle seconds before the capsule is paused (0: never).
    pub timeout_sec: i64,
    pub disk_size_mb: i64,
    pub metadata: BTreeMap<String, String>,
    /// Why the capsule failed (status `error`), else null.
    #[schema(required = true)]
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub started_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub last_active_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_updated: String,
}

impl From<&CapsuleRow> for Capsule {
    fn from(c: &CapsuleRow) -> Capsule {
        Capsule {
            id: c.id.clone(),
            status: c.status.clone(),
            template: c.template.clone(),
            vcpus: c.vcpus,
            memory_mb: c.memory_mb,
            timeout_sec: c.timeout_sec,
            disk_size_mb: c.disk_size_mb,
            metadata: c.metadata.clone().into_iter().collect(),
            // The reason as the API may show it (no internal addresses).
            error: c
                .error
                .as_deref()
                .map(|e| crate::error::redact(e).into_owned()),
            created_at: rfc3339(c.created_at),
            started_at: c.started_at.map(rfc3339),
            last_active_at: c.last_active_at.map(rfc3339),
            last_updated: rfc3339(c.updated_at),
        }
    }
}

/// The answer to a create: the capsule, and how to reach its ports (shown this once).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CreatedCapsule {
    #[serde(flatten)]
    pub capsule: Capsule,
    /// Its ports are open to anyone through the proxy.
    pub public: bool,
    /// Opens the capsule's ports through the proxy (`X-Wrenn-Access-Token` or
    /// `?wrenn_token=`). Shown only here; stored hashed.
    pub access_token: String,
}

/// `[a-zA-Z0-9][a-zA-Z0-9._-]*`, at most `max` characters.
pub fn safe_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= max
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
