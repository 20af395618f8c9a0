//! Writing the PKI's files: private folders, atomic writes, and a folder lock.

use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::Path,
};

use crate::error::{Result, RpcError};

pub(crate) fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .map_err(|e| RpcError::io(format!("checking {}", path.display()), e))
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| RpcError::io(format!("reading {}", path.display()), e))
}

/// Creates `dir` (and missing parents) with mode 0700; an existing folder is left as it is.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RpcError::io(format!("creating {}", dir.display()), e))
}

/// An exclusive `flock` on the folder itself, released when dropped.
pub(crate) fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>> {
    let f = File::open(dir).map_err(|e| RpcError::io(format!("opening {}", dir.display()), e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| RpcError::io(format!("locking {}", dir.display()), errno.into()))
}

/// Writes `data` to `path` with `mode` through a temporary file in the same folder, synced and
/// renamed into place.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| RpcError::io(ctx("writing"), e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| RpcError::io(ctx("setting the mode of"), e))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| RpcError::io(ctx("writing"), e))?;
    tmp.persist(path)
        .map_err(|e| RpcError::io(ctx("renaming into"), e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
