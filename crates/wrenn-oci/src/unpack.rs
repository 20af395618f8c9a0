//! Applying a layer (a tar stream, gzip- or zstd-compressed or not) onto a root directory:
//! whiteouts (`.wh.<name>`) and opaque directories (`.wh..wh..opq`) remove what lower layers
//! made, hard and symbolic links, modes, owners (when root) and times. Nothing lands outside
//! the root: `..` in a name refuses the layer, symbolic links met on the way are followed
//! inside the root, the last component is never followed. Device nodes are skipped (the guest
//! mounts devtmpfs on /dev).

use std::{
    collections::HashSet,
    fs::File,
    io::{BufRead, BufReader, Read},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{
    digest::{Digest, HashingReader},
    error::{OciError, Result},
    rootpath::{self, RootPathError},
};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What one layer held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    pub skipped_devices: u64,
    /// The digest of the uncompressed tar (the image config's `diff_id`).
    pub diff_id: Option<Digest>,
}

/// Opens a layer blob as an uncompressed tar stream, the compression read from its first
/// bytes (gzip, zstd or none).
pub fn decompressed(file: File) -> std::io::Result<Box<dyn Read + Send>> {
    let mut buf = BufReader::with_capacity(256 << 10, file);
    let head = buf.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buf))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buf)?)
    } else {
        Box::new(buf)
    })
}

/// Applies the layer blob at `blob` onto `root`; `layer` names it in errors.
pub fn apply_blob(root: &Path, blob: &Path, layer: &str) -> Result<LayerStats> {
    apply_blob_limited(root, blob, layer, u64::MAX)
}

/// [`apply_blob`], refusing the layer once its files hold more than `limit` bytes
/// (a small compressed layer may expand to fill the disk).
pub fn apply_blob_limited(root: &Path, blob: &Path, layer: &str, limit: u64) -> Result<LayerStats> {
    let file = File::open(blob).map_err(|e| OciError::io("opening layer", blob, e))?;
    let stream = decompressed(file).map_err(|e| OciError::BadLayer {
        digest: layer.to_string(),
        reason: format!("cannot decompress: {e}"),
    })?;
    apply_limited(root, stream, layer, limit)
}

/// Applies one uncompressed tar stream onto `root`.
pub fn apply(root: &Path, stream: impl Read, layer: &str) -> Result<LayerStats> {
    apply_limited(root, stream, layer, u64::MAX)
}

