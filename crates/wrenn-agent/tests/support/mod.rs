//! The setup the manager suites share (manager, fork, pool, cancel, grpc): an agent configuration on a
//! slot range of the test's own, its data folder, its gRPC service on loopback, a create spec,
//! a shell command, and what is left on the host (network slots, folders) for the leak checks.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use wrenn_agent::{
    capsule::CreateSpec,
    envd_client::ExecRequest,
    manager::{AgentConfig, Manager},
    netslot,
    service::{self, Listen},
    AgentError,
};
use wrenn_proto::agent::v1::agent_client::AgentClient;

/// The built templates (`WRENN_IMAGES`, else the shared ones).
pub fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

/// An agent on `slots`, for at most `max` capsules, its data in `data`.
pub fn config(data: &Path, slots: std::ops::RangeInclusive<u32>, max: usize) -> AgentConfig {
    AgentConfig {
        data_dir: data.to_path_buf(),
        images_dir: images_dir(),
        qemu: wrenn_vmm::qemu::default_qemu(),
        max_capsules: max,
        slots,
        shapes: Default::default(),
        dns_upstreams: Vec::new(),
        egress_allow_private: Vec::new(),
        envd: None,
        vmm: Default::default(),
    }
}

/// A started manager ([`config`]).
pub async fn manager(
    data: &Path,
    slots: std::ops::RangeInclusive<u32>,
    max: usize,
) -> Arc<Manager> {
    Arc::new(Manager::start(config(data, slots, max)).await.unwrap())
}

/// A capsule of `template` with egress off.
pub fn spec(template: &str) -> CreateSpec {
    CreateSpec {
        template: template.into(),
        egress: false,
        ..Default::default()
    }
}

pub fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        cmd: "/bin/bash".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

/// A data folder `/var/tmp/<prefix>-…`, removed when dropped.
pub fn data_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// The network slots of `range` that exist on the host now.
pub async fn slots_in(range: &std::ops::RangeInclusive<u32>) -> Vec<u32> {
    netslot::existing_slots()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| range.contains(n))
        .collect()
}

/// The names in folder `dir` (none when it is missing).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits up to a minute for `ok`.
pub async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..600 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A manager's gRPC service served on loopback (see [`serve`]).
pub struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

/// Serves `manager`'s gRPC service on a loopback port: a client of it, and the server.
pub async fn serve(manager: Arc<Manager>) -> (AgentClient<tonic::transport::Channel>, Server) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::serve(
        Listen::Tcp(listener),
        None,
        manager,
        async {
            let _ = stop_rx.await;
        },
    ));
    let client = AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (client, Server { stop, task })
}

impl Server {
    /// Stops serving (drop every client first) and checks it ended cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// The HTTP status capsule `id`'s envd gives a request without a token (401 once the capsule
/// has its own).
pub async fn envd_status_without_token(mgr: &Manager, id: &str) -> u16 {
    let (addr, _) = mgr.envd_of(id).unwrap();
    reqwest::Client::new()
        .post(format!("http://{addr}/process.Process/List"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
