//! Settings: where the cache lives, which platform to pick from an index, and per registry
//! host its mirrors, credentials and whether it speaks plain HTTP.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use serde::Deserialize;

use crate::error::{OciError, Result};

/// How images are pulled and where they are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    /// The cache: verified blobs and unpacked root filesystems, keyed by digest.
    pub cache_dir: PathBuf,
    /// The platform picked from manifest lists / OCI indexes.
    #[serde(default)]
    pub platform: Platform,
    /// Per registry host as written in references (`docker.io`, `ghcr.io`,
    /// `127.0.0.1:5000`): mirrors, credentials, plain HTTP. Mirrors' own credentials go in
    /// their own entry, keyed by their host.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySettings>,
    /// Upper bound of one layer blob, bytes (a registry cannot make the host fill its disk).
    #[serde(default = "default_max_blob")]
    pub max_blob_bytes: u64,
    /// Upper bound of an image's unpacked file content, bytes (all layers together).
    #[serde(default = "default_max_unpacked")]
    pub max_unpacked_bytes: u64,
    /// Upper bound of the whole cache, bytes: after each pull the least recently used images
    /// not in use go until it fits (`evict`). None: unbounded.
    #[serde(default)]
    pub max_cache_bytes: Option<u64>,
}

fn default_max_blob() -> u64 {
    8 << 30
}

fn default_max_unpacked() -> u64 {
    32 << 30
}

impl OciConfig {
    /// Defaults (linux/amd64, no registry settings) with the cache at `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> OciConfig {
        OciConfig {
            cache_dir: cache_dir.into(),
            platform: Platform::default(),
            registries: BTreeMap::new(),
            max_blob_bytes: default_max_blob(),
            max_unpacked_bytes: default_max_unpacked(),
            max_cache_bytes: None,
        }
    }

    /// Reads a TOML file of this shape (docs/oci.md); `cache_dir` may be left out, then it is
    /// `default_cache`.
    pub fn from_toml(text: &str, default_cache: &std::path::Path) -> Result<OciConfig> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            cache_dir: Option<PathBuf>,
            #[serde(default)]
            platform: Platform,
            #[serde(default)]
            registries: BTreeMap<String, RegistrySettings>,
            #[serde(default = "default_max_blob")]
            max_blob_bytes: u64,
            #[serde(default = "default_max_unpacked")]
            max_unpacked_bytes: u64,
            #[serde(default)]
            max_cache_bytes: Option<u64>,
        }
        let f: File = toml::from_str(text).map_err(|e| OciError::Config(e.to_string()))?;
        let c = OciConfig {
            cache_dir: f.cache_dir.unwrap_or_else(|| default_cache.to_path_buf()),
            platform: f.platform,
            registries: f.registries,
            max_blob_bytes: f.max_blob_bytes,
            max_unpacked_bytes: f.max_unpacked_bytes,
            max_cache_bytes: f.max_cache_bytes,
        };
        c.validate()?;
        Ok(c)
    }

    /// The configuration of a host: `file` when it exists (a bad one is an error naming it),
    /// else the defaults, the cache at `default_cache` either way unless the file says.
    pub fn load(file: &std::path::Path, default_cache: &std::path::Path) -> Result<OciConfig> {
        match std::fs::read_to_string(file) {
            Ok(text) => Self::from_toml(&text, default_cache)
                .map_err(|e| OciError::Config(format!("{}: {e}", file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new(default_cache)),
            Err(e) => Err(OciError::io("reading", file, e)),
        }
    }

    /// Settings of one registry host (the defaults when it has none).
    pub fn registry(&self, host: &str) -> RegistrySettings {
        self.registries.get(host).cloned().unwrap_or_default()
    }

    /// Checks what deserializing cannot: mirrors are http(s) URLs.
    pub fn validate(&self) -> Result<()> {
        for (host, s) in &self.registries {
            for m in &s.mirrors {
                if !(m.starts_with("http://") || m.starts_with("https://")) {
                    return Err(OciError::Config(format!(
                        "registry {host}: mirror '{m}' must start with http:// or https://"
                    )));
                }
            }
            if s.username.is_some() != s.password.is_some() {
                return Err(OciError::Config(format!(
                    "registry {host}: username and password go together"
                )));
            }
        }
        Ok(())
    }
}

/// One registry host's settings.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Tried in order before the registry itself, e.g. `http://127.0.0.1:5000`.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Plain HTTP instead of HTTPS (local registries only).
    #[serde(default)]
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl RegistrySettings {
    pub fn credentials(&self) -> Option<(&str, &str)> {
        Some((self.username.as_deref()?, self.password.as_deref()?))
    }
}

impl fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("mirrors", &self.mirrors)
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// An OS/architecture pair as written in image indexes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_files() {
        let c = OciConfig::from_toml(
            r#"
[registries."docker.io"]
mirrors = ["http://127.0.0.1:5000"]
[registries."127.0.0.1:5000"]
insecure = true
username = "robot"
password = "pw"
"#,
            std::path::Path::new("/data/oci"),
        )
        .unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/data/oci"));
        assert_eq!(c.platform, Platform::default());
        assert_eq!(c.registry("docker.io").mirrors, ["http://127.0.0.1:5000"]);
        assert_eq!(
            c.registry("127.0.0.1:5000").credentials(),
            Some(("robot", "pw"))
        );
        let err =
            OciConfig::from_toml("[registries.x]\ninsecur = true\n", "/d".as_ref()).unwrap_err();
        assert!(err.to_string().contains("insecur"), "{err}");
        let missing = OciConfig::load("/nonexistent/oci.toml".as_ref(), "/d".as_ref()).unwrap();
        assert_eq!(missing.cache_dir, PathBuf::from("/d"));
    }

    #[test]
    fn password_is_redacted_and_mirrors_checked() {
        let s = RegistrySettings {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        let mut c = OciConfig::new("/tmp/x");
        c.registries.insert("docker.io".into(), s);
        c.validate().unwrap();
        c.registries.get_mut("docker.io").unwrap().mirrors = vec!["ftp://m".into()];
        assert!(c.validate().is_err());
        c.registries.get_mut("docker.io").unwrap().mirrors = vec![];
        c.registries.get_mut("docker.io").unwrap().password = None;
        assert!(c.validate().is_err());
    }
}
