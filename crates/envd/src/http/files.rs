//! `GET /files` (download) and `POST /files` (raw or multipart upload). Both stream: memory
//! stays flat whatever the file size. Uploads go to a temporary file renamed into place, so a
//! failed upload never damages the file it would have replaced.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use async_compression::tokio::{bufread::GzipDecoder, bufread::GzipEncoder};
use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
    Json,
};
use futures_util::TryStreamExt;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio_util::io::{ReaderStream, StreamReader};

use super::{http_error, query_params};
use crate::{
    error::{EnvdError, Result},
    filesystem::entry,
    paths::{self, Access},
    state::SharedEnvd,
    users::User,
};

const IO_CHUNK: usize = 256 * 1024;
const UPLOAD_MODE: u32 = 0o644;

/// One written file, as the SDK expects it back.
#[derive(Debug, Serialize)]
pub struct WrittenFile {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub path: String,
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            coding.eq_ignore_ascii_case("gzip") && q > 0.0
        })
}

fn caller(envd: &SharedEnvd, params: &std::collections::HashMap<String, String>) -> Result<User> {
    Ok(envd.user(params.get("username").map(String::as_str))?.0)
}

pub async fn download(State(envd): State<SharedEnvd>, uri: Uri, headers: HeaderMap) -> Response {
    match serve_download(&envd, &uri, &headers).await {
        Ok(resp) => resp,
        Err(e) => http_error(&e),
    }
}

async fn serve_download(envd: &SharedEnvd, uri: &Uri, headers: &HeaderMap) -> Result<Response> {
    let params = query_params(uri)?;
    let user = caller(envd, &params)?;
    let raw = params
        .get("path")
        .ok_or_else(|| EnvdError::InvalidArgument("the path query parameter is required".into()))?;
    let path = paths::resolve(raw, &user)?;
    let meta = tokio::fs::metadata(&path).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EnvdError::NotFound(format!("file '{}' does not exist", path.display()))
        } else {
            EnvdError::io(format!("stat {}", path.display()), e)
        }
    })?;
    if meta.is_dir() {
        return Err(EnvdError::InvalidArgument(format!(
            "'{}' is a directory, not a file",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(EnvdError::InvalidArgument(format!(
            "'{}' is not a regular file",
            path.display()
        )));
    }
    paths::require(&user, &path, Access::Read)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| EnvdError::io(format!("opening {}", path.display()), e))?;
    // The size, when it can be believed: files of /proc (size 0) and /sys (size 4096) are made
    // as they are read, so those are streamed to their end without a length.
    let length = known_length(&file, &meta);
    let file = tokio::io::AsyncReadExt::take(file, length.unwrap_or(u64::MAX));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mime = mime_guess::from_path(&path).first_or_octet_stream();
    let gzip = accepts_gzip(headers);
    let body = if gzip {
        Body::from_stream(ReaderStream::with_capacity(
            GzipEncoder::with_quality(
                BufReader::with_capacity(IO_CHUNK, file),
                async_compression::Level::Fastest,
            ),
            IO_CHUNK,
        ))
    } else {
        Body::from_stream(ReaderStream::with_capacity(file, IO_CHUNK))
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime.as_ref())
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    let disposition = format!(
        "inline; filename=\"{}\"",
        name.replace(['"', '\\', '\r', '\n'], "_")
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(modified) = meta.modified() {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    } else if let Some(len) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(resp)
}

/// The file's length for `Content-Length`, or `None` when its size says nothing about what a
/// read returns (an empty size; a pseudo filesystem: proc, sysfs, debugfs, tracefs,
/// securityfs, cgroup, bpf): then it is read to its end.
fn known_length(file: &tokio::fs::File, meta: &std::fs::Metadata) -> Option<u64> {
    use nix::sys::statfs as fs;
    if meta.len() == 0 {
        return None;
    }
    let kind = fs::fstatfs(file).ok()?.filesystem_type();
    let sizeless = [
        fs::PROC_SUPER_MAGIC,
        fs::SYSFS_MAGIC,
        fs::DEBUGFS_MAGIC,
        fs::TRACEFS_MAGIC,
        fs::SECURITYFS_MAGIC,
        fs::CGROUP_SUPER_MAGIC,
        fs::CGROUP2_SUPER_MAGIC,
        fs::BPF_FS_MAGIC,
    ];
    (!sizeless.contains(&kind)).then_some(meta.len())
}

pub async fn upload(
    State(envd): State<SharedEnvd>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match serve_upload(&envd, &uri, &headers, body).await {
        Ok(files) => (StatusCode::OK, Json(files)).into_response(),
        Err(e) => http_error(&e),
    }
}

/// `X-Metadata-<key>: <value>` headers, stored as `user.e2b.<key>` xattrs.
fn metadata_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("x-metadata-")?;
            Some(match value.to_str() {
                Ok(v) => Ok((key.to_string(), v.to_string())),
                Err(_) => Err(EnvdError::InvalidArgument(format!(
                    "metadata header {name} is not visible ASCII"
                ))),
            })
        })
        .collect()
}

fn body_reader(headers: &HeaderMap, body: Body) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(format!("reading request body: {e}")));
    let reader = StreamReader::new(stream);
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(Box::new(reader)),
        Some("gzip") | Some("x-gzip") => Ok(Box::new(GzipDecoder::new(BufReader::new(reader)))),
        Some(other) => Err(EnvdError::InvalidArgument(format!(
            "unsupported Content-Encoding {other:?}; use gzip or identity"
        ))),
    }
}

