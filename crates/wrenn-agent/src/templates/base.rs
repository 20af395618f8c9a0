//! Base templates built on this host the first time a create needs one: a registered host
//! starts with an empty images folder and builds `minimal` or `python` (the recipes this
//! build of Wrenn carries, [`crate::images::known_templates`]) when the scheduler first sends it
//! a capsule of one. Needs the static envd binary that goes into the image
//! ([`Templates::with_envd`]); without it only templates already here are served.

use std::path::Path;

use wrenn_vmm::snapshot::Snapshot;

use super::{Templates, META};
use crate::{
    error::{AgentError, Result},
    images,
    netslot::SlotPool,
};

impl Templates {
    /// Whether base template `name` can be built here: its recipe is known and envd is given.
    pub fn buildable(&self, name: &str) -> bool {
        self.envd.is_some() && images::known_templates().contains(&name)
    }

    /// Every base template [`Self::buildable`] here, by name.
    pub fn buildable_templates(&self) -> Vec<String> {
        images::known_templates()
            .into_iter()
            .filter(|n| self.buildable(n))
            .map(str::to_owned)
            .collect()
    }

    /// Builds base template `name` when it has no ready snapshot here and [`Self::buildable`]
    /// says it can be; its snapshot boots in a slot from `pool`. Anything else is left as it
    /// is (the lookup that follows answers `not_found`). Concurrent creates build it once.
    pub async fn ensure_base(&self, name: &str, pool: &SlotPool) -> Result<()> {
        let Some(envd) = self.envd.clone() else {
            return Ok(());
        };
        if !self.buildable(name) {
            return Ok(());
        }
        let dir = self.dir(name)?;
        let ready = |dir: &Path| {
            Snapshot {
                template_dir: dir.to_path_buf(),
            }
            .spec()
            .is_some()
                || dir.join(META).exists()
        };
        if ready(&dir) {
            return Ok(());
        }
        let lock = self.making_lock(&dir);
        let _building = lock.lock().await;
        if ready(&dir) {
            return Ok(());
        }
        tracing::warn!(template = name, "building a base template on first need");
        let envd = envd
            .canonicalize()
            .map_err(|e| AgentError::io("finding the envd binary (--envd)", e))?;
        let slot = pool.take()?;
        let req = images::BuildRequest {
            template: name.into(),
            images_dir: self.images_dir.clone(),
            envd,
            vcpus: 1,
            memory_mib: 256,
            accel: wrenn_vmm::accel::detect().0,
            qemu: self.qemu.clone(),
            slot: Some(slot),
        };
        let built = images::build(&req, |p| {
            tracing::info!(template = %p.template, "{}", p.line);
        })
        .await;
        pool.free(slot);
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                // A half-built folder holds disk and would pass for a template next time.
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // Built with umask 022 (the guest's files keep their modes); the folder is ours.
        wrenn_vmm::files::private_tree(&dir)?;
        tracing::warn!(
            template = name,
            image_secs = built.image_time.as_secs_f64(),
            snapshot_secs = built.snapshot_time.as_secs_f64(),
            "base template built"
        );
        Ok(())
    }
}
