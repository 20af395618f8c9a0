//! `/v1/capsules`: lifecycle, exec, processes, metrics.

pub mod create;
pub mod exec;
pub mod fork;
pub mod lifecycle;
pub mod lookup;
pub mod metrics;
pub mod model;

pub use lookup::{capsule_id, live, running};
pub use model::{status_of, Capsule, CapsuleStatus, CreatedCapsule};

/// Runs a create's or fork's `work` in a task of its own and waits for it: a client that goes
/// away (its connection closed, its HTTP request dropped) never cuts the work off between the
/// host making capsules and their rows being written (or the capsules undone). What it made
/// is then listed like any capsule of the team.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = crate::error::Result<T>> + Send + 'static,
) -> crate::error::Result<T> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(crate::error::ApiError::Internal(e.to_string())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{exec::*, metrics::*, model::*};
    use crate::{assert_same_json, db::CapsuleRow, time::rfc3339};

    fn row(error: Option<&str>) -> CapsuleRow {
        CapsuleRow {
            id: "cl-0123456789abcdefghijklmno".into(),
            team_id: "team-x".into(),
            template: "python".into(),
            status: CapsuleStatus::Running,
            vcpus: 2,
            memory_mb: 1024,
            disk_size_mb: 4096,
            timeout_sec: 300,
            metadata: [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into(),
            error: error.map(str::to_string),
            created_at: 1_700_000_000_123,
            started_at: Some(1_700_000_001_000),
            last_active_at: None,
            updated_at: 1_700_000_002_000,
            host_id: None,
        }
    }

    /// The shape before the types (`capsule_json`).
    fn old(c: &CapsuleRow) -> serde_json::Value {
        json!({
            "id": c.id,
            "status": c.status,
            "template": c.template,
            "vcpus": c.vcpus,
            "memory_mb": c.memory_mb,
            "timeout_sec": c.timeout_sec,
            "disk_size_mb": c.disk_size_mb,
            "metadata": c.metadata,
            "error": c.error,
            "created_at": rfc3339(c.created_at),
            "started_at": c.started_at.map(rfc3339),
            "last_active_at": c.last_active_at.map(rfc3339),
            "last_updated": rfc3339(c.updated_at),
        })
    }

    #[test]
    fn capsule_shapes_are_unchanged() {
        for r in [row(None), row(Some("the host no longer has this capsule"))] {
            assert_same_json(&Capsule::from(&r), old(&r));
            let created = CreatedCapsule {
                capsule: Capsule::from(&r),
                public: false,
                access_token: "0f".repeat(16),
            };
            let mut want = old(&r);
            want["public"] = json!(false);
            want["access_token"] = json!("0f".repeat(16));
            assert_same_json(&created, want);
        }
        // Nulls stay nulls.
        let v = serde_json::to_value(Capsule::from(&row(None))).unwrap();
        assert!(v["error"].is_null() && v["last_active_at"].is_null());
        assert_eq!(v["last_updated"], "2023-11-14T22:13:22Z");
    }

    #[test]
    fn exec_and_process_shapes_are_unchanged() {
        let done = ExecResult {
            stdout: "hi\n".into(),
            stderr: String::new(),
            exit_code: -1,
            duration_ms: 12,
            encoding: OutputEncoding::Utf8,
            error: None,
            sandbox_id: "cl-x".into(),
            cmd: "/bin/sh".into(),
        };
        assert_same_json(
            &done,
            json!({
                "stdout": "hi\n", "stderr": "", "exit_code": -1, "duration_ms": 12u64,
                "encoding": "utf-8", "error": None::<String>, "sandbox_id": "cl-x", "cmd": "/bin/sh",
            }),
        );
        let killed = ExecResult {
            encoding: OutputEncoding::Base64,
            error: Some("deadline exceeded".into()),
            ..done
        };
        let v = serde_json::to_value(&killed).unwrap();
        assert_eq!(
            (&v["encoding"], &v["error"]),
            (&json!("base64"), &json!("deadline exceeded"))
        );
        let started = BackgroundProcess {
            pid: 42,
            tag: "proc-1".into(),
            sandbox_id: "cl-x".into(),
            cmd: "sleep".into(),
        };
        assert_same_json(
            &started,
            json!({ "pid": 42u32, "tag": "proc-1", "sandbox_id": "cl-x", "cmd": "sleep" }),
        );
        let list = ProcessList {
            processes: vec![ProcessInfo {
                pid: 7,
                tag: "t".into(),
                cmd: "sleep".into(),
                args: vec!["9".into()],
            }],
        };
        let processes = vec![json!({ "pid": 7u32, "tag": "t", "cmd": "sleep", "args": ["9"] })];
        assert_same_json(&list, json!({ "processes": processes }));
        assert_same_json(
            &ProcessList { processes: vec![] },
            json!({ "processes": [] }),
        );
    }

    #[test]
    fn metrics_shape_is_unchanged() {
        let p = wrenn_proto::agent::v1::MetricPoint {
            unix: 1_700_000_000,
            cpu_pct: 12.3,
            mem_bytes: 1 << 30,
            disk_bytes: 5,
        };
        // Before: `json!` of the f32, which widens it to f64 (12.300000190734863).
        let old_point = json!({
            "timestamp_unix": p.unix,
            "cpu_pct": p.cpu_pct,
            "mem_bytes": p.mem_bytes,
            "disk_bytes": p.disk_bytes,
        });
        let m = CapsuleMetrics {
            sandbox_id: "cl-x".into(),
            range: "10m".into(),
            points: vec![metric_point(p)],
        };
        assert_same_json(
            &m,
            json!({ "sandbox_id": "cl-x", "range": "10m", "points": [old_point] }),
        );
    }
}
