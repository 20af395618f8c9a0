//! The gRPC surface through a real agent (in-process server, tonic client, real capsules).
//! Needs root, nftables, QEMU and `make images`.

use std::{path::PathBuf, sync::Arc};

use wrenn_agent::{
    manager::{AgentConfig, Manager},
    service::{self, Listen},
    AgentError,
};
use wrenn_proto::agent::v1::{agent_client::AgentClient, CapsuleRef, ExecRequest};

mod lifecycle;
mod processes;
mod templates;

fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

/// A real agent (manager + gRPC server) on loopback, owning the slots in `slots`.
struct TestAgent {
    client: AgentClient<tonic::transport::Channel>,
    manager: Arc<Manager>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), AgentError>>,
    data: tempfile::TempDir,
}

impl TestAgent {
    async fn start(max_capsules: usize, slots: std::ops::RangeInclusive<u32>) -> TestAgent {
        let data = tempfile::tempdir_in("/var/tmp").unwrap();
        let manager = Arc::new(
            Manager::start(AgentConfig {
                data_dir: data.path().to_path_buf(),
                images_dir: images_dir(),
                qemu: wrenn_vmm::qemu::default_qemu(),
                max_capsules,
                slots,
                shapes: Default::default(),
                dns_upstreams: Vec::new(),
                egress_allow_private: Vec::new(),
                envd: None,
                vmm: Default::default(),
            })
            .await
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service::serve(
            Listen::Tcp(listener),
            None,
            manager.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        let client = AgentClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        TestAgent {
            client,
            manager,
            stop,
            server,
            data,
        }
    }

    /// Stops the server (the client goes first) and returns the data folder for checks.
    async fn stop(self) -> tempfile::TempDir {
        drop(self.client);
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
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
