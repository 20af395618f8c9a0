//! Fresh templates: a capsule's disk, flattened (no backing chain to the capsule's template)
//! and booted afresh, as base templates are, with defaults (environment, user, folder) set in
//! the booted envd before its snapshot is taken. Nothing of the capsule's memory or processes
//! is kept: a template build without a started process ends in one.

use std::{collections::HashMap, path::Path};

use super::{
    publish::{flatten_disk, write_private, Filling},
    unix_now, SnapshotSource, TemplateInfo, TemplateMeta, Templates, META,
};
use crate::{
    envd_client::{EnvdClient, InitRequest},
    error::{AgentError, Result},
    images::{self, Boot},
    netslot::SlotPool,
};

/// What a fresh template's envd starts its capsules with (agent.v1 `FreshBoot`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreshDefaults {
    pub env: HashMap<String, String>,
    /// Empty: envd's own default.
    pub user: String,
    /// Empty: the user's home; else absolute (the caller checks).
    pub workdir: String,
}

impl Templates {
    /// Makes fresh template `name` from a paused capsule's files, booted in a slot of `pool`.
    /// Replaces an existing snapshot template of that name as [`Templates::publish`] does.
    pub async fn publish_fresh(
        &self,
        name: &str,
        overwrite: bool,
        source: SnapshotSource,
        defaults: &FreshDefaults,
        pool: &SlotPool,
        in_use: impl Fn(&Path) -> bool,
    ) -> Result<TemplateInfo> {
        let filling = Filling::Fresh(&source, defaults, pool);
        self.publish_as(name, overwrite, filling, in_use).await
    }

    pub(super) async fn fill_fresh(
        &self,
        work: &Path,
        name: &str,
        source: &SnapshotSource,
        defaults: &FreshDefaults,
        pool: &SlotPool,
    ) -> Result<()> {
        for f in ["vmlinuz", "initrd.img"] {
            super::link_or_copy(&source.restored_from.join(f), &work.join(f))?;
        }
        let rootfs = work.join("rootfs.img");
        flatten_disk(&source.disk, &rootfs).await?;
        let init = InitRequest {
            access_token: None,
            env_vars: defaults.env.clone(),
            default_user: (!defaults.user.is_empty()).then(|| defaults.user.clone()),
            default_workdir: (!defaults.workdir.is_empty()).then(|| defaults.workdir.clone()),
        };
        let boot = Boot {
            vcpus: source.spec.vcpus,
            memory_mib: source.spec.memory_mib,
            accel: wrenn_vmm::accel::detect().0,
            qemu: self.qemu.clone(),
        };
        let slot = pool.take()?;
        let made = images::snapshot_in_slot_then(work, slot, boot, |envd| async move {
            let client = EnvdClient::new(envd, None);
            client.init(&init, None).await.map_err(|e| e.to_string())
        })
        .await;
        pool.free(slot);
        made?;
        // The snapshot has its own copy of the disk; the boot image is not needed again.
        std::fs::remove_file(&rootfs).map_err(|e| AgentError::io("removing the boot image", e))?;
        let meta = TemplateMeta {
            base: source.base.clone(),
            from_capsule: source.capsule_id.clone(),
            created_at_unix: unix_now(),
            envd_token: String::new(),
            fresh: true,
        };
        write_private(&work.join(META), &meta)?;
        wrenn_vmm::files::private_tree(work)?;
        tracing::info!(template = name, from = %source.capsule_id, "fresh template made");
        Ok(())
    }
}
