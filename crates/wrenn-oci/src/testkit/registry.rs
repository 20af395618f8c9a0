//! A real registry for tests: Debian's `docker-registry` (the distribution project's
//! registry) run on 127.0.0.1 with a config file of the test's own (never the system service).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{fail, TestResult};

/// A running registry; stopped and its folder removed on drop.
pub struct Registry {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    pub credentials: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry on 127.0.0.1:`port` (the suite's range is 15000–15049) in
    /// `/var/tmp/oci-test-<name>`, with htpasswd Basic auth when `credentials` are given.
    pub fn start(name: &str, port: u16, credentials: Option<(&str, &str)>) -> TestResult<Registry> {
        let bin = which("docker-registry").ok_or_else(|| {
            fail(
                "docker-registry is not installed: run scripts/install-deps.sh \
                 (Debian package docker-registry)",
            )
        })?;
        let dir = PathBuf::from(format!("/var/tmp/oci-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let mut auth = String::new();
        if let Some((user, pass)) = credentials {
            let hash = bcrypt::hash(pass, 4)?;
            std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n"))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: wrenn-test\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: wrenn-oci-test\n{auth}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config)?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| fail(format!("starting docker-registry: {e}")))?;
        let mut reg = Registry {
            port,
            dir,
            child: Some(child),
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = reg.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(fail(format!(
                    "docker-registry exited ({status}): {}",
                    reg.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "docker-registry did not listen on {port}: {}",
                    reg.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(reg)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Requests the registry answered for `repository` so far (its access log).
    pub fn requests(&self, repository: &str) -> Vec<String> {
        let needle = format!(" /v2/{repository}/");
        self.log()
            .lines()
            .filter(|l| l.starts_with("127.0.0.1 - ") && l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Where the registry keeps blob `hex` on disk.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| Path::new(p).is_file())
    })
}

/// A fresh cache folder for one test.
pub fn cache_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(format!("/var/tmp/oci-test-cache-{name}"));
    if d.exists() {
        crate::cache::make_removable(&d);
        let _ = std::fs::remove_dir_all(&d);
    }
    d
}

/// Removes a test's cache folder.
pub fn remove_cache(d: &Path) {
    crate::cache::make_removable(d);
    let _ = std::fs::remove_dir_all(d);
}

/// An `OciConfig` that reaches `reg` over plain HTTP.
pub fn config_for(reg: &Registry, cache: &Path) -> crate::OciConfig {
    let mut c = crate::OciConfig::new(cache);
    c.registries.insert(
        reg.host(),
        crate::RegistrySettings {
            insecure: true,
            ..Default::default()
        },
    );
    c
}
