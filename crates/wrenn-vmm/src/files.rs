//! Copying VM files cheaply: a reflink where the filesystem has them, otherwise a sparse copy
//! that skips holes (guest memory files are mostly holes).

use std::{
    fs::{File, OpenOptions},
    io,
    os::fd::AsRawFd,
    path::Path,
};

use crate::error::{Result, VmmError};

/// Mode of every folder that holds a VM's files (guest memory, disks, device state, logs).
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of every file in those folders.
pub const PRIVATE_FILE: u32 = 0o600;

fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Makes folder `path` (and missing parents) and sets it to 0700, also when it already
/// existed: set explicitly, never left to the process umask.
pub fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let ctx = || format!("creating {}", path.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        .map_err(|e| VmmError::io(ctx(), e))?;
    chmod(path, PRIVATE_DIR).map_err(|e| VmmError::io(ctx(), e))
}

/// Sets file `path` to 0600 (for files another program made: QEMU, `qemu-img`).
pub fn private_file(path: &Path) -> Result<()> {
    chmod(path, PRIVATE_FILE)
        .map_err(|e| VmmError::io(format!("making {} private", path.display()), e))
}

/// Opens `path` for writing as a 0600 file (created if missing, mode set explicitly also when
/// it existed); `truncate` empties it, else writes append.
pub fn open_private(path: &Path, truncate: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let ctx = || format!("opening {}", path.display());
    let mut o = OpenOptions::new();
    o.create(true).mode(PRIVATE_FILE);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    let f = o.open(path).map_err(|e| VmmError::io(ctx(), e))?;
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))
        .map_err(|e| VmmError::io(ctx(), e))?;
    Ok(f)
}

/// Writes `data` to a 0600 file `path` (replacing what was there).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = open_private(path, true)?;
    f.write_all(data)
        .map_err(|e| VmmError::io(format!("writing {}", path.display()), e))
}

/// Makes a tree private: every folder 0700, every regular file and socket 0600. Symlinks are
/// left alone, and so are files with other hard links (a template's kernel linked from its
/// base: not ours to change, and not secret).
pub fn private_tree(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VmmError::io(format!("reading {}", dir.display()), e)),
    };
    if !meta.file_type().is_dir() {
        return Ok(());
    }
    chmod(dir, PRIVATE_DIR)
        .map_err(|e| VmmError::io(format!("making {} private", dir.display()), e))?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| VmmError::io(format!("listing {}", dir.display()), e))?;
    for e in entries.flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let t = m.file_type();
        if t.is_dir() {
            private_tree(&e.path())?;
        } else if ((t.is_file() && m.nlink() == 1) || t.is_socket())
            && m.mode() & 0o777 != PRIVATE_FILE
        {
            private_file(&e.path())?;
        }
    }
    Ok(())
}

/// Copies `src` to a new file `dst`.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    let ctx = || format!("copying {} to {}", src.display(), dst.display());
    let from = File::open(src).map_err(|e| VmmError::io(ctx(), e))?;
    let to = {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE)
            .open(dst)
            .map_err(|e| VmmError::io(ctx(), e))?;
        // Guest memory and disks: 0600 whatever the umask.
        to.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(|e| VmmError::io(ctx(), e))?;
        to
    };
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source descriptor as its argument; both fds are open.
    if unsafe { libc::ioctl(to.as_raw_fd(), FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let len = from.metadata().map_err(|e| VmmError::io(ctx(), e))?.len();
    to.set_len(len).map_err(|e| VmmError::io(ctx(), e))?;
    for (data, end) in data_extents(&from).map_err(|e| VmmError::io(ctx(), e))? {
        let (end, mut off_in, mut off_out) = (end as i64, data as i64, data as i64);
        while off_in < end {
            // SAFETY: both descriptors are open and the offsets point at owned i64s.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut off_in,
                    to.as_raw_fd(),
                    &mut off_out,
                    (end - off_in) as usize,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                // Across filesystems (the images folder on another disk than the data
                // folder) some kernels refuse copy_file_range: copy through a buffer.
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
                ) {
                    copy_range(&from, &to, off_in as u64, end as u64)
                        .map_err(|e| VmmError::io(ctx(), e))?;
                    break;
                }
                return Err(VmmError::io(ctx(), err));
            }
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// Copies bytes `start..end` of `from` to the same offsets of `to` with plain reads and writes.
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = start;
    while pos < end {
        let want = buf.len().min((end - pos) as usize);
        let n = from.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        to.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Allocates every block of `path` (its holes become allocated zeros; its data is kept), so
/// later writes into it never meet a full disk. `ENOSPC` when the disk cannot hold it.
pub fn allocate(path: &Path) -> Result<()> {
    let ctx = || format!("allocating {}", path.display());
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| VmmError::io(ctx(), e))?;
    let len = f.metadata().map_err(|e| VmmError::io(ctx(), e))?.len();
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate(2) on an open descriptor; mode 0 only allocates, never changes data.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) } != 0 {
        let err = io::Error::last_os_error();
        // A filesystem without fallocate keeps the file sparse, as before.
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(VmmError::io(ctx(), err));
        }
    }
    Ok(())
}