async fn serve_upload(
    envd: &SharedEnvd,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<WrittenFile>> {
    let params = query_params(uri)?;
    let user = caller(envd, &params)?;
    let metadata = metadata_headers(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let query_path = params.get("path").filter(|p| !p.is_empty());

    if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| EnvdError::InvalidArgument(format!("bad multipart content type: {e}")))?;
        let reader = body_reader(headers, body)?;
        let mut multipart =
            multer::Multipart::new(ReaderStream::with_capacity(reader, IO_CHUNK), boundary);
        let mut written = Vec::new();
        loop {
            let field = multipart.next_field().await.map_err(|e| {
                EnvdError::InvalidArgument(format!("malformed multipart body: {e}"))
            })?;
            let Some(field) = field else { break };
            let file_name = field.file_name().map(str::to_string);
            if field.name() != Some("file") && file_name.is_none() {
                continue; // not a file part
            }
            let dest = match (query_path, written.is_empty(), &file_name) {
                (Some(p), true, _) => destination(p, file_name.as_deref(), &user)?,
                (_, _, Some(f)) if !f.is_empty() => paths::resolve(f, &user)?,
                _ => {
                    return Err(EnvdError::InvalidArgument(
                        "each file part needs a filename (its destination path) when no path or several files are given".into(),
                    ))
                }
            };
            let source = StreamReader::new(
                field.map_err(|e| std::io::Error::other(format!("reading multipart part: {e}"))),
            );
            written.push(write_file(&dest, source, &user, &metadata).await?);
        }
        if written.is_empty() {
            return Err(EnvdError::InvalidArgument(
                "the multipart body holds no file part".into(),
            ));
        }
        Ok(written)
    } else {
        let raw = query_path.ok_or_else(|| {
            EnvdError::InvalidArgument(
                "the path query parameter is required for a raw (non-multipart) upload".into(),
            )
        })?;
        let dest = destination(raw, None, &user)?;
        let reader = body_reader(headers, body)?;
        Ok(vec![write_file(&dest, reader, &user, &metadata).await?])
    }
}

/// Where `raw` points for `user`; an existing directory receives the part's file name.
fn destination(raw: &str, part_name: Option<&str>, user: &User) -> Result<PathBuf> {
    let path = paths::resolve(raw, user)?;
    if path.is_dir() {
        let name = part_name
            .and_then(|n| Path::new(n).file_name())
            .ok_or_else(|| {
                EnvdError::InvalidArgument(format!("'{}' is a directory", path.display()))
            })?;
        return Ok(path.join(name));
    }
    Ok(path)
}

/// Removes the temporary file unless the upload completed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A fresh temporary name beside `dest`; two uploads to one path never share it, so a failed
/// random source is an error rather than a fixed name.
fn temp_name(dest: &Path) -> Result<PathBuf, EnvdError> {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r)
        .map_err(|e| EnvdError::Internal(format!("the OS random source failed: {e}")))?;
    let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(dest.with_file_name(format!(".{name}.wrenn-upload-{suffix}")))
}

async fn write_file(
    dest: &Path,
    mut source: impl AsyncRead + Unpin,
    user: &User,
    metadata: &[(String, String)],
) -> Result<WrittenFile> {
    // Writing through a symlink writes its target, as opening the path would.
    let dest = match tokio::fs::canonicalize(dest).await {
        Ok(real) => real,
        Err(_) => dest.to_path_buf(),
    };
    if dest == Path::new("/") {
        return Err(EnvdError::InvalidArgument("cannot write to /".into()));
    }
    let parent = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
    paths::create_dirs(&parent, user)?;
    let existing = tokio::fs::metadata(&dest).await.ok();
    match &existing {
        Some(m) if m.is_dir() => {
            return Err(EnvdError::InvalidArgument(format!(
                "'{}' is a directory",
                dest.display()
            )))
        }
        Some(_) => paths::require(user, &dest, Access::Write)?,
        None => paths::require(user, &parent, Access::Write)?,
    }
    let mut temp = TempFile {
        path: temp_name(&dest)?,
        keep: false,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp.path)
        .await
        .map_err(|e| EnvdError::io(format!("creating {}", dest.display()), e))?;
    let mut buf = vec![0u8; IO_CHUNK];
    loop {
        use tokio::io::AsyncReadExt;
        let n = source.read(&mut buf).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::Other || e.kind() == std::io::ErrorKind::InvalidData
            {
                EnvdError::InvalidArgument(format!("upload of {} failed: {e}", dest.display()))
            } else {
                EnvdError::io(format!("receiving {}", dest.display()), e)
            }
        })?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .await
            .map_err(|e| EnvdError::io(format!("writing {}", dest.display()), e))?;
    }
    file.flush()
        .await
        .map_err(|e| EnvdError::io(format!("writing {}", dest.display()), e))?;
    drop(file);
    let mode = existing
        .as_ref()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(UPLOAD_MODE);
    std::fs::set_permissions(&temp.path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| EnvdError::io(format!("chmod {}", dest.display()), e))?;
    paths::chown(&temp.path, user)?;
    if !metadata.is_empty() {
        entry::set_metadata(&temp.path, metadata)?;
    }
    tokio::fs::rename(&temp.path, &dest)
        .await
        .map_err(|e| EnvdError::io(format!("replacing {}", dest.display()), e))?;
    temp.keep = true;
    Ok(WrittenFile {
        name: dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        kind: "file",
        path: dest.to_string_lossy().into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "gzip, deflate".parse().unwrap());
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            "gzip;q=0, identity".parse().unwrap(),
        );
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "br".parse().unwrap());
        assert!(!accepts_gzip(&h));
    }
}
