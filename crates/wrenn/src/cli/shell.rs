//! `wrenn capsule shell`: the local terminal attached to a PTY in a capsule. On a TTY the
//! terminal goes into raw mode (so Ctrl-C, Ctrl-Z and friends reach the capsule as bytes) and is
//! restored on every way out, panics included; its size follows SIGWINCH. Without a TTY, stdin
//! is sent as typed input and its end as Ctrl-D.

use std::{
    io::{IsTerminal, Read},
    sync::Mutex,
};

use nix::sys::termios::{self, SetArg, Termios};
use tokio::{
    io::AsyncWriteExt,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use wrenn_client::{Client, PtyEvent, PtyStart};

use super::CliError;

/// How long the terminal must be quiet before the end of piped input is sent as Ctrl-D.
const EOF_QUIET: std::time::Duration = std::time::Duration::from_millis(500);

/// How often Ctrl-D is sent again while the session goes on after the end of input.
const EOF_AGAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The terminal's settings before raw mode, for the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

fn restore_saved() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(t) = saved {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &t);
    }
}

/// Raw mode on stdin while it lives.
struct RawMode;

impl RawMode {
    fn enter() -> Result<RawMode, CliError> {
        let stdin = std::io::stdin();
        let original = termios::tcgetattr(&stdin)
            .map_err(|e| CliError::new("io_error", format!("reading the terminal mode: {e}")))?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(original);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_saved();
            previous(info);
        }));
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(|e| {
            restore_saved();
            CliError::new("io_error", format!("setting the terminal to raw mode: {e}"))
        })?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_saved();
    }
}

nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, nix::pty::Winsize);

/// The size of the terminal on stdout or stdin, if either is one.
fn terminal_size() -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    for fd in [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()] {
        let mut ws = nix::pty::Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live,
        // writable `winsize` on this stack frame; a descriptor that is no terminal just fails.
        let ok = unsafe { get_winsize(fd, &mut ws) }.is_ok();
        if ok && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

/// Reads stdin on a thread of its own (a blocking read cannot be cancelled; the process exits
/// without waiting for it). `None` is the end of input.
fn stdin_reader() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Runs the session; returns the shell's exit code.
pub async fn run(client: &Client, id: &str, tag: Option<&str>) -> Result<i32, CliError> {
    let tty = std::io::stdin().is_terminal();
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    let pty = match tag {
        Some(tag) => client.pty_connect(id, tag).await?,
        None => {
            let mut start = PtyStart {
                cols,
                rows,
                ..PtyStart::default()
            };
            if tty {
                if let Ok(term) = std::env::var("TERM") {
                    start.envs.insert("TERM".into(), term);
                }
            }
            client.pty_start(id, &start).await?
        }
    };
    let tag = pty.tag.clone();
    let (writer, mut reader) = pty.split();
    let raw = if tty { Some(RawMode::enter()?) } else { None };
    // Line ends in raw mode need a carriage return.
    let note = |msg: &str| {
        if tty {
            eprint!("\r\nwrenn: {msg}\r\n");
        } else {
            eprintln!("wrenn: {msg}");
        }
    };

    let reattach = |tag: &str| {
        if tag.is_empty() {
            String::new()
        } else {
            format!("; reattach with `wrenn capsule shell {id} --tag {tag}`")
        }
    };
    let detached = |tag: &str| note(&format!("detached{}", reattach(tag)));
    let _ = writer.resize(cols, rows).await;
    let mut input = stdin_reader();
    let mut input_open = true;
    // Without a TTY, the end of input is Ctrl-D, sent once the terminal has been quiet for a
    // moment (a shell that has not set up its line editor yet would drop it) and again while
    // the session goes on: the shell exits when it next reads input, as it would at a terminal.
    let mut eof_at: Option<tokio::time::Instant> = None;
    let mut last_input = None;
    let mut winch = signal(SignalKind::window_change())
        .map_err(|e| CliError::new("io_error", e.to_string()))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| CliError::new("io_error", e.to_string()))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| CliError::new("io_error", e.to_string()))?;
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| CliError::new("io_error", e.to_string()))?;
    let mut stdout = tokio::io::stdout();

    let outcome = loop {
        tokio::select! {
            ev = reader.next() => match ev {
                Some(Ok(PtyEvent::Output(bytes))) => {
                    if let Some(at) = eof_at.as_mut() {
                        *at = tokio::time::Instant::now() + EOF_QUIET;
                    }
                    if stdout.write_all(&bytes).await.is_err() || stdout.flush().await.is_err() {
                        break Err(CliError::new("io_error", "writing to stdout failed"));
                    }
                }
                Some(Ok(PtyEvent::Started { .. })) => {}
                Some(Ok(PtyEvent::Exit { exit_code })) => break Ok(super::exit_code(exit_code)),
                Some(Ok(PtyEvent::Error { message, fatal: true })) => {
                    break Err(CliError::new("stream_error", message));
                }
                Some(Ok(PtyEvent::Error { message, fatal: false })) => note(&message),
                Some(Err(e)) => break Err(e.into()),
                None => {
                    break Err(CliError::new(
                        "stream_error",
                        format!("the connection closed before the shell ended{}", reattach(&tag)),
                    ));
                }
            },
            chunk = input.recv(), if input_open => match chunk {
                Some(Some(bytes)) => {
                    last_input = bytes.last().copied();
                    if writer.write(bytes).await.is_err() {
                        input_open = false;
                    }
                }
                Some(None) | None => {
                    input_open = false;
                    if !tty {
                        // The last line ends with the input, as it does at a terminal.
                        if !matches!(last_input, None | Some(b'\n' | b'\r')) {
                            let _ = writer.write(vec![b'\n']).await;
                        }
                        eof_at = Some(tokio::time::Instant::now() + EOF_QUIET);
                    }
                }
            },
            _ = tokio::time::sleep_until(eof_at.unwrap_or_else(tokio::time::Instant::now)), if eof_at.is_some() => {
                let _ = writer.write(vec![4u8]).await;
                eof_at = Some(tokio::time::Instant::now() + EOF_AGAIN);
            }
            _ = winch.recv() => {
                if let Some((c, r)) = terminal_size() {
                    let _ = writer.resize(c, r).await;
                }
            }
            // Raw mode sends Ctrl-C as a byte; a SIGINT from elsewhere is passed on the same way.
            _ = int.recv() => {
                let _ = writer.write(vec![3u8]).await;
            }
            // Leaves the terminal running in the capsule.
            _ = term.recv() => {
                detached(&tag);
                break Ok(128 + 15);
            }
            _ = hup.recv() => {
                detached(&tag);
                break Ok(128 + 1);
            }
        }
    };
    let _ = stdout.flush().await;
    drop(raw);
    outcome
}