/// [`apply`] with at most `limit` bytes of file content.
pub fn apply_limited(
    root: &Path,
    stream: impl Read,
    layer: &str,
    limit: u64,
) -> Result<LayerStats> {
    let mut applier = Applier {
        limit,
        root,
        layer,
        written: HashSet::new(),
        dirs: Vec::new(),
        stats: LayerStats::default(),
        as_root: nix::unistd::geteuid().is_root(),
    };
    let mut archive = tar::Archive::new(HashingReader::new(stream));
    let entries = archive
        .entries()
        .map_err(|e| applier.bad(format!("not a tar: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| applier.bad(format!("bad tar entry: {e}")))?;
        applier.entry(entry)?;
    }
    applier.finish_dirs()?;
    let diff_id = archive
        .into_inner()
        .finish()
        .map_err(|e| applier.bad(format!("reading the end of the tar: {e}")))?;
    let mut stats = applier.stats;
    stats.diff_id = Some(diff_id);
    Ok(stats)
}

/// Metadata applied to a directory once the whole layer is in (writing into a directory
/// changes its time; a read-only mode would stop the writes).
struct DirMeta {
    path: PathBuf,
    mode: u32,
    mtime: u64,
}

struct Applier<'a> {
    limit: u64,
    root: &'a Path,
    layer: &'a str,
    /// Real paths this layer made: an opaque marker keeps them.
    written: HashSet<PathBuf>,
    dirs: Vec<DirMeta>,
    stats: LayerStats,
    as_root: bool,
}

impl Applier<'_> {
    fn bad(&self, reason: String) -> OciError {
        OciError::BadLayer {
            digest: self.layer.to_string(),
            reason,
        }
    }

    fn path_err(&self, e: RootPathError, name: &Path) -> OciError {
        e.into_oci(self.layer, &name.display().to_string())
    }

    fn io(&self, path: &Path, e: std::io::Error) -> OciError {
        OciError::io("unpacking", path, e)
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<R>) -> Result<()> {
        let name = entry
            .path()
            .map_err(|e| self.bad(format!("bad entry name: {e}")))?
            .into_owned();
        let mut parts = rootpath::clean_relative(&name).map_err(|e| self.path_err(e, &name))?;
        let Some(last) = parts.pop() else {
            return Ok(()); // the root itself
        };
        self.stats.entries += 1;
        let last_str = last.to_string_lossy().into_owned();
        let parent =
            rootpath::resolve_dir(self.root, &parts, true).map_err(|e| self.path_err(e, &name))?;
        if last_str == OPAQUE {
            self.stats.whiteouts += 1;
            return self.opaque(&parent);
        }
        if let Some(hidden) = last_str.strip_prefix(WHITEOUT) {
            if hidden.starts_with(WHITEOUT) {
                return Ok(()); // other AUFS metadata (.wh..wh.plnk, …)
            }
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(OciError::PathEscape {
                    digest: self.layer.to_string(),
                    path: name.display().to_string(),
                });
            }
            self.stats.whiteouts += 1;
            return remove_any(&parent.join(hidden)).map_err(|e| self.io(&parent.join(hidden), e));
        }
        let target = parent.join(&last);
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let mtime = header.mtime().unwrap_or(0);
        let existing = std::fs::symlink_metadata(&target).ok();
        match kind {
            tar::EntryType::Directory => {
                if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                    if existing.is_some() {
                        remove_any(&target).map_err(|e| self.io(&target, e))?;
                    }
                    std::fs::create_dir(&target).map_err(|e| self.io(&target, e))?;
                }
                self.owner(&target, uid, gid)?;
                self.dirs.push(DirMeta {
                    path: target.clone(),
                    mode,
                    mtime,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = header.size().unwrap_or(0);
                if self.stats.bytes.saturating_add(size) > self.limit {
                    return Err(OciError::TooLarge {
                        what: format!("the unpacked content of layer {}", self.layer),
                        limit: self.limit,
                    });
                }
                if existing.is_some() {
                    remove_any(&target).map_err(|e| self.io(&target, e))?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|e| self.io(&target, e))?;
                let n = std::io::copy(&mut entry, &mut file)
                    .map_err(|e| self.bad(format!("{}: reading its data: {e}", name.display())))?;
                self.stats.bytes += n;
                drop(file);
                self.owner(&target, uid, gid)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| self.io(&target, e))?;
                set_mtime(&target, mtime);
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| self.bad(format!("bad link name: {e}")))?
                    .ok_or_else(|| {
                        self.bad(format!("{}: symlink without a target", name.display()))
                    })?
                    .into_owned();
                if existing.is_some() {
                    remove_any(&target).map_err(|e| self.io(&target, e))?;
                }
                // The target is kept as written: it means a path inside the guest, and this
                // unpacker follows it only inside the root.
                std::os::unix::fs::symlink(&link, &target).map_err(|e| self.io(&target, e))?;
                self.owner(&target, uid, gid)?;
                set_mtime(&target, mtime);
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| self.bad(format!("bad link name: {e}")))?
                    .ok_or_else(|| {
                        self.bad(format!("{}: hard link without a target", name.display()))
                    })?
                    .into_owned();
                let source = rootpath::host_path(self.root, &link, false)
                    .map_err(|e| self.path_err(e, &link))?;
                if std::fs::symlink_metadata(&source).is_err() {
                    return Err(self.bad(format!(
                        "{}: hard link to {} which does not exist",
                        name.display(),
                        link.display()
                    )));
                }
                if existing.is_some() {
                    remove_any(&target).map_err(|e| self.io(&target, e))?;
                }
                std::fs::hard_link(&source, &target).map_err(|e| self.io(&target, e))?;
            }
            tar::EntryType::Fifo => {
                if existing.is_some() {
                    remove_any(&target).map_err(|e| self.io(&target, e))?;
                }
                nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| self.io(&target, e.into()))?;
                self.owner(&target, uid, gid)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| self.io(&target, e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                tracing::debug!(layer = self.layer, path = %name.display(), "device node skipped");
                self.stats.skipped_devices += 1;
                return Ok(());
            }
            other => {
                tracing::debug!(layer = self.layer, path = %name.display(), kind = ?other, "tar entry type skipped");
                return Ok(());
            }
        }
        self.written.insert(target);
        Ok(())
    }

    /// Removes what lower layers put in `dir`, keeping what this layer wrote there.
    fn opaque(&mut self, dir: &Path) -> Result<()> {
        let list = std::fs::read_dir(dir).map_err(|e| self.io(dir, e))?;
        for child in list {
            let child = child.map_err(|e| self.io(dir, e))?.path();
            if !self.written.contains(&child) {
                remove_any(&child).map_err(|e| self.io(&child, e))?;
            }
        }
        Ok(())
    }

    fn owner(&self, path: &Path, uid: u64, gid: u64) -> Result<()> {
        if !self.as_root {
            return Ok(());
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(self.bad(format!("{}: owner out of range", path.display())));
        };
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| self.io(path, e))
    }

    /// Directory modes and times, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
        for d in dirs {
            // A later entry of the same layer may have replaced the directory.
            if std::fs::symlink_metadata(&d.path).is_ok_and(|m| m.is_dir()) {
                std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(d.mode))
                    .map_err(|e| self.io(&d.path, e))?;
                set_mtime(&d.path, d.mtime);
            }
        }
        Ok(())
    }
}

/// Removes a file, link or whole directory; a missing one is fine.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets a path's modification (and access) time without following a final symbolic link;
/// best effort (times do not change what the image does).
fn set_mtime(path: &Path, secs: u64) {
    let t = nix::sys::time::TimeSpec::new(i64::try_from(secs).unwrap_or(0), 0);
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}
