//! Keeping the cache under a size (`OciConfig::max_cache_bytes`): the unpacked images least
//! recently pulled go first, each with the layer blobs no image left in the cache uses. An
//! image in use is never removed: whoever uses one holds a [`Lease`] on it (a shared `flock`
//! on its `image.json`, so it holds across processes); eviction takes the exclusive lock without
//! waiting and passes over an image it cannot get. Recency is `image.json`'s modification time,
//! which every pull of the image sets ([`Cache::touch`]).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::SystemTime,
};

use nix::fcntl::{Flock, FlockArg};

use crate::{
    cache::{make_removable, Cache, IMAGE_JSON},
    digest::Digest,
    error::{OciError, Result},
};

/// An image in use: its unpacked root filesystem stays while this lives.
#[derive(Debug)]
pub struct Lease {
    _lock: Flock<std::fs::File>,
}

/// What one eviction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evicted {
    /// The manifest digests (hex) whose images were removed, oldest first.
    pub images: Vec<String>,
    /// Bytes the cache held before and after.
    pub before: u64,
    pub after: u64,
}

/// One unpacked image as eviction sees it.
struct Entry {
    hex: String,
    dir: PathBuf,
    used: SystemTime,
    bytes: u64,
    layers: Vec<String>,
}

/// Bytes of the files under `p` (not following links).
fn tree_bytes(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(list) = std::fs::read_dir(&d) {
                stack.extend(list.flatten().map(|e| e.path()));
            }
        } else {
            total += m.len();
        }
    }
    total
}