/// Turns every all-zero 4 KiB page of `path` into a hole, so copies and restores of a guest
/// memory file never touch memory the guest had freed (guests boot with `init_on_free=1`).
/// Returns the bytes still allocated.
pub fn punch_zero_pages(path: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let ctx = || format!("punching holes in {}", path.display());
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| VmmError::io(ctx(), e))?;
    let punch =
        |start: u64, len: u64| punch_hole(&f, start, len).map_err(|e| VmmError::io(ctx(), e));
    let mut buf = vec![0u8; 1 << 20];
    // Only the data is read: holes are zero already.
    for (data, end) in data_extents(&f).map_err(|e| VmmError::io(ctx(), e))? {
        let mut offset = data;
        let mut run: Option<(u64, u64)> = None; // (start, len) of zero pages to punch
        while offset < end {
            let want = ((end - offset) as usize).min(buf.len());
            let n = f
                .read_at(&mut buf[..want], offset)
                .map_err(|e| VmmError::io(ctx(), e))?;
            if n == 0 {
                break;
            }
            for (i, page) in buf[..n].chunks(PAGE).enumerate() {
                let at = offset + (i * PAGE) as u64;
                if is_zero(page) {
                    run = Some(match run {
                        Some((s, l)) => (s, l + page.len() as u64),
                        None => (at, page.len() as u64),
                    });
                } else if let Some((s, l)) = run.take() {
                    punch(s, l)?;
                }
            }
            offset += n as u64;
        }
        if let Some((s, l)) = run {
            punch(s, l)?;
        }
    }
    use std::os::unix::fs::MetadataExt;
    Ok(f.metadata().map_err(|e| VmmError::io(ctx(), e))?.blocks() * 512)
}

/// Writes `bytes` (whole 4 KiB pages) at `offset` of `f`, leaving holes for its all-zero
/// pages (punched, in case the file had data there): the file reads the same as after a plain
/// write, with zero pages taking no space.
pub fn write_sparse_at(f: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let mut i = 0;
    while i < bytes.len() {
        let zero = is_zero(&bytes[i..(i + PAGE).min(bytes.len())]);
        let mut j = i + PAGE;
        while j < bytes.len() && is_zero(&bytes[j..(j + PAGE).min(bytes.len())]) == zero {
            j += PAGE;
        }
        let j = j.min(bytes.len());
        let at = offset + i as u64;
        if zero {
            punch_hole(f, at, (j - i) as u64)?;
        } else {
            f.write_all_at(&bytes[i..j], at)?;
        }
        i = j;
    }
    Ok(())
}

/// Turns `len` bytes of `f` at `at` into a hole (reads as zero, takes no space).
fn punch_hole(f: &File, at: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on an open descriptor with a valid range.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            at as i64,
            len as i64,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `bytes` are all zero (word at a time: this runs over whole guest memory files).
fn is_zero(bytes: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: any bit pattern is a valid u64; align_to only splits at aligned bounds.
        unsafe { bytes.align_to::<u64>() }
    };
    head.iter().all(|b| *b == 0) && words.iter().all(|w| *w == 0) && tail.iter().all(|b| *b == 0)
}

