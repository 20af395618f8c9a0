//! `/v1/builds`: templates built from a recipe or a Dockerfile. The handlers check and queue
//! a build (`pending`); [`queue`] runs queued builds a few at a time ([`runner`]), each in a
//! build capsule, and ends with a snapshot template, or a base template when nothing was
//! started ([`result::kind`]). See docs/builds.md.

pub mod admin;
pub mod archive;
pub mod handlers;
pub mod hosts;
pub mod image;
pub mod queue;
pub mod result;
pub mod runner;
pub mod steps;

use std::collections::BTreeMap;

use wrenn_types::api::builds::{Build, BuildStatus, BuildStep};
use wrenn_types::recipe::Base;

use crate::{db::BuildRow, time::rfc3339};

/// What a build starts from: a Wrenn template (by name) or an OCI image reference, pulled
/// and made into a template on the host that runs the build (`runner`).
pub fn base_of(base: &Base) -> (String, bool) {
    match base {
        Base::Template(t) => (t.to_string(), false),
        Base::Image(r) => (r.clone(), true),
    }
}

/// Templates made from OCI images are named `oci-<digest prefix>` on the hosts (the agent's
/// `templates::IMAGE_PREFIX`): the builds' own, never listed nor used directly by a team.
pub const IMAGE_TEMPLATE_PREFIX: &str = "oci-";

impl From<&BuildRow> for Build {
    fn from(b: &BuildRow) -> Build {
        Build {
            id: b.id.clone(),
            name: b.name.clone(),
            format: b.format.clone(),
            base_template: b.base_template.clone(),
            status: BuildStatus::parse(&b.status).unwrap_or(BuildStatus::Failed),
            current_step: b.current_step.max(0) as u32,
            total_steps: b.total_steps.max(0) as u32,
            logs: serde_json::from_str::<Vec<BuildStep>>(&b.logs).unwrap_or_default(),
            error: b.error.clone(),
            healthcheck: b.healthcheck.clone(),
            vcpus: b.vcpus.max(0) as u32,
            memory_mb: b.memory_mb.max(0) as u32,
            disk_mb: b.disk_mb.max(0) as u32,
            capsule_id: b.capsule_id.clone().filter(|_| b.status == "running"),
            default_user: b.default_user.clone(),
            default_workdir: b.default_workdir.clone(),
            default_env: serde_json::from_str::<BTreeMap<String, String>>(&b.default_env)
                .unwrap_or_default(),
            expose: serde_json::from_str(&b.expose).unwrap_or_default(),
            created_at: rfc3339(b.created_at),
            started_at: b.started_at.map(rfc3339),
            completed_at: b.completed_at.map(rfc3339),
            template_type: result::kind_of(b),
        }
    }
}
