//! The processes envd started, by pid and tag. Exited ones stay a short while so a late
//! `Connect` still gets their end.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use wrenn_proto::process::{process_selector::Selector, ProcessSelector};

use super::handle::Proc;
use crate::error::{EnvdError, Result};

/// How long an exited process stays visible to `Connect`.
pub const EXITED_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: Mutex<HashMap<u32, Arc<Proc>>>,
}

impl ProcessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Proc>>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails with `already_exists` if a running process holds `tag`.
    pub fn check_tag_free(&self, tag: &str) -> Result<()> {
        if self
            .lock()
            .values()
            .any(|p| p.tag.as_deref() == Some(tag) && p.is_running())
        {
            return Err(EnvdError::AlreadyExists(format!(
                "a running process already has tag '{tag}'"
            )));
        }
        Ok(())
    }

    pub fn insert(&self, proc: Arc<Proc>) {
        self.lock().insert(proc.pid, proc);
    }

    /// Removes `proc` once it has been gone for the grace period (if its pid was not reused).
    pub fn remove_later(self: &Arc<Self>, proc: &Arc<Proc>) {
        let table = Arc::downgrade(self);
        let proc = Arc::downgrade(proc);
        tokio::spawn(async move {
            tokio::time::sleep(EXITED_GRACE).await;
            if let (Some(table), Some(proc)) = (table.upgrade(), proc.upgrade()) {
                let mut procs = table.lock();
                if procs.get(&proc.pid).is_some_and(|p| Arc::ptr_eq(p, &proc)) {
                    procs.remove(&proc.pid);
                }
            }
        });
    }

    /// The process a selector names, running or recently exited.
    pub fn find(&self, selector: Option<&ProcessSelector>) -> Result<Arc<Proc>> {
        let selector = selector
            .and_then(|s| s.selector.as_ref())
            .ok_or_else(|| EnvdError::InvalidArgument("a process pid or tag is required".into()))?;
        let procs = self.lock();
        let found = match selector {
            Selector::Pid(pid) => procs.get(pid).cloned(),
            Selector::Tag(tag) => {
                let mut matching: Vec<_> = procs
                    .values()
                    .filter(|p| p.tag.as_deref() == Some(tag.as_str()))
                    .cloned()
                    .collect();
                // Prefer a running one, then the newest pid.
                matching.sort_by_key(|p| (p.is_running(), p.pid));
                matching.pop()
            }
        };
        found.ok_or_else(|| match selector {
            Selector::Pid(pid) => EnvdError::NotFound(format!("process with pid {pid} not found")),
            Selector::Tag(tag) => {
                EnvdError::NotFound(format!("process with tag '{tag}' not found"))
            }
        })
    }

    /// Like [`find`](Self::find), but only a running process will do.
    pub fn find_running(&self, selector: Option<&ProcessSelector>) -> Result<Arc<Proc>> {
        let proc = self.find(selector)?;
        if !proc.is_running() {
            return Err(EnvdError::NotFound(format!(
                "process {} has already exited",
                proc.pid
            )));
        }
        Ok(proc)
    }

    pub fn running(&self) -> Vec<Arc<Proc>> {
        let mut v: Vec<_> = self
            .lock()
            .values()
            .filter(|p| p.is_running())
            .cloned()
            .collect();
        v.sort_by_key(|p| p.pid);
        v
    }
}
