//! Base templates made from OCI images (`FROM <image>` builds): the image pulled through the
//! host's [`wrenn_oci::Puller`] (its digest-keyed cache), made into a template folder by
//! [`crate::oci_template::template_from_image`] with `minimal`'s kernel, and snapshotted. The
//! folder is named after the image manifest's digest (`oci-<24 hex>`), so an image already made
//! here is reused as it is and two tags of one image share one template.

use std::path::{Path, PathBuf};

use wrenn_vmm::snapshot::Snapshot;

use super::{Templates, META};
use crate::{
    error::{AgentError, Result},
    images,
    netslot::SlotPool,
    oci_template::{self, RootfsTemplate},
};

/// The prefix of templates made from images.
pub const IMAGE_PREFIX: &str = "oci-";
/// The built template whose kernel and initramfs image templates boot with.
const KERNEL_FROM: &str = "minimal";

/// What [`Templates::from_image`] made (or found).
#[derive(Debug, Clone)]
pub struct ImageTemplate {
    pub name: String,
    pub image: wrenn_oci::Image,
    /// The template was already here.
    pub cached: bool,
}

/// The template name of an image manifest digest (`sha256:<hex>`).
pub fn image_template_name(digest: &str) -> String {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    format!("{IMAGE_PREFIX}{}", &hex[..hex.len().min(24)])
}

impl Templates {
    /// Pulls `reference` with `puller` and makes its base template, snapshotted in a slot of
    /// `pool`. Concurrent imports of one image make it once; a failure leaves no folder.
    pub async fn from_image(
        &self,
        puller: &wrenn_oci::Puller,
        reference: &str,
        pool: &SlotPool,
    ) -> Result<ImageTemplate> {
        let envd = self
            .envd
            .clone()
            .ok_or_else(|| AgentError::ImageBuild {
                template: reference.into(),
                reason: "this host has no static envd (--envd) to put into images".into(),
            })?
            .canonicalize()
            .map_err(|e| AgentError::io("finding the envd binary (--envd)", e))?;
        let image = puller
            .pull(reference, |p| tracing::debug!(reference, "{p:?}"))
            .await?;
        let name = image_template_name(&image.digest);
        let dir = self.dir(&name)?;
        let ready = |dir: &Path| {
            Snapshot {
                template_dir: dir.to_path_buf(),
            }
            .spec()
            .is_some()
                && !dir.join(META).exists()
        };
        if ready(&dir) {
            return Ok(ImageTemplate {
                name,
                image,
                cached: true,
            });
        }
        let lock = self.making_lock(&dir);
        let _making = lock.lock().await;
        if ready(&dir) {
            return Ok(ImageTemplate {
                name,
                image,
                cached: true,
            });
        }
        self.ensure_base(KERNEL_FROM, pool).await?;
        let kernel_from = self.require(KERNEL_FROM, super::TemplateKind::Base)?;
        tracing::info!(reference, digest = %image.digest, template = %name, "making a template from an image");
        let made = self
            .make_image_template(&image, &dir, kernel_from, envd, pool)
            .await;
        if let Err(e) = made {
            // A half-made folder holds disk and would pass for a template next time.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(ImageTemplate {
            name,
            image,
            cached: false,
        })
    }

    async fn make_image_template(
        &self,
        image: &wrenn_oci::Image,
        dir: &Path,
        kernel_from: PathBuf,
        envd: PathBuf,
        pool: &SlotPool,
    ) -> Result<()> {
        oci_template::make_template_disk(RootfsTemplate {
            rootfs: image.rootfs.clone(),
            template_dir: dir.to_path_buf(),
            kernel_from,
            envd,
            busybox: PathBuf::from(oci_template::HOST_STATIC_BUSYBOX),
            disk_bytes: None,
        })
        .await?;
        let slot = pool.take()?;
        let snap = images::snapshot_in_slot(
            dir,
            slot,
            1,
            256,
            wrenn_vmm::accel::detect().0,
            self.qemu.clone(),
        )
        .await;
        pool.free(slot);
        snap?;
        wrenn_vmm::files::private_tree(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_digest_and_are_template_names() {
        let n = image_template_name(
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        );
        assert_eq!(n, "oci-0123456789abcdef01234567");
        assert!(wrenn_types::TemplateName::parse(&n).is_ok());
    }
}
