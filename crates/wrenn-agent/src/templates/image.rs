//! Base templates made from OCI images (`FROM <image>` builds): the image pulled through the
//! host's [`wrenn_oci::Puller`] (its digest-keyed cache), made into a template folder by
//! [`crate::oci_template::template_from_image`] with `minimal`'s kernel, and snapshotted. The
//! folder is named after the image manifest's digest (`oci-<24 hex>`), so an image already made
//! here is reused as it is and two tags of one image share one template.
//!
//! They are kept as the OCI cache is: within its `max_cache_bytes` ([`Templates::evict_images`]),
//! the least recently imported going first, never one a capsule uses or one imported in the
//! last two minutes (a build about to start its capsule from it). Templates built from them do
//! not need them (their disks are flattened).

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
            super::shapes::mark_used(&dir);
            return Ok(ImageTemplate {
                name,
                image,
                cached: true,
            });
        }
        let lock = self.making_lock(&dir);
        let _making = lock.lock().await;
        if ready(&dir) {
            super::shapes::mark_used(&dir);
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

impl Templates {
    /// Removes templates made from images (`oci-…`), least recently imported first, until
    /// they take at most `budget` bytes together: never `keep`, one `in_use` says a capsule
    /// uses, one imported in the last [`IMAGE_GRACE`] or one being made. The names removed.
    pub fn evict_images(
        &self,
        keep: &str,
        budget: u64,
        in_use: &(dyn Fn(&Path) -> bool + Send + Sync),
    ) -> Vec<String> {
        let mut all: Vec<(String, PathBuf, u64, std::time::SystemTime)> =
            std::fs::read_dir(&self.images_dir)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let name = e.file_name().into_string().ok()?;
                            let meta = std::fs::symlink_metadata(e.path()).ok()?;
                            (name.starts_with(IMAGE_PREFIX) && meta.is_dir()).then(|| {
                                let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                                (name, e.path(), super::allocated_bytes(&e.path()), used)
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
        let mut total: u64 = all.iter().map(|t| t.2).sum();
        let mut gone = Vec::new();
        if total <= budget {
            return gone;
        }
        all.sort_by_key(|t| t.3);
        let now = std::time::SystemTime::now();
        for (name, dir, bytes, used) in all {
            if total <= budget {
                break;
            }
            let recent = now.duration_since(used).map_or(true, |d| d < IMAGE_GRACE);
            if name == keep || recent || in_use(&dir) {
                continue;
            }
            let lock = self.making_lock(&dir);
            let Ok(_held) = lock.try_lock() else {
                continue;
            };
            let Ok(suffix) = super::publish::random_suffix() else {
                continue;
            };
            let old = self.images_dir.join(format!(".old-{name}-{suffix}"));
            if std::fs::rename(&dir, &old).is_ok() {
                let _ = std::fs::remove_dir_all(&old);
                total = total.saturating_sub(bytes);
                tracing::info!(template = %name, bytes, "evicted a template made from an image");
                gone.push(name);
            }
        }
        gone
    }
}

/// How long a template made from an image is kept whatever the budget after its last import.
pub const IMAGE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    /// An `oci-…` folder of `bytes` bytes last imported `age` ago.
    fn planted(images: &Path, name: &str, bytes: usize, age: std::time::Duration) {
        let dir = images.join(name);
        std::fs::create_dir_all(dir.join("snapshot")).unwrap();
        std::fs::write(dir.join("rootfs.img"), vec![1u8; bytes]).unwrap();
        let f = std::fs::File::open(&dir).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }

    #[test]
    fn image_templates_go_oldest_first_to_the_budget_but_never_in_use_or_recent() {
        let t = tempfile::tempdir().unwrap();
        let images = t.path();
        let hour = std::time::Duration::from_secs(3600);
        planted(images, "oci-old", 64 << 10, hour * 5);
        planted(images, "oci-used", 64 << 10, hour * 4);
        planted(images, "oci-mid", 64 << 10, hour * 3);
        planted(images, "oci-new", 64 << 10, hour * 2);
        planted(
            images,
            "oci-just",
            64 << 10,
            std::time::Duration::from_secs(5),
        );
        planted(images, "oci-keep", 64 << 10, hour * 9);
        // Not an image's template: never counted nor removed.
        planted(images, "minimal", 512 << 10, hour * 9);
        let templates = Templates::new(
            images.to_path_buf(),
            PathBuf::from("qemu-system-x86_64"),
            super::super::ShapePolicy::default(),
        );
        let used = images.join("oci-used");
        let in_use = move |d: &Path| d.starts_with(&used);
        // Six of 64 KiB over a budget of about four: the oldest free ones go.
        let gone = templates.evict_images("oci-keep", 260 << 10, &in_use);
        assert_eq!(gone, vec!["oci-old".to_string(), "oci-mid".to_string()]);
        let mut left: Vec<String> = std::fs::read_dir(images)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["minimal", "oci-just", "oci-keep", "oci-new", "oci-used"]
        );
        // Within the budget: nothing goes.
        assert!(templates.evict_images("", 1 << 30, &in_use).is_empty());
        // A budget of nothing still keeps what is in use, recent or kept.
        let gone = templates.evict_images("oci-keep", 0, &in_use);
        assert_eq!(gone, vec!["oci-new".to_string()]);
    }

    #[test]
    fn names_come_from_the_digest_and_are_template_names() {
        let n = image_template_name(
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        );
        assert_eq!(n, "oci-0123456789abcdef01234567");
        assert!(wrenn_types::TemplateName::parse(&n).is_ok());
    }
}
