//! The tests' registry and images come from the crate's `testkit` feature; the fake token
//! front is this suite's own, and so is [`Scene`]: the set-up every pull test starts with.
#![allow(dead_code)]

pub mod token;

use std::path::{Path, PathBuf};

pub use wrenn_oci::testkit::{cache_dir, config_for, image, remove_cache, Registry};
use wrenn_oci::{OciConfig, Puller};

/// A test's registry (on its own port) and its own cache folder, removed when dropped.
pub struct Scene {
    pub reg: Registry,
    pub cache: PathBuf,
}

impl Scene {
    /// Starts registry `name` on `port` (with Basic `credentials`, if any), with an empty
    /// cache folder of the same name.
    pub fn start(
        name: &str,
        port: u16,
        credentials: Option<(&str, &str)>,
    ) -> anyhow::Result<Scene> {
        Ok(Scene {
            reg: Registry::start(name, port, credentials)?,
            cache: cache_dir(name),
        })
    }

    /// Settings that reach the registry over plain HTTP, on the cache.
    pub fn config(&self) -> OciConfig {
        config_for(&self.reg, &self.cache)
    }

    /// A puller with [`Scene::config`].
    pub fn puller(&self) -> anyhow::Result<Puller> {
        Ok(Puller::new(self.config())?)
    }

    /// The reference of `name` (`repo:tag`, `repo@digest`) on the registry.
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.reg.host())
    }

    /// How many temporaries the cache holds (a finished pull, failed or not, leaves none).
    pub fn temporaries(&self) -> usize {
        std::fs::read_dir(self.cache.join("tmp"))
            .expect("the cache's tmp folder")
            .count()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        remove_cache(&self.cache);
    }
}

/// File `p` of the unpacked root `root`.
pub fn read(root: &Path, p: &str) -> String {
    std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}
