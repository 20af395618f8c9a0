//! The baseline: a plain loopback HTTP/1.1 static file server on raw Tokio.
//!
//! It speaks the same URL shape as envd's `/files` so that the very same `curl` commands run
//! against both, and it is as plain as a server can reasonably be:
//!
//! * `GET /health` answers 204;
//! * `GET /files?path=P` streams file `P` with a `content-length`;
//! * `POST`/`PUT /files?path=P` streams the body (`content-length` or chunked) into file `P`,
//!   answering `100 Continue` first when asked to.
//!
//! Paths must lie under `--root`. Connections are kept alive. File I/O goes through
//! `tokio::fs` in 256 KiB pieces, the same chunk size envd uses, on a multi-threaded runtime
//! like envd's.

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Component, Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

/// The first stdout line, followed by the bound address.
pub const READY_PREFIX: &str = "wrenn-bench static server listening on ";

const CHUNK: usize = 256 * 1024;
const MAX_HEAD: u64 = 64 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory under which files may be read and written.
    #[arg(long)]
    root: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let root = std::fs::canonicalize(&args.root)
        .with_context(|| format!("root directory {}", args.root.display()))?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve(args.listen, root.into()))
}

async fn serve(listen: SocketAddr, root: Arc<Path>) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY_PREFIX}{}", listener.local_addr()?)?;
        out.flush()?;
    }
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                eprintln!("wrenn-bench static server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let root = root.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_conn(sock, &root).await {
                eprintln!("wrenn-bench static server: {e:#}");
            }
        });
    }
}

enum BodyKind {
    Length(u64),
    Chunked,
}

struct Request {
    method: String,
    target: String,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

async fn serve_conn(sock: TcpStream, root: &Path) -> Result<()> {
    sock.set_nodelay(true)?;
    let mut conn = BufReader::with_capacity(CHUNK, sock);
    while let Some(req) = read_request(&mut conn).await? {
        if !handle(&mut conn, &req, root).await? {
            break;
        }
    }
    let _ = conn.shutdown().await;
    Ok(())
}

/// Reads one request head; `None` at a clean end of the connection.
async fn read_request(conn: &mut BufReader<TcpStream>) -> Result<Option<Request>> {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0u64;
    loop {
        let mut raw = Vec::new();
        let n = (&mut *conn)
            .take(MAX_HEAD - total)
            .read_until(b'\n', &mut raw)
            .await?;
        if n == 0 {
            ensure!(
                lines.is_empty() && total == 0,
                "connection closed mid-request"
            );
            return Ok(None);
        }
        total += n as u64;
        ensure!(raw.ends_with(b"\n"), "request head over {MAX_HEAD} bytes");
        let line = String::from_utf8(raw).context("request head is not UTF-8")?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if lines.is_empty() {
                continue; // Stray CRLF between requests.
            }
            break;
        }
        lines.push(line.to_owned());
    }
    let mut request_line = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        bail!("bad request line {:?}", lines[0]);
    };
    let mut req = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        body: BodyKind::Length(0),
        keep_alive: version == "HTTP/1.1",
        expect_continue: false,
    };
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            bail!("bad header line {line:?}");
        };
        let (name, value) = (name.trim(), value.trim().to_ascii_lowercase());
        if name.eq_ignore_ascii_case("content-length") {
            if !matches!(req.body, BodyKind::Chunked) {
                req.body = BodyKind::Length(value.parse().context("bad content-length")?);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.contains("chunked") {
                req.body = BodyKind::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if value.contains("close") {
                req.keep_alive = false;
            } else if value.contains("keep-alive") {
                req.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            req.expect_continue = value == "100-continue";
        }
    }
    Ok(Some(req))
}

/// Answers one request; returns whether the connection stays open.
async fn handle(conn: &mut BufReader<TcpStream>, req: &Request, root: &Path) -> Result<bool> {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let keep = req.keep_alive;
    match (req.method.as_str(), path) {
        ("GET" | "HEAD", "/health") => {
            copy_body(conn, &req.body, &mut tokio::io::sink()).await?;
            respond(conn, 204, "No Content", b"", keep).await?;
            Ok(keep)
        }
        ("GET", "/files") => {
            copy_body(conn, &req.body, &mut tokio::io::sink()).await?;
            let file = match file_param(query, root) {
                Ok(p) => p,
                Err(msg) => return error(conn, 400, "Bad Request", &msg, keep).await,
            };
            download(conn, &file, keep).await
        }
        ("POST" | "PUT", "/files") => {
            let file = match file_param(query, root) {
                Ok(p) => p,
                // The body is unread: close rather than skip it.
                Err(msg) => return error(conn, 400, "Bad Request", &msg, false).await,
            };
            if req.expect_continue {
                conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            upload(conn, req, &file, keep).await
        }
        (_, "/files") => error(conn, 405, "Method Not Allowed", "method not allowed", false).await,
        _ => error(conn, 404, "Not Found", "no such endpoint", false).await,
    }
}

async fn download(conn: &mut BufReader<TcpStream>, path: &Path, keep: bool) -> Result<bool> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return error(conn, 404, "Not Found", &e.to_string(), keep).await,
    };
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return error(conn, 400, "Bad Request", "not a regular file", keep).await;
    }
    let len = meta.len();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\n{}\r\n",
        if keep { "" } else { "connection: close\r\n" }
    );
    conn.write_all(head.as_bytes()).await?;
    // Double-buffered: the next piece is read while the current one is sent, as the write
    // side of `tokio::fs::File` already overlaps on uploads.
    let (mut cur, mut next) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let piece = |left: u64| usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
    let mut left = len;
    let mut n = file.read(&mut cur[..piece(left)]).await?;
    while left > 0 {
        ensure!(n > 0, "{} shrank while being served", path.display());
        left -= n as u64;
        let want = piece(left);
        let (sent, read) = tokio::join!(conn.write_all(&cur[..n]), async {
            if want > 0 {
                file.read(&mut next[..want]).await
            } else {
                Ok(0)
            }
        });
        sent?;
        n = read?;
        std::mem::swap(&mut cur, &mut next);
    }
    conn.flush().await?;
    Ok(keep)
}

