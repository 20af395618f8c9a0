//! A pull: reference → manifest (through an index for the configured platform) → config and
//! layers (from the cache or the registry) → an unpacked root filesystem in the cache.

use std::{fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    cache::{Cache, IMAGE_JSON},
    client::{self, Fetched, Repository},
    config::OciConfig,
    digest::Digest,
    error::{OciError, Result},
    manifest::{self, Document, ImageConfig, Manifest},
    reference::Reference,
    unpack,
};

/// One step of a pull, for progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The manifest was resolved.
    Resolved { digest: Digest, layers: usize },
    /// The root filesystem was already unpacked in the cache.
    Cached { digest: Digest },
    /// Layer `index` (from 1) of `total`: downloaded now or found in the cache.
    Layer {
        index: usize,
        total: usize,
        digest: Digest,
        bytes: u64,
        cached: bool,
    },
    /// Layers are being applied.
    Unpacking { layers: usize },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Resolved { digest, layers } => {
                write!(f, "manifest {digest} ({layers} layers)")
            }
            Progress::Cached { digest } => write!(f, "root filesystem of {digest} is cached"),
            Progress::Layer {
                index,
                total,
                digest,
                bytes,
                cached,
            } => write!(
                f,
                "layer {index}/{total} {digest} {bytes} bytes{}",
                if *cached { " (cached)" } else { "" }
            ),
            Progress::Unpacking { layers } => write!(f, "unpacking {layers} layers"),
        }
    }
}

/// A pulled image: its unpacked root filesystem and what containers of it run with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    /// The reference as normalized (`docker.io/library/python:3.12-slim`).
    pub reference: String,
    /// The image manifest's digest (the platform's, under an index).
    pub digest: String,
    /// The index's digest when the reference named one.
    pub index_digest: Option<String>,
    pub config: ImageConfig,
    /// The unpacked root filesystem (in the cache: do not modify it; copy it).
    #[serde(skip)]
    pub rootfs: PathBuf,
    /// Whether it came from the cache without unpacking.
    #[serde(skip)]
    pub cached: bool,
    /// Holds the unpacked image against cache eviction while this image (or a clone) lives.
    #[serde(skip)]
    pub lease: Option<std::sync::Arc<crate::evict::Lease>>,
    pub layers: Vec<LayerRecord>,
}

/// One applied layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: String,
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    pub skipped_devices: u64,
}

/// Pulls images with one configuration and cache.
pub struct Puller {
    config: OciConfig,
    cache: Cache,
    http: reqwest::Client,
}

