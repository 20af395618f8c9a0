//! `wrenn capsule cp`: one file between this machine and a capsule, streamed both ways. A
//! download goes to a temporary file next to the destination, renamed into place when complete,
//! so a failed copy never leaves half a file under the destination's name.

use std::path::{Path, PathBuf};

use serde_json::json;
use wrenn_client::Client;

use super::{print_json, CliError};

/// One side of a copy.
#[derive(Debug, PartialEq)]
enum Place {
    /// `ID:/path`.
    Capsule {
        id: String,
        path: String,
    },
    /// `-`: stdin as a source, stdout as a destination.
    Stdio,
    Local(PathBuf),
}

/// `ID:/absolute/path` is in a capsule (an id has no `/`); anything else is local.
fn place(s: &str) -> Place {
    if s == "-" {
        return Place::Stdio;
    }
    match s.split_once(':') {
        Some((id, path)) if !id.is_empty() && !id.contains('/') && path.starts_with('/') => {
            Place::Capsule {
                id: id.to_string(),
                path: path.to_string(),
            }
        }
        _ => Place::Local(PathBuf::from(s)),
    }
}

/// The last component of a path in a capsule.
fn remote_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
}

pub async fn run(client: &Client, src: &str, dst: &str, json: bool) -> Result<(), CliError> {
    let (from, to, bytes) = match (place(src), place(dst)) {
        (Place::Capsule { id, path }, Place::Local(local)) => {
            let name = remote_name(&path).ok_or_else(|| {
                CliError::new("invalid_request", format!("{path} does not name a file"))
            })?;
            let target = if local.is_dir() {
                local.join(name)
            } else {
                local
            };
            let n = download(client, &id, &path, &target).await?;
            (format!("{id}:{path}"), target.display().to_string(), n)
        }
        (Place::Capsule { id, path }, Place::Stdio) => {
            let mut out = tokio::io::stdout();
            let n = client.read_file(&id, &path, &mut out).await?;
            (format!("{id}:{path}"), "-".to_string(), n)
        }
        (Place::Local(local), Place::Capsule { id, path }) => {
            if local.is_dir() {
                return Err(CliError::new(
                    "invalid_request",
                    format!("{} is a directory (cp copies one file)", local.display()),
                ));
            }
            let path = if path.ends_with('/') {
                let name = local.file_name().ok_or_else(|| {
                    CliError::new(
                        "invalid_request",
                        format!("{} has no file name", local.display()),
                    )
                })?;
                format!("{path}{}", name.to_string_lossy())
            } else {
                path
            };
            let file = tokio::fs::File::open(&local)
                .await
                .map_err(|e| CliError::io(&local, e))?;
            let len = file
                .metadata()
                .await
                .map_err(|e| CliError::io(&local, e))?
                .len();
            client.write_file(&id, &path, file, Some(len)).await?;
            (local.display().to_string(), format!("{id}:{path}"), len)
        }
        (Place::Stdio, Place::Capsule { id, path }) => {
            let counted = Counted::default();
            let reader = counted.wrap(tokio::io::stdin());
            client.write_file(&id, &path, reader, None).await?;
            ("-".to_string(), format!("{id}:{path}"), counted.get())
        }
        _ => {
            return Err(CliError::new(
                "invalid_request",
                "one side must be ID:/path in a capsule and the other a local path (or -)",
            ))
        }
    };
    if json {
        print_json(&json!({ "source": from, "destination": to, "bytes": bytes }))?;
    } else if to != "-" {
        println!("{from} -> {to} ({})", super::print::human_bytes(bytes));
    }
    Ok(())
}

/// Streams the file into a temporary file beside `target`, then renames it into place.
async fn download(client: &Client, id: &str, path: &str, target: &Path) -> Result<u64, CliError> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let tmp = dir.join(format!(".{name}.wrenn-{}", std::process::id()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| CliError::io(&tmp, e))?;
    let got = client.read_file(id, path, &mut file).await;
    let done = match got {
        Ok(n) => file
            .sync_all()
            .await
            .and_then(|_| std::fs::rename(&tmp, target))
            .map(|_| n)
            .map_err(|e| CliError::io(target, e)),
        Err(e) => Err(e.into()),
    };
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Counts the bytes a reader gives.
#[derive(Clone, Default)]
struct Counted(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Counted {
    fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn wrap<R: tokio::io::AsyncRead + Unpin>(&self, inner: R) -> CountingReader<R> {
        CountingReader {
            inner,
            count: self.clone(),
        }
    }
}

struct CountingReader<R> {
    inner: R,
    count: Counted,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let added = (buf.filled().len() - before) as u64;
        self.count
            .0
            .fetch_add(added, std::sync::atomic::Ordering::Relaxed);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places() {
        assert_eq!(
            place("cl-abc:/tmp/x"),
            Place::Capsule {
                id: "cl-abc".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(place("-"), Place::Stdio);
        assert_eq!(place("./a:/b"), Place::Local("./a:/b".into()));
        assert_eq!(place("a:b"), Place::Local("a:b".into()));
        assert_eq!(place(":/x"), Place::Local(":/x".into()));
        assert_eq!(place("/tmp/file"), Place::Local("/tmp/file".into()));
    }

    #[test]
    fn remote_names() {
        assert_eq!(remote_name("/tmp/x.bin"), Some("x.bin"));
        assert_eq!(remote_name("/tmp/dir/"), Some("dir"));
        assert_eq!(remote_name("/"), None);
        assert_eq!(remote_name("/a/.."), None);
    }
}
