//! Paths inside a root filesystem that is not ours to trust: every symbolic link met on the
//! way is followed *inside* the root (an absolute target starts again at the root, `..` stops
//! at it), so nothing written through these paths lands outside it.

use std::{
    collections::VecDeque,
    ffi::OsString,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Component, Path, PathBuf},
};

use crate::error::{OciError, Result};

/// Symbolic links followed before giving up (Linux's own limit).
const MAX_HOPS: u32 = 40;

/// Why a path inside the root could not be used.
#[derive(Debug)]
pub enum RootPathError {
    /// A `..` that would leave the root (only in paths named by layers, never in link targets).
    Escape,
    TooManyLinks,
    NotADirectory(PathBuf),
    Missing(PathBuf),
    Io(PathBuf, std::io::Error),
}

impl RootPathError {
    /// The crate error, for a layer entry `path`.
    pub fn into_oci(self, layer: &str, path: &str) -> OciError {
        let bad = |reason: String| OciError::BadLayer {
            digest: layer.to_string(),
            reason: format!("{path}: {reason}"),
        };
        match self {
            RootPathError::Escape => OciError::PathEscape {
                digest: layer.to_string(),
                path: path.to_string(),
            },
            RootPathError::TooManyLinks => bad("too many symbolic links".into()),
            RootPathError::NotADirectory(p) => bad(format!("{} is not a directory", p.display())),
            RootPathError::Missing(p) => bad(format!("{} does not exist", p.display())),
            RootPathError::Io(p, e) => OciError::io("unpacking", p, e),
        }
    }
}

/// The components of a path named by a layer, relative to the root: `/` and `.` dropped; a
/// `..` anywhere is [`RootPathError::Escape`] (layers have no reason to write one).
pub fn clean_relative(path: &Path) -> Result<Vec<OsString>, RootPathError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(RootPathError::Escape),
        }
    }
    Ok(out)
}

/// The real directory that `parts` (relative to `root`) names, following symbolic links
/// inside the root; missing directories are made (mode 0755) when `create`.
pub fn resolve_dir(
    root: &Path,
    parts: &[OsString],
    create: bool,
) -> Result<PathBuf, RootPathError> {
    let mut queue: VecDeque<OsString> = parts.iter().cloned().collect();
    let mut at: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(name) = queue.pop_front() {
        if name == "." || name.is_empty() {
            continue;
        }
        if name == ".." {
            at.pop();
            continue;
        }
        let here: PathBuf = at.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let candidate = here.join(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(RootPathError::TooManyLinks);
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(|e| RootPathError::Io(candidate.clone(), e))?;
                if target.is_absolute() {
                    at.clear();
                }
                let mut rest: VecDeque<OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                rest.extend(queue);
                queue = rest;
            }
            Ok(m) if m.is_dir() => at.push(name),
            Ok(_) => return Err(RootPathError::NotADirectory(candidate)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&candidate)
                    .map_err(|e| RootPathError::Io(candidate.clone(), e))?;
                // The mode exactly, whatever the process's umask.
                std::fs::set_permissions(&candidate, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| RootPathError::Io(candidate.clone(), e))?;
                at.push(name);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RootPathError::Missing(candidate))
            }
            Err(e) => return Err(RootPathError::Io(candidate, e)),
        }
    }
    Ok(at.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// Where a file named `path` (absolute or relative, inside the guest) lives on the host:
/// its parent resolved inside `root` (made when `create`), its last component not followed.
pub fn host_path(root: &Path, path: &Path, create: bool) -> Result<PathBuf, RootPathError> {
    let mut parts = clean_relative(path)?;
    let last = parts.pop().ok_or(RootPathError::Escape)?;
    Ok(resolve_dir(root, &parts, create)?.join(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        let rel = |s: &str| clean_relative(Path::new(s)).unwrap();
        assert_eq!(
            resolve_dir(&root, &rel("bin"), false).unwrap(),
            root.join("usr/bin")
        );
        // An absolute link target starts again at the root, not at the host's /.
        assert_eq!(
            resolve_dir(&root, &rel("abs"), true).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_dir(&root, &rel("up/usr"), false).unwrap(),
            root.join("usr")
        );
        assert!(matches!(
            resolve_dir(&root, &rel("loop"), true),
            Err(RootPathError::TooManyLinks)
        ));
        assert!(matches!(
            resolve_dir(&root, &rel("file/x"), true),
            Err(RootPathError::NotADirectory(_))
        ));
        assert!(matches!(
            resolve_dir(&root, &rel("nope"), false),
            Err(RootPathError::Missing(_))
        ));
        assert!(matches!(
            clean_relative(Path::new("a/../../b")),
            Err(RootPathError::Escape)
        ));
        assert_eq!(
            host_path(&root, Path::new("/bin/sh"), false).unwrap(),
            root.join("usr/bin/sh")
        );
        assert!(!t.path().join("etc").exists());
    }
}
