//! Copying VM files cheaply: a reflink where the filesystem has them, otherwise a sparse copy
//! that skips holes (guest memory files are mostly holes).

use std::{
    fs::{File, OpenOptions},
    io,
    os::fd::AsRawFd,
    path::Path,
};

use crate::error::{Result, VmmError};

/// Copies `src` to a new file `dst`.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    let ctx = || format!("copying {} to {}", src.display(), dst.display());
    let from = File::open(src).map_err(|e| VmmError::io(ctx(), e))?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| VmmError::io(ctx(), e))?;
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source descriptor as its argument; both fds are open.
    if unsafe { libc::ioctl(to.as_raw_fd(), FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let len = from.metadata().map_err(|e| VmmError::io(ctx(), e))?.len();
    to.set_len(len).map_err(|e| VmmError::io(ctx(), e))?;
    let mut pos: i64 = 0;
    let len = len as i64;
    while pos < len {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(from.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return Err(VmmError::io(ctx(), err));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len } else { hole };
        let mut off_in = data;
        let mut off_out = data;
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
                return Err(VmmError::io(ctx(), io::Error::last_os_error()));
            }
            if n == 0 {
                break;
            }
        }
        pos = end;
    }
    Ok(())
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
}