async fn upload(
    conn: &mut BufReader<TcpStream>,
    req: &Request,
    path: &Path,
    keep: bool,
) -> Result<bool> {
    let mut file = match tokio::fs::File::create(path).await {
        Ok(f) => f,
        Err(e) => return error(conn, 400, "Bad Request", &e.to_string(), false).await,
    };
    let written = copy_body(conn, &req.body, &mut file).await?;
    file.flush().await?;
    drop(file);
    let body = serde_json::json!([{ "path": path.to_string_lossy(), "bytes": written }]);
    respond(conn, 200, "OK", body.to_string().as_bytes(), keep).await?;
    Ok(keep)
}

/// Streams the request body into `out`; returns its length.
async fn copy_body(
    conn: &mut BufReader<TcpStream>,
    kind: &BodyKind,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<u64> {
    match kind {
        BodyKind::Length(len) => {
            copy_exact(conn, *len, out).await?;
            Ok(*len)
        }
        BodyKind::Chunked => {
            let mut total = 0;
            loop {
                let mut line = String::new();
                (&mut *conn).take(MAX_HEAD).read_line(&mut line).await?;
                let size = line.trim_end().split(';').next().unwrap_or_default();
                let size = u64::from_str_radix(size.trim(), 16)
                    .with_context(|| format!("bad chunk size line {line:?}"))?;
                if size == 0 {
                    loop {
                        line.clear();
                        let n = (&mut *conn).take(MAX_HEAD).read_line(&mut line).await?;
                        if n == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    return Ok(total);
                }
                copy_exact(conn, size, out).await?;
                total += size;
                let mut crlf = [0u8; 2];
                conn.read_exact(&mut crlf).await?;
                ensure!(&crlf == b"\r\n", "chunk not followed by CRLF");
            }
        }
    }
}

async fn copy_exact(
    conn: &mut (impl AsyncBufRead + Unpin),
    mut left: u64,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<()> {
    while left > 0 {
        let buf = conn.fill_buf().await?;
        ensure!(!buf.is_empty(), "connection closed mid-body");
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        out.write_all(&buf[..n]).await?;
        conn.consume(n);
        left -= n as u64;
    }
    Ok(())
}

async fn respond(
    conn: &mut BufReader<TcpStream>,
    status: u16,
    reason: &str,
    body: &[u8],
    keep: bool,
) -> Result<()> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    if status != 204 {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    if !keep {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    conn.write_all(&out).await?;
    conn.flush().await?;
    Ok(())
}

async fn error(
    conn: &mut BufReader<TcpStream>,
    status: u16,
    reason: &str,
    message: &str,
    keep: bool,
) -> Result<bool> {
    let body = serde_json::json!({ "code": status, "message": message });
    respond(conn, status, reason, body.to_string().as_bytes(), keep).await?;
    Ok(keep)
}

/// The `path` query parameter, which must name a file under `root`.
fn file_param(query: &str, root: &Path) -> Result<PathBuf, String> {
    let raw = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "path")
        .map(|(_, v)| v)
        .ok_or("the path query parameter is required")?;
    let path = PathBuf::from(percent_decode(raw)?);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{} is not a plain absolute path", path.display()));
    }
    if !path.starts_with(root) || path == root {
        return Err(format!(
            "{} is not under {}",
            path.display(),
            root.display()
        ));
    }
    Ok(path)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "path is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_param_stays_under_root() {
        let root = Path::new("/var/tmp/x");
        assert_eq!(
            file_param("path=%2Fvar%2Ftmp%2Fx%2Fa.bin", root).unwrap(),
            PathBuf::from("/var/tmp/x/a.bin")
        );
        assert!(file_param("path=/var/tmp/x/../y", root).is_err());
        assert!(file_param("path=/etc/passwd", root).is_err());
        assert!(file_param("other=1", root).is_err());
        assert!(file_param("path=%zz", root).is_err());
    }
}