impl Puller {
    pub fn new(config: OciConfig) -> Result<Puller> {
        config.validate()?;
        let cache = Cache::open(&config.cache_dir)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("wrenn-oci/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OciError::Config(format!("HTTP client: {e}")))?;
        Ok(Puller {
            config,
            cache,
            http,
        })
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Pulls `reference` (text, e.g. `python:3.12-slim`) into the cache.
    pub async fn pull(&self, reference: &str, progress: impl FnMut(Progress)) -> Result<Image> {
        let reference = Reference::parse(reference)?;
        self.pull_ref(&reference, progress).await
    }

    /// Pulls a parsed reference into the cache. The image is leased (kept from eviction) while
    /// the returned [`Image`] lives; then the cache is brought under `max_cache_bytes`.
    pub async fn pull_ref(
        &self,
        reference: &Reference,
        mut progress: impl FnMut(Progress),
    ) -> Result<Image> {
        let mut tries = 0;
        let (mut image, lease, digest) = loop {
            let image = self.fetch_ref(reference, &mut progress).await?;
            let digest = Digest::parse(&image.digest)?;
            match self.cache.lease(&digest) {
                Ok(lease) => break (image, lease, digest),
                // Evicted by another pull in between: once more.
                Err(e) if tries > 0 => return Err(e),
                Err(_) => tries += 1,
            }
        };
        self.cache.touch(&digest);
        image.lease = Some(std::sync::Arc::new(lease));
        if let Some(max) = self.config.max_cache_bytes {
            let cache = self.cache.clone();
            match tokio::task::spawn_blocking(move || cache.evict(max)).await {
                Ok(Ok(e)) if !e.images.is_empty() => {
                    tracing::info!(
                        evicted = e.images.len(),
                        before = e.before,
                        after = e.after,
                        "OCI cache trimmed"
                    )
                }
                Ok(Err(e)) => tracing::warn!("trimming the OCI cache: {e}"),
                _ => {}
            }
        }
        Ok(image)
    }

    async fn fetch_ref(
        &self,
        reference: &Reference,
        mut progress: impl FnMut(Progress),
    ) -> Result<Image> {
        let endpoints = client::endpoints(&self.config, reference);
        let repos: Vec<Repository<'_>> = endpoints
            .into_iter()
            .map(|e| Repository::new(&self.http, &self.config, e, &reference.repository))
            .collect();
        let mut source: Option<usize> = None;
        let top = self
            .document(&repos, &mut source, &reference.manifest_ref())
            .await?;
        let (digest, index_digest, m) =
            match top.1 {
                Document::Manifest(m) => (top.0, None, m),
                Document::Index(index) => {
                    let entry = manifest::select_platform(&index, &self.config.platform)
                        .ok_or_else(|| OciError::NoPlatform {
                            reference: reference.to_string(),
                            platform: self.config.platform.to_string(),
                            available: manifest::platforms(&index),
                        })?;
                    let d = entry.digest()?;
                    let (got, doc) = self.document(&repos, &mut source, &d.to_string()).await?;
                    match doc {
                        Document::Manifest(m) => (got, Some(top.0), m),
                        Document::Index(_) => {
                            return Err(OciError::BadManifest(format!(
                                "index entry {d} is itself an index"
                            )))
                        }
                    }
                }
            };
        progress(Progress::Resolved {
            digest: digest.clone(),
            layers: m.layers.len(),
        });
        if let Some(json) = self.cache.unpacked(&digest) {
            if let Ok(mut image) = serde_json::from_slice::<Image>(&json) {
                // The same manifest may be reached by another reference or index.
                image.reference = reference.to_string();
                image.index_digest = index_digest.map(|d| d.to_string());
                image.rootfs = self.cache.unpacked_dir(&digest).join("rootfs");
                image.cached = true;
                progress(Progress::Cached { digest });
                return Ok(image);
            }
        }
        let config = self.config_blob(&repos, &mut source, &m).await?;
        if config.os != self.config.platform.os
            || config.architecture != self.config.platform.architecture
        {
            return Err(OciError::NoPlatform {
                reference: reference.to_string(),
                platform: self.config.platform.to_string(),
                available: format!("{}/{}", config.os, config.architecture),
            });
        }
        let total = m.layers.len();
        let mut layer_digests = Vec::with_capacity(total);
        for (i, layer) in m.layers.iter().enumerate() {
            manifest::layer_compression(&layer.media_type)?;
            let d = layer.digest()?;
            let cached = self.cache.has_blob(&d);
            if !cached {
                self.download(&repos, &mut source, &d, layer.size).await?;
            }
            progress(Progress::Layer {
                index: i + 1,
                total,
                digest: d.clone(),
                bytes: layer.size,
                cached,
            });
            layer_digests.push(d);
        }
        progress(Progress::Unpacking { layers: total });
        let cache = self.cache.clone();
        let image = Image {
            reference: reference.to_string(),
            digest: digest.to_string(),
            index_digest: index_digest.map(|d| d.to_string()),
            config,
            rootfs: PathBuf::new(),
            cached: false,
            lease: None,
            layers: Vec::new(),
        };
        let d = digest.clone();
        let limit = self.config.max_unpacked_bytes;
        let mut image = tokio::task::spawn_blocking(move || {
            unpack_all(&cache, &d, image, &layer_digests, limit)
        })
        .await
        .map_err(|e| OciError::Config(format!("unpack task: {e}")))??;
        image.rootfs = self.cache.unpacked_dir(&digest).join("rootfs");
        Ok(image)
    }

    /// A manifest document by tag or digest: from the cache when it is a digest we hold,
    /// else from the first endpoint that has it (remembered in `source`).
    async fn document(
        &self,
        repos: &[Repository<'_>],
        source: &mut Option<usize>,
        reference: &str,
    ) -> Result<(Digest, Document)> {
        if let Ok(d) = Digest::parse(reference) {
            if let Some(body) = self.cache.read_blob(&d)? {
                return Ok((d, manifest::parse_document(&body, "")?));
            }
        }
        let fetched = self
            .on_endpoints(repos, source, |r| Box::pin(r.manifest(reference)))
            .await?;
        let Fetched {
            body,
            digest,
            content_type,
        } = fetched;
        let doc = manifest::parse_document(&body, &content_type)?;
        self.cache.write_blob(&digest, &body)?;
        Ok((digest, doc))
    }

    async fn config_blob(
        &self,
        repos: &[Repository<'_>],
        source: &mut Option<usize>,
        m: &Manifest,
    ) -> Result<ImageConfig> {
        let d = m.config.digest()?;
        if !self.cache.has_blob(&d) {
            self.download(repos, source, &d, m.config.size.min(client::MAX_MANIFEST))
                .await?;
        }
        let body = self.cache.read_blob(&d)?.unwrap_or_default();
        serde_json::from_slice(&body)
            .map_err(|e| OciError::BadManifest(format!("image config {d}: {e}")))
    }

    /// Downloads blob `d` (at most `size` bytes and the configured limit) into the cache.
    async fn download(
        &self,
        repos: &[Repository<'_>],
        source: &mut Option<usize>,
        d: &Digest,
        size: u64,
    ) -> Result<()> {
        let limit = size.min(self.config.max_blob_bytes);
        if size > self.config.max_blob_bytes {
            return Err(OciError::TooLarge {
                what: format!("blob {d}"),
                limit: self.config.max_blob_bytes,
            });
        }
        let cache = &self.cache;
        self.on_endpoints(repos, source, |r| {
            Box::pin(async move {
                let tmp = cache.temp_file()?;
                let n = r.blob_to_file(d, limit, tmp.path()).await?;
                if n != size {
                    return Err(OciError::BadLayer {
                        digest: d.to_string(),
                        reason: format!("{n} bytes, the manifest says {size}"),
                    });
                }
                cache.keep_blob(tmp, d)
            })
        })
        .await?;
        tracing::debug!(digest = %d, size, "blob downloaded");
        Ok(())
    }

    /// Runs `op` on the endpoint that served before, else on each in order until one
    /// succeeds. A digest mismatch is never retried elsewhere: it is reported.
    async fn on_endpoints<'r, T>(
        &self,
        repos: &'r [Repository<'_>],
        source: &mut Option<usize>,
        op: impl Fn(
            &'r Repository<'_>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'r>>,
    ) -> Result<T> {
        let order: Vec<usize> = match *source {
            Some(i) => std::iter::once(i)
                .chain((0..repos.len()).filter(|j| *j != i))
                .collect(),
            None => (0..repos.len()).collect(),
        };
        let (mut first_answer, mut last) = (None, None);
        for i in order {
            match op(&repos[i]).await {
                Ok(v) => {
                    *source = Some(i);
                    return Ok(v);
                }
                Err(e @ (OciError::DigestMismatch { .. } | OciError::Io { .. })) => return Err(e),
                Err(e) => {
                    tracing::warn!(endpoint = %repos[i].endpoint.base, error = %e, "registry endpoint failed");
                    // An answer (not found, refused) says more than an unreachable endpoint
                    // tried after it (Docker Hub itself, from a machine that cannot reach it).
                    if matches!(e, OciError::Registry { .. }) {
                        last = Some(e);
                    } else if first_answer.is_none() {
                        first_answer = Some(e);
                    }
                }
            }
        }
        Err(first_answer
            .or(last)
            .unwrap_or_else(|| OciError::Config("no registry endpoint".into())))
    }
}

/// Applies every layer into a fresh temporary, checks the config's `diff_ids`, writes
/// `image.json` and moves the whole into the cache.
fn unpack_all(
    cache: &Cache,
    digest: &Digest,
    mut image: Image,
    layers: &[Digest],
    limit: u64,
) -> Result<Image> {
    let tmp = cache.temp_dir()?;
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).map_err(|e| OciError::io("unpacking", &root, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| OciError::io("unpacking", &root, e))?;
    }
    let diff_ids = image
        .config
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    let mut used = 0u64;
    for (i, d) in layers.iter().enumerate() {
        let stats = unpack::apply_blob_limited(
            &root,
            &cache.blob_path(d),
            &d.to_string(),
            limit.saturating_sub(used),
        )?;
        used += stats.bytes;
        if let (Some(expected), Some(actual)) = (diff_ids.get(i), &stats.diff_id) {
            Digest::parse(expected)?.verify(actual, format!("uncompressed layer {d} (diff_id)"))?;
        }
        image.layers.push(LayerRecord {
            digest: d.to_string(),
            entries: stats.entries,
            bytes: stats.bytes,
            whiteouts: stats.whiteouts,
            skipped_devices: stats.skipped_devices,
        });
    }
    if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
        return Err(OciError::BadManifest(format!(
            "{} layers but {} diff_ids in the config",
            layers.len(),
            diff_ids.len()
        )));
    }
    let json = serde_json::to_vec_pretty(&image)
        .map_err(|e| OciError::Config(format!("image.json: {e}")))?;
    let p = tmp.path().join(IMAGE_JSON);
    std::fs::write(&p, json).map_err(|e| OciError::io("writing", &p, e))?;
    cache.keep_unpacked(tmp, digest)?;
    Ok(image)
}
