//! Wrenn's files are private to the user it runs as: `wrenn up`, `wrenn server` and `wrenn
//! agent` set the umask to 077 at start (so everything they and their children create —
//! database, keys, PKI, capsule folders with memory, disks, consoles and envd tokens,
//! snapshots — is 0600/0700), and fix looser modes they find in their folder, saying so.
//! Guest images are built with umask 022 (the guest's own files keep their normal modes), and
//! their output is made private after.

use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// From now on, files and folders this process (and its children) create are private.
pub fn set_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// A path that was looser than private, and its modes before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub path: PathBuf,
    pub was: u32,
    pub now: u32,
}

/// Makes `root` and everything under it private: group and other bits are removed from
/// folders and regular files (owner bits stay: a 0755 folder becomes 0700, a 0644 file 0600).
/// Symbolic links are not followed, and sockets, pipes and devices are left alone. Returns
/// what it changed. A missing `root` is not an error (nothing to fix).
pub fn make_private(root: &Path) -> std::io::Result<Vec<Fixed>> {
    let mut fixed = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Gone meanwhile (a capsule destroyed while we look): nothing to fix.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let ft = meta.file_type();
        if ft.is_symlink() || ft.is_socket() || ft.is_fifo() || ft.is_block_device() {
            continue;
        }
        if ft.is_char_device() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            let now = mode & 0o700 | if ft.is_dir() { 0o700 } else { 0 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(now))?;
            fixed.push(Fixed {
                path: path.clone(),
                was: mode,
                now,
            });
        }
        if ft.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(entries) => {
                    for e in entries {
                        todo.push(e?.path());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(fixed)
}

/// [`make_private`], printing a warning line for each path it fixed.
pub fn check_and_fix(root: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let fixed = make_private(root).with_context(|| format!("making {} private", root.display()))?;
    for f in &fixed {
        println!(
            "warning: {} was readable by other users (mode {:04o}); made it private ({:04o})",
            f.path.display(),
            f.was,
            f.now
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn loose_modes_are_fixed_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("wrenn");
        std::fs::create_dir_all(root.join("capsules/cl-1")).unwrap();
        std::fs::write(root.join("wrenn.db"), "x").unwrap();
        std::fs::write(root.join("capsules/cl-1/memory"), "x").unwrap();
        std::fs::write(root.join("run.sh"), "x").unwrap();
        std::fs::write(root.join("ok"), "x").unwrap();
        let set = |p: &str, m: u32| {
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        set("", 0o755);
        set("capsules", 0o775);
        set("capsules/cl-1", 0o700);
        set("wrenn.db", 0o644);
        set("capsules/cl-1/memory", 0o666);
        set("run.sh", 0o755);
        set("ok", 0o600);
        // A symlink to a loose file elsewhere: not followed.
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        let mut fixed: Vec<(String, u32, u32)> = make_private(&root)
            .unwrap()
            .into_iter()
            .map(|f| {
                let rel = f.path.strip_prefix(&root).unwrap().display().to_string();
                (rel, f.was, f.now)
            })
            .collect();
        fixed.sort();
        assert_eq!(
            fixed,
            [
                ("".to_string(), 0o755, 0o700),
                ("capsules".to_string(), 0o775, 0o700),
                ("capsules/cl-1/memory".to_string(), 0o666, 0o600),
                ("run.sh".to_string(), 0o755, 0o700),
                ("wrenn.db".to_string(), 0o644, 0o600),
            ]
        );
        assert_eq!(mode(&root.join("ok")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a symlink's target is not touched");
        // Once fixed, nothing more to do.
        assert!(make_private(&root).unwrap().is_empty());
        assert!(make_private(&tmp.path().join("missing"))
            .unwrap()
            .is_empty());
    }
}
