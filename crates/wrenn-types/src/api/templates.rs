//! `/v1/templates` and `/v1/snapshots`: templates and the snapshots teams make of capsules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a template comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TemplateType {
    /// Booted afresh: a platform template built from the image recipe, or a team's build
    /// that started no process (its disk flattened).
    Base,
    /// A snapshot of a capsule (memory, disk, processes): a team's, or a build's that started a
    /// process or has a healthcheck.
    #[default]
    Snapshot,
}

/// A template capsules are created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Template {
    #[cfg_attr(feature = "openapi", schema(example = "my-env"))]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TemplateType,
    pub vcpus: i64,
    pub memory_mb: i64,
    /// Bytes it takes on the host's disk.
    pub size_bytes: i64,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    /// A platform template (shared by every team).
    pub platform: bool,
    /// Cannot be deleted through the API.
    pub protected: bool,
    /// A snapshot's source capsule's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A snapshot to take.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotBody {
    /// The capsule to snapshot (it is left paused).
    #[cfg_attr(feature = "openapi", schema(example = "cl-0123456789abcdefghijklmno"))]
    pub sandbox_id: String,
    /// `[a-zA-Z0-9][a-zA-Z0-9._-]*`, at most 48 characters (default `template-…`).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "my-env", pattern = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,47}$")
    )]
    pub name: Option<String>,
}
