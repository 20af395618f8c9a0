//! Creates and forks that finish whatever their caller does: each runs in a task of its own,
//! so a caller that stops waiting (a cancelled gRPC request, a dropped future, a timeout)
//! never cuts one off between starting a VMM and recording its capsule. The work ends as it
//! would have: the capsules it made are in the manager's map (listed, destroyable, reaped by
//! their timeout), or everything it made is undone and its slots are free.

use std::{future::Future, sync::Arc};

use super::{Forked, Manager};
use crate::{
    capsule::CreateSpec,
    error::{AgentError, Result},
    record::CapsuleRecord,
};

impl Manager {
    /// Creates a capsule from a template's snapshot (of the asked shape, made on first use).
    /// Cancel-safe: see the module.
    pub async fn create(self: &Arc<Self>, spec: CreateSpec) -> Result<CapsuleRecord> {
        detached(self, |m| async move { m.create_now(spec).await }).await
    }

    /// Makes `count` children of capsule `id` (`fork_now`). Cancel-safe: see the
    /// module.
    pub async fn fork(self: &Arc<Self>, id: &str, count: u32) -> Result<Forked> {
        let id = id.to_owned();
        detached(self, move |m| async move { m.fork_now(&id, count).await }).await
    }
}

/// Runs `work` on the manager in a task of its own and waits for it; dropping this future
/// leaves the task running to its end.
async fn detached<T, F, W>(manager: &Arc<Manager>, work: W) -> Result<T>
where
    W: FnOnce(Arc<Manager>) -> F,
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(work(manager.clone()))
        .await
        .unwrap_or_else(|e| {
            Err(AgentError::io(
                "running a create or fork",
                std::io::Error::other(e),
            ))
        })
}
