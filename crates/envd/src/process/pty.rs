//! The master side of a pseudo-terminal, read and written without blocking the runtime.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{
    fcntl::{fcntl, FcntlArg, FdFlag, OFlag},
    pty::{openpty, Winsize},
};
use tokio::io::unix::AsyncFd;

/// A PTY pair: the master envd keeps and the slave the child gets.
pub struct PtyPair {
    pub master: PtyMaster,
    pub slave: OwnedFd,
}

/// The master side of a PTY.
#[derive(Debug)]
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn cloexec(fd: &OwnedFd) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Opens a PTY of `rows` × `cols`; both ends close on exec so other children never hold them.
pub fn open(rows: u16, cols: u16) -> io::Result<PtyPair> {
    let pty = openpty(Some(&winsize(rows, cols)), None)?;
    cloexec(&pty.master)?;
    cloexec(&pty.slave)?;
    let flags = OFlag::from_bits_truncate(fcntl(&pty.master, FcntlArg::F_GETFL)?);
    fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(PtyPair {
        master: PtyMaster {
            // SAFETY: `pty.master` is an open OwnedFd that the AsyncFd owns from here on, so
            // it stays open and unchanged for the AsyncFd's whole life.
            fd: unsafe { AsyncFd::register(pty.master) }.map_err(io::Error::from)?,
        },
        slave: pty.slave,
    })
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

impl PtyMaster {
    /// Reads output; `Ok(0)` once every slave descriptor is closed.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes and the fd is
                // owned by `self` for the duration of the call.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => return Ok(n),
                // The slave side hung up.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as terminal input.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: `data` is a valid readable buffer of `data.len()` bytes.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal size (the child gets `SIGWINCH`).
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let ws = winsize(rows, cols);
        // SAFETY: the fd is a PTY master owned by `self` and `ws` outlives the call.
        unsafe { set_winsize(self.fd.get_ref().as_raw_fd(), &ws) }?;
        Ok(())
    }
}
