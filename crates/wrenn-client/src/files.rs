//! Files in a capsule. Reads and writes stream: a download goes to an `AsyncWrite` chunk by
//! chunk, an upload is a multipart body (`path` part first, then `file`) read from an
//! `AsyncRead` as it is sent. Neither holds the whole file in memory.

use std::path::Path;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use reqwest::{header, Method};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::{
    types::{EntryList, FileEntry, OneEntry},
    Client, ClientError, Result,
};

/// Read size of uploads.
const CHUNK: usize = 64 * 1024;

/// A `multipart/form-data` body of one `path` field and one `file` part. The framing is
/// built up front; the file's bytes go between `head` and `tail` as they are read.
#[derive(Debug)]
pub(crate) struct Multipart {
    boundary: String,
    head: Bytes,
    tail: Bytes,
}

impl Multipart {
    /// With a random boundary (128 bits, hex).
    pub(crate) fn new(path: &str) -> Result<Multipart> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw)
            .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
        let boundary: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Multipart::with_boundary(path, boundary))
    }

    pub(crate) fn with_boundary(path: &str, boundary: String) -> Multipart {
        let head = format!(
            "--{boundary}\r\n\
             Content-Disposition: form-data; name=\"path\"\r\n\r\n\
             {path}\r\n\
             --{boundary}\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"upload\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        Multipart {
            boundary,
            head: Bytes::from(head),
            tail: Bytes::from(tail),
        }
    }

    pub(crate) fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body's length for a file of `file_len` bytes.
    pub(crate) fn content_length(&self, file_len: u64) -> u64 {
        self.head.len() as u64 + file_len + self.tail.len() as u64
    }

    /// The body: framing around the file's bytes, read as the body is sent.
    pub(crate) fn body<R>(
        self,
        file: R,
    ) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static
    where
        R: AsyncRead + Send + 'static,
    {
        stream::once(async move { Ok(self.head) })
            .chain(tokio_util::io::ReaderStream::with_capacity(file, CHUNK))
            .chain(stream::once(async move { Ok(self.tail) }))
    }
}

impl Client {
    /// Streams the file at `path` in the capsule into `out`; returns how many bytes came.
    pub async fn read_file<W>(&self, id: &str, path: &str, out: &mut W) -> Result<u64>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let req = self
            .request(
                Method::POST,
                &["v1", "capsules", id, "files", "stream", "read"],
            )
            .json(&json!({ "path": path }));
        let mut resp = self.send(req).await?;
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            out.write_all(&chunk).await?;
            n += chunk.len() as u64;
        }
        out.flush().await?;
        Ok(n)
    }

    /// The whole file at `path` in memory (small files; [`Client::read_file`] streams).
    pub async fn read_file_bytes(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_file(id, path, &mut out).await?;
        Ok(out)
    }

    /// Writes `len` bytes read from `data` to `path` in the capsule (parents are created, an
    /// existing file is replaced). With `len` unknown (`None`) the body is sent chunked.
    pub async fn write_file<R>(&self, id: &str, path: &str, data: R, len: Option<u64>) -> Result<()>
    where
        R: AsyncRead + Send + 'static,
    {
        let form = Multipart::new(path)?;
        let content_type = form.content_type();
        let (segments, length): (&[&str], _) = match len {
            Some(n) => (
                &["v1", "capsules", id, "files", "write"],
                Some(form.content_length(n)),
            ),
            None => (&["v1", "capsules", id, "files", "stream", "write"], None),
        };
        let mut req = self
            .request(Method::POST, segments)
            .header(header::CONTENT_TYPE, content_type)
            .body(reqwest::Body::wrap_stream(form.body(data)));
        if let Some(n) = length {
            req = req.header(header::CONTENT_LENGTH, n);
        }
        self.send(req).await?;
        Ok(())
    }

    /// Uploads the local file `local` to `path` in the capsule.
    pub async fn upload(&self, id: &str, local: &Path, path: &str) -> Result<u64> {
        let file = tokio::fs::File::open(local).await?;
        let len = file.metadata().await?.len();
        self.write_file(id, path, file, Some(len)).await?;
        Ok(len)
    }

    /// Writes `data` to `path` in the capsule.
    pub async fn write_file_bytes(
        &self,
        id: &str,
        path: &str,
        data: impl Into<Bytes>,
    ) -> Result<()> {
        let data: Bytes = data.into();
        let len = data.len() as u64;
        self.write_file(id, path, std::io::Cursor::new(data), Some(len))
            .await
    }

    /// The entries under `path`, `depth` levels down (1: the children).
    pub async fn list_files(&self, id: &str, path: &str, depth: u32) -> Result<Vec<FileEntry>> {
        let list: EntryList = self
            .file_call(id, "list", json!({ "path": path, "depth": depth }))
            .await?;
        Ok(list.entries.unwrap_or_default())
    }

    /// Creates a directory and its parents.
    pub async fn make_dir(&self, id: &str, path: &str) -> Result<FileEntry> {
        let one: OneEntry = self.file_call(id, "mkdir", json!({ "path": path })).await?;
        Ok(one.entry)
    }

    /// Removes a file, or a directory with everything in it.
    pub async fn remove_file(&self, id: &str, path: &str) -> Result<()> {
        let _: serde_json::Value = self
            .file_call(id, "remove", json!({ "path": path }))
            .await?;
        Ok(())
    }

    async fn file_call<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        op: &str,
        body: serde_json::Value,
    ) -> Result<T> {
        self.call_json(Method::POST, &["v1", "capsules", id, "files", op], &body)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(form: Multipart, file: &'static [u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut s = std::pin::pin!(form.body(file));
        while let Some(chunk) = s.next().await {
            body.extend_from_slice(&chunk.unwrap());
        }
        body
    }

    #[tokio::test]
    async fn the_path_part_comes_before_the_file_part() {
        let form = Multipart::with_boundary("/tmp/a b.txt", "XyZ".into());
        assert_eq!(form.content_type(), "multipart/form-data; boundary=XyZ");
        let len = form.content_length(5);
        let body = collect(form, b"hello").await;
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(
            text,
            "--XyZ\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/tmp/a b.txt\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nhello\r\n--XyZ--\r\n"
        );
        assert_eq!(len, body.len() as u64);
        let path_at = text.find("name=\"path\"").unwrap();
        let file_at = text.find("name=\"file\"").unwrap();
        assert!(path_at < file_at);
    }

    #[tokio::test]
    async fn the_file_is_streamed_in_chunks() {
        static BIG: [u8; 3 * CHUNK + 7] = [7; 3 * CHUNK + 7];
        let form = Multipart::with_boundary("/x", "b".into());
        let head = form.head.len();
        let mut s = std::pin::pin!(form.body(&BIG[..]));
        let mut sizes = Vec::new();
        while let Some(chunk) = s.next().await {
            sizes.push(chunk.unwrap().len());
        }
        assert_eq!(sizes.first(), Some(&head));
        assert!(sizes.len() >= 5, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n <= CHUNK), "{sizes:?}");
    }

    #[test]
    fn random_boundaries_differ() {
        let a = Multipart::new("/x").unwrap();
        let b = Multipart::new("/x").unwrap();
        assert_eq!(a.boundary.len(), 32);
        assert_ne!(a.boundary, b.boundary);
    }
}
