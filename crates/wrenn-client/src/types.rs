//! Request and response bodies of the REST API. Responses keep fields this crate does not know
//! in `extra`, so serializing one again gives back what the server sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A capsule's status (the SDK's enum); anything else is `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapsuleStatus {
    Pending,
    Starting,
    Running,
    Pausing,
    Paused,
    Snapshotting,
    Resuming,
    Stopping,
    Hibernated,
    Stopped,
    Missing,
    Error,
    #[default]
    #[serde(other)]
    Unknown,
}

impl CapsuleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CapsuleStatus::Pending => "pending",
            CapsuleStatus::Starting => "starting",
            CapsuleStatus::Running => "running",
            CapsuleStatus::Pausing => "pausing",
            CapsuleStatus::Paused => "paused",
            CapsuleStatus::Snapshotting => "snapshotting",
            CapsuleStatus::Resuming => "resuming",
            CapsuleStatus::Stopping => "stopping",
            CapsuleStatus::Hibernated => "hibernated",
            CapsuleStatus::Stopped => "stopped",
            CapsuleStatus::Missing => "missing",
            CapsuleStatus::Error => "error",
            CapsuleStatus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for CapsuleStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A capsule as the API shows it. Timestamps are RFC 3339 strings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Capsule {
    pub id: String,
    pub status: CapsuleStatus,
    pub template: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u64>,
    pub timeout_sec: Option<u64>,
    pub disk_size_mb: Option<u64>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub error: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub last_active_at: Option<String>,
    pub last_updated: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The answer to `POST /v1/capsules/{id}/fork`: the children (each with its proxy access
/// token in `extra`), and how long the source was stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forked {
    pub source: String,
    pub capsules: Vec<Capsule>,
    pub source_paused_ms: f64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/capsules` (only the fields that are set are sent; the server picks the rest), and
/// a capsule's egress (`/v1/capsules/{id}/network`): the API's own bodies.
pub use wrenn_types::api::{
    capsules::CreateCapsuleBody as CreateCapsule,
    network::{CapsuleNetwork, NetworkPatch},
};

/// A command to run in a capsule: `cmd` is executed directly with `args` (no shell; use
/// `Exec::shell` for one).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Exec {
    pub cmd: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Foreground only: the command is killed after this many seconds (server default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_sec: Option<u32>,
    /// Background only: the process's tag (the server makes one when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl Exec {
    pub fn new(cmd: impl Into<String>) -> Exec {
        Exec {
            cmd: cmd.into(),
            ..Exec::default()
        }
    }

    /// `/bin/sh -c script`, as the SDK runs commands.
    pub fn shell(script: impl Into<String>) -> Exec {
        Exec {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Exec::default()
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Exec {
        self.envs.insert(key.into(), value.into());
        self
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Exec {
        self.cwd = Some(cwd.into());
        self
    }

    pub fn timeout_sec(mut self, secs: u32) -> Exec {
        self.timeout_sec = Some(secs);
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Exec {
        self.tag = Some(tag.into());
        self
    }
}

/// The body `POST …/exec` takes: an [`Exec`] and whether it runs in the background.
#[derive(Debug, Serialize)]
pub(crate) struct ExecBody<'a> {
    #[serde(flatten)]
    pub exec: &'a Exec,
    pub background: bool,
}

/// What a foreground command did. `stdout` and `stderr` are decoded (the server sends them
/// base64-encoded when they are not UTF-8); `raw` is the answer as it came.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// -1 when the server did not say (the process was killed or never ran).
    pub exit_code: i32,
    pub duration_ms: u64,
    /// Why the command did not finish normally (e.g. its timeout), if it did not.
    pub error: Option<String>,
    pub raw: Value,
}

/// The wire form of [`ExecResult`].
#[derive(Debug, Deserialize)]
pub(crate) struct ExecWire {
    #[serde(default)]
    pub stdout: Option<String>,
    #[serde(default)]
    pub stderr: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A process started in the background.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BackgroundProcess {
    pub pid: u32,
    pub tag: String,
    pub sandbox_id: Option<String>,
    pub cmd: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A running process of a capsule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tag: String,
    pub cmd: String,
    pub args: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProcessList {
    #[serde(default)]
    pub processes: Option<Vec<ProcessInfo>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    #[default]
    File,
    Directory,
    Symlink,
}

/// A file or directory in a capsule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileType,
    pub size: u64,
    pub mode: u32,
    /// `-rw-r--r--` style.
    pub permissions: String,
    pub owner: String,
    pub group: String,
    /// Unix seconds.
    pub modified_at: i64,
    pub symlink_target: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EntryList {
    #[serde(default)]
    pub entries: Option<Vec<FileEntry>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct OneEntry {
    pub entry: FileEntry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateKind {
    /// A platform template (built from the image recipe).
    Base,
    /// A team's template made from a capsule.
    #[default]
    Snapshot,
}

impl TemplateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateKind::Base => "base",
            TemplateKind::Snapshot => "snapshot",
        }
    }
}

/// A template capsules are created from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Template {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TemplateKind,
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u64>,
    pub size_bytes: Option<u64>,
    pub created_at: Option<String>,
    pub platform: Option<bool>,
    pub protected: Option<bool>,
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Resource use of a capsule over a range.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    pub sandbox_id: String,
    pub range: String,
    pub points: Vec<MetricPoint>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricPoint {
    pub timestamp_unix: i64,
    pub cpu_pct: f64,
    pub mem_bytes: u64,
    pub disk_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_and_fields_survive() {
        let c: Capsule = serde_json::from_str(
            r#"{"id":"cl-1","status":"teleporting","template":"minimal","colour":"blue"}"#,
        )
        .unwrap();
        assert_eq!(c.status, CapsuleStatus::Unknown);
        assert_eq!(c.extra["colour"], "blue");
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["colour"], "blue");
        assert_eq!(back["template"], "minimal");
    }

    #[test]
    fn create_sends_only_what_is_set() {
        assert_eq!(
            serde_json::to_string(&CreateCapsule::default()).unwrap(),
            "{}"
        );
        let body = CreateCapsule {
            template: Some("python".into()),
            vcpus: Some(2),
            envs: Some([("A".to_string(), "1".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"template":"python","vcpus":2,"envs":{"A":"1"}})
        );
    }

    #[test]
    fn exec_body_flattens() {
        let e = Exec::new("ls").args(["-l", "/"]).cwd("/tmp").timeout_sec(5);
        let v = serde_json::to_value(ExecBody {
            exec: &e,
            background: false,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cmd":"ls","args":["-l","/"],"cwd":"/tmp","timeout_sec":5,"background":false})
        );
    }
}
