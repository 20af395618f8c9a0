//! A capsule as the API shows it, and the names it goes by.

use wrenn_proto::agent::v1::CapsuleState as PbState;
pub use wrenn_types::{
    api::capsules::{Capsule, CreatedCapsule},
    CapsuleStatus,
};

use crate::{db::CapsuleRow, time::rfc3339};

/// The status of an agent.v1 `state` number (unknown numbers read as `pending`).
pub fn status_of(state: i32) -> CapsuleStatus {
    PbState::try_from(state)
        .unwrap_or(PbState::Unspecified)
        .into()
}

impl From<&CapsuleRow> for Capsule {
    fn from(c: &CapsuleRow) -> Capsule {
        Capsule {
            id: c.id.clone(),
            status: c.status,
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
