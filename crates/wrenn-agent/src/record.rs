//! `capsule.json`: what the agent needs to re-adopt or clean up a capsule after a restart.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use wrenn_types::CapsuleStatus;

use crate::error::{AgentError, Result};

/// Everything about a capsule that must survive the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CapsuleRecord {
    pub id: String,
    pub template: String,
    /// The template folder whose snapshot the capsule restores (a base template's shape, or
    /// a snapshot template); missing in records of older agents: the template's own.
    #[serde(default)]
    pub snapshot_dir: Option<PathBuf>,
    /// Disk size.
    #[serde(default)]
    pub disk_mib: u32,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub slot: u32,
    pub egress: bool,
    /// Egress allow/deny lists (none in records of older agents).
    #[serde(default)]
    pub egress_policy: wrenn_types::egress::EgressPolicy,
    pub state: CapsuleStatus,
    pub created_at_unix: i64,
    #[serde(default)]
    pub env_vars: HashMap<String, String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// envd's access token (the file is readable by root only).
    pub access_token: String,
    /// The QEMU process while one runs.
    #[serde(default)]
    pub vmm_pid: Option<u32>,
    #[serde(default)]
    pub error: Option<String>,
    /// Seconds without activity before `on_timeout`; 0 means never.
    #[serde(default)]
    pub timeout_secs: u32,
    #[serde(default)]
    pub on_timeout: TimeoutAction,
    /// Paused by the host's shutdown (`wrenn up`'s Ctrl-C), not by its user or its timeout:
    /// the next start resumes it. Cleared by any resume.
    #[serde(default)]
    pub resume_after_restart: bool,
}

/// What the reaper does with an idle capsule.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutAction {
    #[default]
    Pause,
    Destroy,
}

/// The record file in a capsule folder.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("capsule.json")
}

/// Writes the record atomically (temp file + rename), mode 0600.
pub fn save(dir: &Path, rec: &CapsuleRecord) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(".capsule.json.tmp");
    let text = serde_json::to_vec_pretty(rec)
        .map_err(|e| AgentError::io("encoding capsule.json", std::io::Error::other(e)))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| AgentError::io("writing capsule.json", e))?;
    // Explicitly: a leftover temp file keeps its mode through `open`.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| AgentError::io("writing capsule.json", e))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| AgentError::io("writing capsule.json", e))?;
    std::fs::rename(&tmp, path(dir)).map_err(|e| AgentError::io("writing capsule.json", e))
}

pub fn load(dir: &Path) -> Result<CapsuleRecord> {
    let text = std::fs::read(path(dir)).map_err(|e| AgentError::io("reading capsule.json", e))?;
    serde_json::from_slice(&text)
        .map_err(|e| AgentError::io("parsing capsule.json", std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rec = CapsuleRecord {
            id: "cl-x".into(),
            template: "minimal".into(),
            snapshot_dir: Some("/var/lib/wrenn/images/minimal".into()),
            disk_mib: 2048,
            vcpus: 1,
            memory_mib: 256,
            slot: 3,
            egress: true,
            egress_policy: wrenn_types::egress::EgressPolicy::new(
                &["example.com".into()],
                &["198.51.100.0/24".into()],
            )
            .unwrap(),
            state: CapsuleStatus::Running,
            created_at_unix: 1,
            env_vars: [("A".into(), "1".into())].into(),
            metadata: HashMap::new(),
            access_token: "t".into(),
            vmm_pid: Some(42),
            error: None,
            timeout_secs: 30,
            on_timeout: TimeoutAction::Destroy,
            resume_after_restart: true,
        };
        save(dir.path(), &rec).unwrap();
        assert_eq!(load(dir.path()).unwrap(), rec);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
