//! `/v1/builds`: templates built from a recipe or a Dockerfile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// Queued.
    Pending,
    Running,
    Success,
    Failed,
    Cancelled,
}

impl BuildStatus {
    /// The stored text (the database's CHECK lists the same).
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Pending => "pending",
            BuildStatus::Running => "running",
            BuildStatus::Success => "success",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`BuildStatus::as_str`]'s text.
    pub fn parse(s: &str) -> Option<BuildStatus> {
        Some(match s {
            "pending" => BuildStatus::Pending,
            "running" => BuildStatus::Running,
            "success" => BuildStatus::Success,
            "failed" => BuildStatus::Failed,
            "cancelled" => BuildStatus::Cancelled,
            _ => return None,
        })
    }

    /// Success, failed or cancelled: nothing changes any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BuildStatus::Success | BuildStatus::Failed | BuildStatus::Cancelled
        )
    }
}

/// A template to build. Exactly one of `recipe` and `dockerfile`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(example = json!({"name": "my-env", "recipe": ["RUN echo hello > /home/user/hello"]}))
)]
#[serde(deny_unknown_fields)]
pub struct CreateBuildBody {
    /// The template to make: `[a-zA-Z0-9][a-zA-Z0-9._-]*`, at most 48 characters. An existing
    /// template of the team with that name is replaced when the build succeeds.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "my-env", pattern = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,47}$")
    )]
    pub name: String,
    /// A recipe, one instruction a line (`RUN`, `START`, `ENV`, `WORKDIR`, `USER`, `COPY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_items = 1, example = json!(["RUN echo hello > /home/user/hello"]))
    )]
    pub recipe: Option<Vec<String>>,
    /// A Dockerfile (the subset in docs/builds.md); its `FROM` names the base template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// A recipe's base template (default `minimal`); a Dockerfile names it with `FROM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_template: Option<String>,
    /// `[--interval=3s] [--timeout=10s] [--start-period=0s] [--retries=0] <command>`: run
    /// until it exits 0 before the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<String>,
    /// The build capsule's (and the template's) vCPUs, 1..=8 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 8))]
    pub vcpus: Option<u32>,
    /// Memory in MiB, 128..=16384 (default the base template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 128, maximum = 16384))]
    pub memory_mb: Option<u32>,
    /// Disk in MiB (default the base template's), at most 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65536))]
    pub disk_mb: Option<u32>,
    /// The files `COPY` reads: a tar, tar.gz or zip archive, base64, at most 100 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

/// One step's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildStep {
    /// From 1.
    pub step: u32,
    /// `setup` (base, archive), `recipe`, `healthcheck` or `snapshot`.
    pub phase: String,
    /// The recipe's line (0 outside the recipe).
    pub line: u32,
    /// The instruction as written.
    pub cmd: String,
    pub stdout: String,
    pub stderr: String,
    /// The command's exit code, when it ran one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    pub ok: bool,
    pub elapsed_ms: u64,
}

/// A build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Build {
    #[cfg_attr(feature = "openapi", schema(example = "bld-0123456789abcdefghijklmno"))]
    pub id: String,
    /// The template it makes.
    pub name: String,
    /// `recipe` or `dockerfile`.
    pub format: String,
    pub base_template: String,
    pub status: BuildStatus,
    /// Steps done (of `total_steps`).
    pub current_step: u32,
    pub total_steps: u32,
    pub logs: Vec<BuildStep>,
    /// Why it failed: the step, its line and the command's output or exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<String>,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    /// The build capsule, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capsule_id: Option<String>,
    /// The user, folder and environment the template's capsules run commands with.
    pub default_user: String,
    pub default_workdir: String,
    pub default_env: BTreeMap<String, String>,
    /// Ports the Dockerfile `EXPOSE`s (`8000/tcp`).
    pub expose: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub completed_at: Option<String>,
    /// What it makes: `snapshot` (a healthcheck or a started process: memory and processes
    /// kept) or `base` (the disk flattened, capsules boot afresh).
    #[serde(default)]
    pub template_type: super::templates::TemplateType,
}
