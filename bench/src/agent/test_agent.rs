//! The agent under test: a real manager and gRPC server in this process, and the sweep that
//! leaves no QEMU or network slot of the bench's range behind.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tonic::transport::Channel;
use wrenn_agent::{
    manager::{AgentConfig, Manager},
    netslot, service,
};
use wrenn_proto::agent::v1::agent_client::AgentClient;

use super::{SHUTDOWN_TIMEOUT, SLOTS};

/// A real agent (manager + gRPC server on 127.0.0.1:0) in this process.
pub(super) struct TestAgent {
    pub(super) client: AgentClient<Channel>,
    pub(super) manager: Arc<Manager>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<wrenn_agent::Result<()>>,
}

impl TestAgent {
    pub(super) async fn start(
        data: &Path,
        images: &Path,
        max_capsules: usize,
    ) -> Result<TestAgent> {
        let manager = Arc::new(
            Manager::start(AgentConfig {
                data_dir: data.to_path_buf(),
                images_dir: images.to_path_buf(),
                qemu: wrenn_vmm::qemu::default_qemu(),
                max_capsules: max_capsules.max(24),
                slots: SLOTS,
                shapes: Default::default(),
                dns_upstreams: Vec::new(),
                egress_allow_private: Vec::new(),
                envd: None,
                vmm: Default::default(),
            })
            .await
            .context("starting the agent")?,
        );
        // Off (size 0) until a burst into the warm pool turns it on.
        manager.spawn_pool_filler();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the agent's gRPC listener")?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service::serve(
            service::Listen::Tcp(listener),
            None,
            manager.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        let client = match AgentClient::connect(format!("http://{addr}")).await {
            Ok(c) => c,
            Err(e) => {
                server.abort();
                return Err(e).context("connecting to the agent");
            }
        };
        Ok(TestAgent {
            client,
            manager,
            stop,
            server,
        })
    }

    /// Stops the server (after the requests in flight), destroys every capsule the manager
    /// still holds, then sweeps the bench's slot range and data dir. What it found, for the
    /// report.
    pub(super) async fn shutdown(self, data: &Path) -> Vec<String> {
        let TestAgent {
            client,
            manager,
            stop,
            mut server,
        } = self;
        drop(client);
        let _ = stop.send(());
        let mut notes = Vec::new();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut server)
            .await
            .is_err()
        {
            server.abort();
            notes.push(format!(
                "the gRPC server did not stop within {SHUTDOWN_TIMEOUT:?} (aborted)"
            ));
        }
        let ids: Vec<String> = manager.list().into_iter().map(|r| r.id).collect();
        let mut set = tokio::task::JoinSet::new();
        for id in ids.iter().cloned() {
            let m = manager.clone();
            set.spawn(async move {
                let r = m.destroy(&id).await;
                (id, r)
            });
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(e))) => notes.push(format!("destroying {id} failed: {e}")),
                Err(e) => notes.push(format!("a destroy task failed: {e}")),
            }
        }
        notes.push(format!(
            "{} capsules destroyed by the cleanup, {} left in the manager",
            ids.len(),
            manager.list().len()
        ));
        drop(manager);
        notes.extend(sweep(data).await);
        notes
    }
}

/// Kills QEMUs whose command line names `data` and removes every network slot of `SLOTS`;
/// reports what it found and what is left.
pub(super) async fn sweep(data: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let stray = wrenn_vmm::qemu::processes_under(data);
    for (pid, _) in &stray {
        // SAFETY: kill(2) of a QEMU whose command line names this bench's own data dir.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !wrenn_vmm::qemu::processes_under(data).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let qemu_left = wrenn_vmm::qemu::processes_under(data).len();
    let removed = match netslot::cleanup_orphans(&[], &SLOTS).await {
        Ok(r) => r.len(),
        Err(e) => {
            notes.push(format!("sweeping the slots failed: {e}"));
            0
        }
    };
    let slots_left = match netslot::existing_slots().await {
        Ok(v) => v
            .into_iter()
            .filter(|n| SLOTS.contains(n))
            .count()
            .to_string(),
        Err(e) => format!("? ({e})"),
    };
    notes.push(format!(
        "{} stray QEMU killed, {qemu_left} QEMU left under the data dir; {removed} orphaned slots \
         removed, {slots_left} netns/veth left in {SLOTS:?}",
        stray.len()
    ));
    notes
}
