//! Starting and serving the host agent: the one entry point `wrenn up` (on a Unix socket) and
//! `wrenn agent` (on TCP, usually with mutual TLS) share ([`start`], then [`run`]).

use std::{future::Future, sync::Arc, time::Duration};

use wrenn_rpc::{listen::Listen, ServerTls};

use crate::{
    manager::{AgentConfig, Manager},
    service, Result,
};

/// How long open connections may go on after the stop was asked for.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Starts the host's manager (re-adopting what a previous agent left), its idle reaper and its
/// metrics sampler.
pub async fn start(config: AgentConfig) -> Result<Arc<Manager>> {
    let manager = Arc::new(Manager::start(config).await?);
    manager.spawn_reaper();
    manager.spawn_sampler();
    manager.spawn_pool_filler();
    Ok(manager)
}

/// Serves `manager` on `listener` (TLS when `tls` is given, fixed or replaceable; TCP only) until `shutdown`
/// resolves; clients that keep connections open then get a few seconds, not forever. The
/// capsules keep running: stopping them is the caller's choice.
pub async fn run(
    manager: Arc<Manager>,
    listener: Listen,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    let server = service::serve(listener, tls, manager, async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    tokio::select! {
        r = server => r?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(STOP_GRACE).await;
        } => {}
    }
    Ok(())
}
