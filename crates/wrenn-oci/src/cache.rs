//! The on-disk cache, keyed by digest: verified blobs (`blobs/sha256/<hex>`: manifests,
//! configs, layers) and unpacked root filesystems (`rootfs/<manifest hex>/{rootfs/,image.json}`).
//! Everything lands through a private temporary under `tmp/` and one rename, so a reader
//! never sees half of anything and a crash leaves only temporaries (removed on the next open).

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{
    digest::Digest,
    error::{OciError, Result},
};

/// The file that describes an unpacked root filesystem, next to it.
pub const IMAGE_JSON: &str = "image.json";

/// The cache under one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens (making it when missing) the cache at `dir`, removing temporaries a crash left.
    pub fn open(dir: &Path) -> Result<Cache> {
        for sub in ["blobs/sha256", "rootfs", "tmp"] {
            let p = dir.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(|e| OciError::io("creating the OCI cache", &p, e))?;
        }
        let tmp = dir.join("tmp");
        if let Ok(list) = std::fs::read_dir(&tmp) {
            for e in list.flatten() {
                let p = e.path();
                let _ = if p.is_dir() && !p.is_symlink() {
                    make_removable(&p);
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// A blob's bytes, when cached.
    pub fn read_blob(&self, d: &Digest) -> Result<Option<Vec<u8>>> {
        let p = self.blob_path(d);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OciError::io("reading cached blob", p, e)),
        }
    }

    /// Stores `bytes` (already verified to be `d`).
    pub fn write_blob(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| OciError::io("writing blob", tmp.path(), e))?;
        self.keep_blob(tmp, d)
    }

    /// A new temporary file on the cache's filesystem (removed unless kept).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.dir.join("tmp"))
            .map_err(|e| OciError::io("creating a temporary in", self.dir.join("tmp"), e))
    }

    /// Moves a verified temporary into place as blob `d`.
    pub fn keep_blob(&self, tmp: tempfile::NamedTempFile, d: &Digest) -> Result<()> {
        let dest = self.blob_path(d);
        tmp.persist(&dest)
            .map_err(|e| OciError::io("storing blob", dest, e.error))?;
        Ok(())
    }

    /// A new temporary directory for an unpack (removed unless kept).
    pub fn temp_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("unpack-")
            .tempdir_in(self.dir.join("tmp"))
            .map_err(|e| OciError::io("creating a temporary in", self.dir.join("tmp"), e))
    }

    /// Where the root filesystem of manifest `d` is kept (`…/rootfs` inside it).
    pub fn unpacked_dir(&self, d: &Digest) -> PathBuf {
        self.dir.join("rootfs").join(d.hex())
    }

    /// The description of manifest `d`'s unpacked root filesystem, when complete.
    pub fn unpacked(&self, d: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.unpacked_dir(d).join(IMAGE_JSON)).ok()
    }

    /// Moves a finished unpack (`tmp` holding `rootfs/` and `image.json`) into place as
    /// manifest `d`'s. When another pull got there first, its copy stays and ours goes.
    pub fn keep_unpacked(&self, tmp: tempfile::TempDir, d: &Digest) -> Result<PathBuf> {
        let dest = self.unpacked_dir(d);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| OciError::io("unpacking", tmp.path(), e))?;
        match std::fs::rename(tmp.path(), &dest) {
            Ok(()) => {
                let _ = tmp.keep();
                Ok(dest)
            }
            Err(_) if self.unpacked(d).is_some() => {
                make_removable(tmp.path());
                Ok(dest)
            }
            Err(e) => {
                make_removable(tmp.path());
                Err(OciError::io("storing the unpacked image", dest, e))
            }
        }
    }

    /// Removes manifest `d`'s unpacked root filesystem (blobs stay).
    pub fn remove_unpacked(&self, d: &Digest) -> Result<()> {
        let dest = self.unpacked_dir(d);
        if !dest.exists() {
            return Ok(());
        }
        // Out of the way first, in one rename, so nobody sees half of it.
        let gone = self.temp_dir()?;
        let moved = gone.path().join("old");
        std::fs::rename(&dest, &moved).map_err(|e| OciError::io("removing", &dest, e))?;
        make_removable(&moved);
        Ok(())
    }
}

/// Gives every directory under `dir` its owner's write and search bits, so that an image's
/// read-only directories do not stop a removal.
pub fn make_removable(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(m) = std::fs::symlink_metadata(&d) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(
                    &d,
                    std::fs::Permissions::from_mode(m.permissions().mode() | 0o700),
                );
                if let Ok(list) = std::fs::read_dir(&d) {
                    stack.extend(list.flatten().map(|e| e.path()));
                }
            }
        }
    }
}
