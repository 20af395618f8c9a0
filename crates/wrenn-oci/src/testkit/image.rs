//! Images the tests write themselves: tar layers (including hostile ones the `tar` crate's
//! checked setters would refuse), gzip/zstd compression, configs, manifests and indexes, and
//! pushing them over the distribution API (monolithic blob uploads).

use std::io::Write;

use super::{fail, TestResult};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One tar entry.
pub enum Entry {
    Dir(&'static str, u32),
    File(&'static str, Vec<u8>, u32),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    CharDev(&'static str),
}

/// A tar stream of `entries`, names written raw (so `../x` can be written).
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (name, data): (&str, &[u8]) = match e {
            Entry::Dir(n, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                (n, &[])
            }
            Entry::File(n, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                (n, data)
            }
            Entry::Symlink(n, target) | Entry::Hardlink(n, target) => {
                h.set_entry_type(if matches!(e, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_size(0);
                raw_link(&mut h, target);
                (n, &[])
            }
            Entry::CharDev(n) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_size(0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                (n, &[])
            }
        };
        raw_name(&mut h, name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn raw_name(h: &mut tar::Header, name: &str) {
    let field = &mut h.as_old_mut().name;
    assert!(name.len() < field.len(), "test names stay short");
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

fn raw_link(h: &mut tar::Header, target: &str) {
    let field = &mut h.as_old_mut().linkname;
    assert!(target.len() < field.len());
    field.fill(0);
    field[..target.len()].copy_from_slice(target.as_bytes());
}

#[derive(Clone, Copy, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

impl Comp {
    pub fn media(self, oci: bool) -> &'static str {
        match (self, oci) {
            (Comp::None, _) => "application/vnd.oci.image.layer.v1.tar",
            (Comp::Gzip, true) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (Comp::Gzip, false) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (Comp::Zstd, _) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Comp::None => tar.to_vec(),
            Comp::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Comp::Zstd => zstd::encode_all(tar, 3).unwrap(),
        }
    }
}

/// Pushes to one repository of a registry over HTTP.
pub struct Pusher {
    http: reqwest::Client,
    base: String,
    pub repo: String,
    creds: Option<(String, String)>,
}

impl Pusher {
    pub fn new(reg: &super::registry::Registry, repo: &str) -> Pusher {
        Pusher {
            http: reqwest::Client::new(),
            base: reg.base(),
            repo: repo.into(),
            creds: reg.credentials.clone(),
        }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.creds {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Uploads a blob (one POST, one PUT); returns its digest.
    pub async fn blob(&self, bytes: &[u8]) -> TestResult<String> {
        let digest = sha(bytes);
        let start = self
            .auth(
                self.http
                    .post(format!("{}/v2/{}/blobs/uploads/", self.base, self.repo)),
            )
            .send()
            .await?;
        if start.status().as_u16() != 202 {
            return Err(fail(format!("upload start: {}", start.status())));
        }
        let loc = start
            .headers()
            .get("location")
            .ok_or_else(|| fail("no Location"))?
            .to_str()?
            .to_string();
        let url = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", self.base)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let put = self
            .auth(self.http.put(format!("{url}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        if put.status().as_u16() != 201 {
            return Err(fail(format!(
                "upload put: {} {}",
                put.status(),
                put.text().await.unwrap_or_default()
            )));
        }
        Ok(digest)
    }

    /// Puts a manifest under `reference` (tag or digest); returns its digest.
    pub async fn manifest(&self, reference: &str, media: &str, body: &[u8]) -> TestResult<String> {
        let r = self
            .auth(self.http.put(format!(
                "{}/v2/{}/manifests/{reference}",
                self.base, self.repo
            )))
            .header("content-type", media)
            .body(body.to_vec())
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            return Err(fail(format!(
                "manifest put: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )));
        }
        Ok(sha(body))
    }

    /// Pushes an image of `layers` (uncompressed tars, each with its compression) with an
    /// image config for `arch` holding `env`; tags it when `tag` is given. Returns
    /// (manifest digest, manifest size, media type, manifest bytes).
    pub async fn image(
        &self,
        tag: Option<&str>,
        arch: &str,
        layers: &[(Vec<u8>, Comp)],
        env: &[&str],
        oci: bool,
    ) -> TestResult<(String, usize, &'static str, Vec<u8>)> {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, comp) in layers {
            let blob = comp.compress(tar);
            let d = self.blob(&blob).await?;
            diff_ids.push(sha(tar));
            descs.push(
                serde_json::json!({"mediaType": comp.media(oci), "digest": d, "size": blob.len()}),
            );
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": env, "Cmd": ["/bin/sh"], "WorkingDir": "/srv", "User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))?;
        let cd = self.blob(&config).await?;
        let media = if oci { OCI_MANIFEST } else { DOCKER_MANIFEST };
        let config_media = if oci {
            "application/vnd.oci.image.config.v1+json"
        } else {
            "application/vnd.docker.container.image.v1+json"
        };
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media,
            "config": {"mediaType": config_media, "digest": cd, "size": config.len()},
            "layers": descs,
        }))?;
        let reference = tag.map(str::to_string).unwrap_or_else(|| sha(&manifest));
        let d = self.manifest(&reference, media, &manifest).await?;
        Ok((d, manifest.len(), media, manifest))
    }

    /// Pushes an index of `(digest, size, media, arch, variant)` entries under `tag`.
    pub async fn index(
        &self,
        tag: &str,
        entries: &[(String, usize, &str, &str, Option<&str>)],
        oci: bool,
    ) -> TestResult<String> {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(d, size, media, arch, variant)| {
                let mut platform = serde_json::json!({"os": if *arch == "unknown" { "unknown" } else { "linux" }, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = serde_json::json!(v);
                }
                serde_json::json!({"mediaType": media, "digest": d, "size": size, "platform": platform})
            })
            .collect();
        let media = if oci { OCI_INDEX } else { DOCKER_LIST };
        let body = serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": media, "manifests": manifests}),
        )?;
        self.manifest(tag, media, &body).await
    }
}
