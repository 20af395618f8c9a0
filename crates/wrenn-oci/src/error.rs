//! The crate's one error enum: one variant per cause, each message naming what failed.

use std::path::PathBuf;

/// Everything that can go wrong turning an image reference into a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("bad image reference '{reference}': {reason}")]
    BadReference { reference: String, reason: String },
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("registry {registry} refused access to {repository}: {reason}")]
    Unauthorized {
        registry: String,
        repository: String,
        reason: String,
    },
    #[error("{what} not found in {registry}/{repository}")]
    NotFound {
        registry: String,
        repository: String,
        what: String,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("bad digest '{0}' (only sha256:<64 hex> is supported)")]
    BadDigest(String),
    #[error("unsupported manifest: {0}")]
    BadManifest(String),
    #[error("no {platform} image in the index of {reference} (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("layer {digest}: {reason}")]
    BadLayer { digest: String, reason: String },
    #[error("layer {digest}: entry '{path}' escapes the root filesystem")]
    PathEscape { digest: String, path: String },
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad configuration: {0}")]
    Config(String),
}

impl OciError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OciError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = OciError> = std::result::Result<T, E>;
