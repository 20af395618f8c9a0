//! The JSON documents of the distribution API: image indexes / manifest lists, image
//! manifests (Docker v2 schema 2 and OCI), image configs; and picking a platform.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    config::Platform,
    digest::Digest,
    error::{OciError, Result},
};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The media types asked for, most preferred first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A reference to content: media type, digest and size.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<IndexPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    pub fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest)
    }
}

/// The platform of one index entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IndexPlatform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A manifest list / OCI index.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What a manifest document turned out to be.
#[derive(Debug, Clone)]
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

/// Parses a manifest body; `content_type` is the registry's header (may be empty).
pub fn parse_document(body: &[u8], content_type: &str) -> Result<Document> {
    let bad = |why: String| OciError::BadManifest(why);
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a JSON manifest: {e}")))?;
    if probe.schema_version == Some(1) {
        return Err(bad("Docker schema 1 manifests are not supported".into()));
    }
    let media = probe.media_type.clone().unwrap_or_else(|| {
        content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    });
    let is_index = media == OCI_INDEX || media == DOCKER_LIST || probe.manifests.is_some();
    let is_manifest = media == OCI_MANIFEST || media == DOCKER_MANIFEST || probe.layers.is_some();
    if is_index && !is_manifest {
        let index: Index =
            serde_json::from_slice(body).map_err(|e| bad(format!("bad index: {e}")))?;
        Ok(Document::Index(index))
    } else if is_manifest && !is_index {
        let m: Manifest =
            serde_json::from_slice(body).map_err(|e| bad(format!("bad image manifest: {e}")))?;
        Ok(Document::Manifest(m))
    } else {
        Err(bad(format!("unknown media type '{media}'")))
    }
}

/// The entry of `index` for `platform` (an entry without a variant preferred over others;
/// attestation entries, `unknown/unknown`, never match).
pub fn select_platform<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    let matching = index.manifests.iter().filter(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
            && (d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST)
    });
    let mut best = None;
    for d in matching {
        let plain = d.platform.as_ref().is_some_and(|p| p.variant.is_none());
        if best.is_none() || plain {
            best = Some(d);
            if plain {
                break;
            }
        }
    }
    best
}

/// The platforms an index holds, for error messages.
pub fn platforms(index: &Index) -> String {
    let v: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Layer compression, from the media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// How a layer of `media_type` is compressed; an error for types that are not layers.
pub fn layer_compression(media_type: &str) -> Result<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(OciError::BadManifest(format!(
            "unsupported layer media type '{other}'"
        ))),
    }
}

/// The image config blob: what a container of the image runs with.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// The runtime part of an image config (`Env`, `User`, `WorkingDir`, `Cmd`, …).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// The uncompressed layers' digests.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, media: &str) -> Descriptor {
        Descriptor {
            media_type: media.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 1,
            platform: Some(IndexPlatform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
            urls: None,
        }
    }

    #[test]
    fn picks_linux_amd64() {
        let mut arm = entry("arm64", Some("v8"), OCI_MANIFEST);
        arm.digest = format!("sha256:{}", "1".repeat(64));
        let mut amd = entry("amd64", None, OCI_MANIFEST);
        amd.digest = format!("sha256:{}", "2".repeat(64));
        let idx = Index {
            manifests: vec![arm, entry("amd64", Some("v3"), OCI_MANIFEST), amd],
        };
        let got = select_platform(&idx, &Platform::default()).unwrap();
        assert!(got.digest.ends_with(&"2".repeat(64)));
        assert_eq!(
            platforms(&idx),
            "linux/arm64/v8, linux/amd64/v3, linux/amd64"
        );
        let only_arm = Index {
            manifests: vec![entry("arm64", None, OCI_MANIFEST)],
        };
        assert!(select_platform(&only_arm, &Platform::default()).is_none());
    }

    #[test]
    fn documents() {
        assert!(matches!(
            parse_document(br#"{"schemaVersion":2,"manifests":[]}"#, ""),
            Ok(Document::Index(_))
        ));
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(parse_document(m, ""), Ok(Document::Manifest(_))));
        assert!(parse_document(br#"{"schemaVersion":1,"fsLayers":[]}"#, "").is_err());
        assert!(parse_document(b"nope", "").is_err());
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert!(layer_compression("application/vnd.oci.image.config.v1+json").is_err());
    }
}
