//! Path handling shared by the RPCs and `/files`: `~` expansion, relative paths under the
//! user's home, directories created on the user's behalf, and permission checks.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Component, Path, PathBuf},
};

use crate::{
    error::{EnvdError, Result},
    users::User,
};

/// Resolves a client path for `user`: `~` and `~/x` under the home, relative paths under the
/// home, `.`/`..` folded lexically. An empty path is the home itself.
pub fn resolve(raw: &str, user: &User) -> Result<PathBuf> {
    if raw.contains('\0') {
        return Err(EnvdError::InvalidArgument(format!(
            "path {raw:?} contains a NUL byte"
        )));
    }
    let joined = if raw.is_empty() || raw == "~" {
        user.home.clone()
    } else if let Some(rest) = raw.strip_prefix("~/") {
        // `~//etc` is under the home like `~/etc` (joining `/etc` would replace the home).
        user.home.join(rest.trim_start_matches('/'))
    } else if raw.starts_with('~') {
        return Err(EnvdError::InvalidArgument(format!(
            "path {raw:?}: only ~ and ~/ are expanded"
        )));
    } else if raw.starts_with('/') {
        PathBuf::from(raw)
    } else {
        user.home.join(raw)
    };
    Ok(normalize(&joined))
}

/// Folds `.` and `..` without touching the filesystem (`/..` stays `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Kinds of access to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read = 4,
    Write = 2,
    Exec = 1,
}

/// Whether `user` has `access` to a file with `meta`, by its mode bits (root always does).
pub fn permits(user: &User, meta: &fs::Metadata, access: Access) -> bool {
    if user.is_root() {
        return true;
    }
    let mode = meta.permissions().mode();
    let bit = access as u32;
    let shift = if meta.uid() == user.uid {
        6
    } else if user.groups.contains(&meta.gid()) {
        3
    } else {
        0
    };
    mode & (bit << shift) != 0
}

/// Fails with `permission_denied` unless `user` may `access` the existing `path`.
pub fn require(user: &User, path: &Path, access: Access) -> Result<()> {
    let meta =
        fs::metadata(path).map_err(|e| EnvdError::io(format!("stat {}", path.display()), e))?;
    if permits(user, &meta, access) {
        Ok(())
    } else {
        Err(EnvdError::PermissionDenied(format!(
            "user '{}' may not {} {}",
            user.name,
            match access {
                Access::Read => "read",
                Access::Write => "write to",
                Access::Exec => "enter",
            },
            path.display()
        )))
    }
}

/// Creates `dir` and any missing parents, each new one owned by `user`. The nearest existing
/// ancestor must be a directory the user may write to.
pub fn create_dirs(dir: &Path, user: &User) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::symlink_metadata(cur) {
            Ok(meta) => {
                let meta = if meta.file_type().is_symlink() {
                    fs::metadata(cur)
                        .map_err(|e| EnvdError::io(format!("stat {}", cur.display()), e))?
                } else {
                    meta
                };
                if !meta.is_dir() {
                    return Err(EnvdError::InvalidArgument(format!(
                        "{} exists and is not a directory",
                        cur.display()
                    )));
                }
                if !missing.is_empty() {
                    require(user, cur, Access::Write)?;
                }
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(cur.to_path_buf());
                match cur.parent() {
                    Some(p) => cur = p,
                    None => break,
                }
            }
            Err(e) => return Err(EnvdError::io(format!("stat {}", cur.display()), e)),
        }
    }
    for d in missing.iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => chown(d, user)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(EnvdError::io(format!("mkdir {}", d.display()), e)),
        }
    }
    Ok(())
}

/// Gives `path` to `user` (a no-op when envd is not root and the owner would not change).
pub fn chown(path: &Path, user: &User) -> Result<()> {
    match std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !is_root_process() => Ok(()),
        Err(e) => Err(EnvdError::io(format!("chown {}", path.display()), e)),
    }
}

fn is_root_process() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            groups: vec![1000],
        }
    }

    #[test]
    fn resolves_like_e2b() {
        let u = user();
        let cases = [
            ("", "/home/user"),
            ("~", "/home/user"),
            ("~/a/b", "/home/user/a/b"),
            ("rel/x", "/home/user/rel/x"),
            ("/tmp/../etc/./x", "/etc/x"),
            ("/..", "/"),
            ("~//etc", "/home/user/etc"),
        ];
        for (raw, want) in cases {
            assert_eq!(resolve(raw, &u).unwrap(), PathBuf::from(want), "{raw}");
        }
        assert!(resolve("~root/x", &u).is_err());
        assert!(resolve("/a\0b", &u).is_err());
    }

    /// A path made of `/`, `.`, `..`, `~` and a few names: what path handling gets wrong.
    fn tricky_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![
                Just("/".to_string()),
                Just(".".to_string()),
                Just("..".to_string()),
                Just("~".to_string()),
                Just("//".to_string()),
                "[a-z~. ]{1,4}",
                ".{1,3}",
            ],
            0..10,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest::proptest! {
        /// Any path resolves to an absolute, folded path (no `.` or `..`, no empty part), or is
        /// refused for a reason; resolving the result again changes nothing.
        #[test]
        fn resolved_paths_are_absolute_and_folded(raw in proptest::prop_oneof![tricky_path(), ".{0,40}"]) {
            let u = user();
            match resolve(&raw, &u) {
                Ok(p) => {
                    proptest::prop_assert!(p.is_absolute(), "{raw:?} -> {p:?}");
                    for c in p.components() {
                        proptest::prop_assert!(
                            matches!(c, Component::RootDir | Component::Normal(_)),
                            "{raw:?} -> {p:?}"
                        );
                    }
                    let again = resolve(p.to_str().unwrap(), &u).unwrap();
                    proptest::prop_assert_eq!(&again, &p);
                    proptest::prop_assert_eq!(normalize(&p), p.clone());
                    // Paths that are not absolute and climb nowhere stay under the home.
                    if !raw.starts_with('/') && !raw.contains("..") {
                        proptest::prop_assert!(p.starts_with(&u.home), "{raw:?} -> {p:?}");
                    }
                }
                Err(EnvdError::InvalidArgument(_)) => proptest::prop_assert!(
                    raw.contains('\0') || (raw.starts_with('~') && raw != "~" && !raw.starts_with("~/")),
                    "{raw:?} refused"
                ),
                Err(e) => proptest::prop_assert!(false, "{raw:?}: unexpected {e:?}"),
            }
        }

        /// `..` never climbs above `/`.
        #[test]
        fn parent_dirs_stop_at_root(ups in 0usize..12, names in proptest::collection::vec("[a-z]{1,3}", 0..5)) {
            let raw = format!("/{}{}", names.join("/"), "/..".repeat(ups));
            let p = resolve(&raw, &user()).unwrap();
            let kept = names.len().saturating_sub(ups);
            proptest::prop_assert_eq!(p, std::iter::once("/".to_string()).chain(names.into_iter().take(kept)).collect::<PathBuf>());
        }
    }
}