/// The layer blobs (hex) an `image.json` names.
fn layers_of(json: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    v["layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["digest"].as_str())
                .map(|d| d.rsplit(':').next().unwrap_or(d).to_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Cache {
    /// Holds manifest `d`'s unpacked image against eviction (`NotFound` when it is not here).
    pub fn lease(&self, d: &Digest) -> Result<Lease> {
        let p = self.unpacked_dir(d).join(IMAGE_JSON);
        let f = std::fs::File::open(&p).map_err(|e| OciError::io("leasing", &p, e))?;
        let lock = Flock::lock(f, FlockArg::LockShared)
            .map_err(|(_, e)| OciError::io("leasing", &p, std::io::Error::from(e)))?;
        Ok(Lease { _lock: lock })
    }

    /// Marks manifest `d`'s image as used now.
    pub fn touch(&self, d: &Digest) {
        let p = self.unpacked_dir(d).join(IMAGE_JSON);
        if let Ok(f) = std::fs::File::options().write(true).open(&p) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Bytes the cache holds (unpacked images and blobs; temporaries not counted).
    pub fn size_bytes(&self) -> u64 {
        tree_bytes(&self.dir().join("rootfs")) + tree_bytes(&self.dir().join("blobs"))
    }

    fn entries(&self) -> Vec<Entry> {
        let Ok(list) = std::fs::read_dir(self.dir().join("rootfs")) else {
            return Vec::new();
        };
        let mut out: Vec<Entry> = list
            .flatten()
            .filter_map(|e| {
                let dir = e.path();
                let json = std::fs::read(dir.join(IMAGE_JSON)).ok()?;
                let used = std::fs::metadata(dir.join(IMAGE_JSON))
                    .and_then(|m| m.modified())
                    .ok()?;
                Some(Entry {
                    hex: e.file_name().to_string_lossy().into_owned(),
                    bytes: tree_bytes(&dir),
                    dir,
                    used,
                    layers: layers_of(&json),
                })
            })
            .collect();
        out.sort_by_key(|e| e.used);
        out
    }

    /// Removes the least recently used images not in use until the cache holds at most
    /// `max_bytes` (or nothing more can go).
    pub fn evict(&self, max_bytes: u64) -> Result<Evicted> {
        let before = self.size_bytes();
        let mut total = before;
        let mut evicted = Evicted {
            before,
            ..Evicted::default()
        };
        let entries = self.entries();
        let mut gone: HashSet<String> = HashSet::new();
        for e in &entries {
            if total <= max_bytes {
                break;
            }
            let Ok(f) = std::fs::File::open(e.dir.join(IMAGE_JSON)) else {
                continue;
            };
            // In use: passed over.
            let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
                tracing::debug!(image = %e.hex, "in use: not evicted");
                continue;
            };
            // Out of the way in one rename while locked, then removed.
            let tmp = tempfile::Builder::new()
                .prefix("evict-")
                .tempdir_in(self.dir().join("tmp"))
                .map_err(|err| OciError::io("evicting", &e.dir, err))?;
            let moved = tmp.path().join("old");
            std::fs::rename(&e.dir, &moved).map_err(|err| OciError::io("evicting", &e.dir, err))?;
            drop(lock);
            make_removable(&moved);
            drop(tmp);
            total = total.saturating_sub(e.bytes);
            gone.insert(e.hex.clone());
            evicted.images.push(e.hex.clone());
            tracing::info!(image = %e.hex, bytes = e.bytes, "evicted from the OCI cache");
        }
        // Layers no image left here uses.
        let kept: HashSet<&String> = entries
            .iter()
            .filter(|e| !gone.contains(&e.hex))
            .flat_map(|e| e.layers.iter())
            .collect();
        for e in entries.iter().filter(|e| gone.contains(&e.hex)) {
            for l in e.layers.iter().filter(|l| !kept.contains(l)) {
                let _ = std::fs::remove_file(self.dir().join("blobs/sha256").join(l));
            }
        }
        evicted.after = self.size_bytes();
        Ok(evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An unpacked image of `bytes` bytes whose layers are `layers` (blobs of 100 bytes each),
    /// last used `age` seconds ago.
    fn image(cache: &Cache, hex: &str, bytes: usize, layers: &[&str], age: u64) -> Digest {
        let d = Digest::parse(&format!("sha256:{}", hex.repeat(64 / hex.len()))).unwrap();
        let dir = cache.unpacked_dir(&d);
        std::fs::create_dir_all(dir.join("rootfs/usr")).unwrap();
        std::fs::write(dir.join("rootfs/usr/big"), vec![0u8; bytes]).unwrap();
        let layer_list: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                let hex = l.repeat(64 / l.len());
                std::fs::write(cache.dir().join("blobs/sha256").join(&hex), [1u8; 100]).unwrap();
                serde_json::json!({"digest": format!("sha256:{hex}")})
            })
            .collect();
        std::fs::write(
            dir.join(IMAGE_JSON),
            serde_json::json!({"layers": layer_list}).to_string(),
        )
        .unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(dir.join(IMAGE_JSON))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age))
            .unwrap();
        d
    }

    #[test]
    fn least_recently_used_goes_first_and_an_image_in_use_never() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::open(t.path()).unwrap();
        let a = image(&cache, "a", 10_000, &["1", "2"], 300);
        let b = image(&cache, "b", 10_000, &["2", "3"], 200);
        let c = image(&cache, "c", 10_000, &["4"], 100);
        // `b` touched: now the newest, `c` the second oldest.
        cache.touch(&b);
        // `a`, the oldest, is in use.
        let lease = cache.lease(&a).unwrap();
        let size = cache.size_bytes();
        assert!(size > 30_000, "{size}");
        // Room for two images: one must go, and it cannot be `a`.
        let out = cache.evict(25_000).unwrap();
        assert_eq!(out.images, vec![c.hex().to_string()]);
        assert!(out.after <= 25_000 && out.before == size, "{out:?}");
        assert!(cache.unpacked(&a).is_some() && cache.unpacked(&b).is_some());
        assert!(cache.unpacked(&c).is_none());
        // `c`'s own layer went; the shared one stayed.
        let blob = |l: &str| cache.dir().join("blobs/sha256").join(l.repeat(64));
        assert!(!blob("4").exists());
        assert!(blob("1").exists() && blob("2").exists() && blob("3").exists());
        // Nothing is small enough while `a` is leased and `b` fits: only `b` can go.
        let out = cache.evict(0).unwrap();
        assert_eq!(out.images, vec![b.hex().to_string()]);
        assert!(cache.unpacked(&a).is_some());
        assert!(
            !blob("3").exists() && blob("2").exists(),
            "`a` still uses 2"
        );
        // Released, it goes too; nothing of the images is left.
        drop(lease);
        let out = cache.evict(0).unwrap();
        assert_eq!(out.images, vec![a.hex().to_string()]);
        assert_eq!(cache.size_bytes(), 0);
        // No temporaries left behind.
        assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn under_the_bound_nothing_goes() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::open(t.path()).unwrap();
        let a = image(&cache, "a", 1000, &["1"], 10);
        let out = cache.evict(1 << 20).unwrap();
        assert!(out.images.is_empty());
        assert!(cache.unpacked(&a).is_some());
        assert!(cache.lease(&image(&cache, "e", 1, &[], 0)).is_ok());
        let missing = Digest::parse(&format!("sha256:{}", "f".repeat(64))).unwrap();
        assert!(cache.lease(&missing).is_err());
    }
}
