//! `EntryInfo` as E2B's envd fills it: type, size, permission bits and Go-style permission
//! string, owner and group names, RFC 3339 modified time, symlink target, `user.e2b.*` xattrs.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::Path,
};

use wrenn_proto::filesystem::{EntryInfo, FileType};

use crate::{
    error::{EnvdError, Result},
    paths,
    users::UserDb,
};

const METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// Go's `FileMode.String()` for a raw `st_mode`.
pub fn permissions_string(mode: u32) -> String {
    let fmt = mode & libc::S_IFMT;
    let mut s = String::with_capacity(12);
    match fmt {
        libc::S_IFDIR => s.push('d'),
        libc::S_IFLNK => s.push('L'),
        libc::S_IFBLK => s.push('D'),
        libc::S_IFCHR => s.push_str("Dc"),
        libc::S_IFIFO => s.push('p'),
        libc::S_IFSOCK => s.push('S'),
        _ => {}
    }
    if mode & libc::S_ISUID != 0 {
        s.push('u');
    }
    if mode & libc::S_ISGID != 0 {
        s.push('g');
    }
    if mode & libc::S_ISVTX != 0 {
        s.push('t');
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

fn file_type(meta: &fs::Metadata) -> FileType {
    let ft = meta.file_type();
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_file()
        || ft.is_fifo()
        || ft.is_socket()
        || ft.is_char_device()
        || ft.is_block_device()
    {
        FileType::File
    } else {
        FileType::Unspecified
    }
}

fn metadata_xattrs(path: &Path) -> HashMap<String, String> {
    let Ok(names) = xattr::list(path) else {
        return HashMap::new();
    };
    names
        .filter_map(|name| {
            let key = name
                .to_str()?
                .strip_prefix(METADATA_XATTR_PREFIX)?
                .to_string();
            let value = xattr::get(path, &name).ok()??;
            Some((key, String::from_utf8_lossy(&value).into_owned()))
        })
        .collect()
}

/// Stores `metadata` as `user.e2b.<key>` extended attributes of `path`.
pub fn set_metadata(path: &Path, metadata: &[(String, String)]) -> Result<()> {
    for (k, v) in metadata {
        xattr::set(path, format!("{METADATA_XATTR_PREFIX}{k}"), v.as_bytes()).map_err(|e| {
            EnvdError::io(format!("setting metadata {k:?} on {}", path.display()), e)
        })?;
    }
    Ok(())
}

/// Describes the entry at `path` (not following a final symlink except for its type).
pub fn entry_info(path: &Path, db: &UserDb) -> Result<EntryInfo> {
    let meta = fs::symlink_metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EnvdError::NotFound(format!("path '{}' does not exist", path.display()))
        } else {
            EnvdError::io(format!("stat {}", path.display()), e)
        }
    })?;
    Ok(entry_from_meta(path, &meta, db))
}

/// Like [`entry_info`] for metadata already read.
pub fn entry_from_meta(path: &Path, meta: &fs::Metadata, db: &UserDb) -> EntryInfo {
    let is_symlink = meta.file_type().is_symlink();
    let (kind, symlink_target) = if is_symlink {
        match (fs::metadata(path), fs::canonicalize(path)) {
            (Ok(target_meta), Ok(target)) => (
                file_type(&target_meta),
                Some(target.to_string_lossy().into_owned()),
            ),
            _ => {
                let raw = fs::read_link(path).unwrap_or_default();
                let base = path.parent().unwrap_or(Path::new("/"));
                (
                    FileType::Symlink,
                    Some(
                        paths::normalize(&base.join(raw))
                            .to_string_lossy()
                            .into_owned(),
                    ),
                )
            }
        }
    } else {
        (file_type(meta), None)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    EntryInfo {
        name,
        r#type: kind as i32,
        path: path.to_string_lossy().into_owned(),
        size: meta.size() as i64,
        mode: meta.mode() & 0o777,
        permissions: permissions_string(meta.mode()),
        owner: db.user_name(meta.uid()),
        group: db.group_name(meta.gid()),
        modified_time: Some(wrenn_proto::wkt::Timestamp {
            seconds: meta.mtime(),
            nanos: meta.mtime_nsec() as i32,
        }),
        symlink_target,
        metadata: if is_symlink {
            HashMap::new()
        } else {
            metadata_xattrs(path)
        },
        is_symlink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings_match_go() {
        assert_eq!(permissions_string(libc::S_IFREG | 0o640), "-rw-r-----");
        assert_eq!(permissions_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(permissions_string(libc::S_IFLNK | 0o777), "Lrwxrwxrwx");
        assert_eq!(
            permissions_string(libc::S_IFDIR | libc::S_ISVTX | 0o777),
            "dtrwxrwxrwx"
        );
        assert_eq!(
            permissions_string(libc::S_IFREG | libc::S_ISUID | 0o755),
            "urwxr-xr-x"
        );
    }
}
