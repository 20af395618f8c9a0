//! The gRPC surface through a real agent (in-process server, tonic client, real capsules).
//! Needs root, nftables, QEMU and `make images`.

use std::sync::Arc;

use wrenn_agent::manager::Manager;
use wrenn_proto::agent::v1::{agent_client::AgentClient, CapsuleRef, ExecRequest};

#[path = "../support/mod.rs"]
mod support;

mod lifecycle;
mod processes;
mod templates;

use support::images_dir;

/// A real agent (manager + gRPC server) on loopback, owning the slots in `slots`.
struct TestAgent {
    client: AgentClient<tonic::transport::Channel>,
    manager: Arc<Manager>,
    server: support::Server,
    data: tempfile::TempDir,
}

impl TestAgent {
    async fn start(max_capsules: usize, slots: std::ops::RangeInclusive<u32>) -> TestAgent {
        let data = tempfile::tempdir_in("/var/tmp").unwrap();
        let manager = support::manager(data.path(), slots, max_capsules).await;
        let (client, server) = support::serve(manager.clone()).await;
        TestAgent {
            client,
            manager,
            server,
            data,
        }
    }

    /// Stops the server (the client goes first) and returns the data folder for checks.
    async fn stop(self) -> tempfile::TempDir {
        drop(self.client);
        self.server.stop().await;
        self.data
    }
}

fn r(id: &str) -> CapsuleRef {
    CapsuleRef { id: id.to_string() }
}

/// Runs `script` in `capsule` with bash and returns (stdout, exit code).
async fn bash(
    client: &mut AgentClient<tonic::transport::Channel>,
    capsule: &str,
    script: &str,
) -> (String, i32) {
    let out = client
        .exec(ExecRequest {
            capsule_id: capsule.into(),
            cmd: "/bin/bash".into(),
            args: vec!["-c".into(), script.into()],
            user: "root".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.exit_code,
    )
}