/// The `(start, end)` byte ranges of `f` that hold data (`SEEK_DATA`/`SEEK_HOLE`), in order.
pub fn data_extents(f: &File) -> io::Result<Vec<(u64, u64)>> {
    let len = f.metadata()?.len() as i64;
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while pos < len {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return Err(err);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len } else { hole };
        out.push((data as u64, end as u64));
        pos = end;
    }
    Ok(out)
}

/// The last `max` bytes of a text file, lossily decoded (for error messages).
pub fn tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return String::from("(no console output)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn sparse_copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let src = dir.path().join("src");
        let mut f = File::create(&src).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        copy_sparse(&src, &dst).unwrap();
        let a = std::fs::read(&src).unwrap();
        let b = std::fs::read(&dst).unwrap();
        assert_eq!(a, b);
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&dst).unwrap().blocks();
        assert!(blocks < 1024, "copy is sparse ({blocks} blocks)");
        assert!(copy_sparse(&src, &dst).is_err(), "never overwrites");
    }

    #[test]
    fn allocate_fills_holes_and_keeps_data() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let p = dir.path().join("mem");
        let mut f = File::create(&p).unwrap();
        f.write_all(b"data").unwrap();
        f.set_len(16 << 20).unwrap();
        drop(f);
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&p).unwrap().blocks() < 1024);
        allocate(&p).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), 16 << 20);
        assert!(meta.blocks() * 512 >= 16 << 20, "{} blocks", meta.blocks());
        let back = std::fs::read(&p).unwrap();
        assert_eq!(&back[..4], b"data");
        assert!(back[4..].iter().all(|&b| b == 0));
    }

    /// The images folder and the data folder may be on different filesystems.
    #[test]
    fn sparse_copy_across_filesystems() {
        let src_dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let Ok(dst_dir) = tempfile::tempdir_in("/dev/shm") else {
            return; // no second filesystem here
        };
        let src = src_dir.path().join("src");
        let mut f = File::create(&src).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&[7u8; 3 << 20]).unwrap();
        drop(f);
        let dst = dst_dir.path().join("dst");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert_eq!(mode(&dst), 0o600);
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn private_helpers_set_modes_whatever_was_there() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let d = dir.path().join("a/b");
        std::fs::create_dir_all(&d).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700, "an existing folder is made private");
        let f = d.join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_private(&f, false).unwrap();
        assert_eq!(mode(&f), 0o600, "an existing file is made private");
        let c = d.join("copy");
        copy_sparse(&f, &c).unwrap();
        assert_eq!(mode(&c), 0o600);
        // A tree: folders 0700, files 0600, hard-linked files and symlinks untouched.
        let t = dir.path().join("t");
        std::fs::create_dir_all(t.join("sub")).unwrap();
        std::fs::write(t.join("sub/mem"), b"m").unwrap();
        std::fs::set_permissions(t.join("sub/mem"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::set_permissions(t.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::hard_link(&c, t.join("linked")).unwrap();
        std::fs::set_permissions(t.join("linked"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("sub/mem", t.join("ln")).unwrap();
        private_tree(&t).unwrap();
        assert_eq!(mode(&t), 0o700);
        assert_eq!(mode(&t.join("sub")), 0o700);
        assert_eq!(mode(&t.join("sub/mem")), 0o600);
        assert_eq!(
            mode(&t.join("linked")),
            0o644,
            "a file with other links is left alone"
        );
    }

    #[test]
    fn zero_pages_become_holes() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let p = dir.path().join("mem");
        let mut data = vec![0u8; 8 << 20];
        data[5 * 4096 + 7] = 1;
        std::fs::write(&p, &data).unwrap();
        let allocated = punch_zero_pages(&p).unwrap();
        assert!(allocated <= 64 * 1024, "{allocated} bytes still allocated");
        assert_eq!(std::fs::read(&p).unwrap(), data);
    }
}
