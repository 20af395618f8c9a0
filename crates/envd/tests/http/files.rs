//! `/files`: uploads (raw, multipart, gzip) and downloads, their errors, a full disk, files
//! without a size, memory held flat over a 1 GiB transfer, metadata.

use std::{io::Write, os::unix::fs::MetadataExt};

use crate::common::*;
use serde_json::{json, Value};

use super::files_url;

#[tokio::test]
async fn upload_and_download_raw_multipart_gzip() {
    let envd = Envd::start().await;
    let dir = scratch();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let dest = dir.path().join("nested/dir/raw.bin");
    let resp = envd
        .client
        .post(files_url(&envd, dest.to_str().unwrap(), Some("user")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!([{"name": "raw.bin", "type": "file", "path": dest.to_str().unwrap()}])
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(
        meta.uid(),
        std::fs::metadata("/home/user").unwrap().uid(),
        "owned by user"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("nested")).unwrap().uid(),
        meta.uid()
    );
    // No temporary files left behind.
    assert_eq!(
        std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
        1
    );

    // Download: identity has a length; gzip when asked.
    let resp = envd
        .client
        .get(files_url(&envd, dest.to_str().unwrap(), None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("raw.bin"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);
    let resp = envd
        .client
        .get(files_url(&envd, dest.to_str().unwrap(), None))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let compressed = resp.bytes().await.unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut out)
        .unwrap();
    assert_eq!(out, data);

    // Gzip-encoded upload.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"zipped content").unwrap();
    let gz = dir.path().join("gz.txt");
    let resp = envd
        .client
        .post(files_url(&envd, gz.to_str().unwrap(), None))
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .body(enc.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(&gz).unwrap(), b"zipped content");

    // Multipart with several files, each part's filename its destination.
    let a = dir.path().join("multi/a.txt");
    let b = dir.path().join("multi/sub/b.txt");
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"AAA".to_vec())
                .file_name(a.to_str().unwrap().to_string()),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"BBB".to_vec())
                .file_name(b.to_str().unwrap().to_string()),
        );
    let resp = envd
        .client
        .post(envd.url("/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(std::fs::read(&a).unwrap(), b"AAA");
    assert_eq!(std::fs::read(&b).unwrap(), b"BBB");

    // Single multipart file with ?path= overwrites an existing file.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"new".to_vec()).file_name("ignored"),
    );
    let resp = envd
        .client
        .post(files_url(&envd, a.to_str().unwrap(), None))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(&a).unwrap(), b"new");
}

#[tokio::test]
async fn file_errors() {
    let envd = Envd::start().await;
    let dir = scratch();
    let resp = envd
        .client
        .get(files_url(&envd, "/no/such/file", None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 404);
    assert!(body["message"].as_str().unwrap().contains("/no/such/file"));
    let resp = envd
        .client
        .get(files_url(&envd, dir.path().to_str().unwrap(), None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = envd
        .client
        .get(envd.url("/files?path=%ff%fe"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = envd
        .client
        .get(files_url(&envd, "/etc/hostname", Some("ghost")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"root only").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let resp = envd
        .client
        .get(files_url(&envd, secret.to_str().unwrap(), Some("user")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = envd
        .client
        .post(files_url(&envd, secret.to_str().unwrap(), Some("user")))
        .body("overwrite")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
    std::fs::remove_file(&secret).unwrap();
    let resp = envd
        .client
        .post(envd.url("/files"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "raw upload without path");
    let resp = envd
        .client
        .post(envd.url("/files"))
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body("--xyz\r\ngarbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A broken gzip body fails and leaves the old file intact.
    let keep = dir.path().join("keep.txt");
    std::fs::write(&keep, b"precious").unwrap();
    let resp = envd
        .client
        .post(files_url(&envd, keep.to_str().unwrap(), None))
        .header("content-encoding", "gzip")
        .body("definitely not gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(std::fs::read(&keep).unwrap(), b"precious");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
}

/// A 1 MiB tmpfs: uploading more gives 507 and leaves nothing behind.
#[tokio::test]
async fn full_disk_gives_507() {
    let envd = Envd::start().await;
    let dir = scratch();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .expect("mount")
        .success();
    assert!(ok, "this test needs root to mount a tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let resp = envd
        .client
        .post(files_url(
            &envd,
            mnt.join("big.bin").to_str().unwrap(),
            None,
        ))
        .header("content-type", "application/octet-stream")
        .body(vec![7u8; 4 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 507);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 507);
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        0,
        "partial upload removed"
    );
}

/// Files whose size says nothing of their content: /proc reports 0 bytes, /sys 4096. A
/// download reads them to their end, with or without gzip, and never promises a length.
#[tokio::test]
async fn sizeless_files_are_read_to_their_end() {
    let envd = Envd::start().await;
    for path in [
        "/proc/version",
        "/proc/cpuinfo",
        "/proc/self/cmdline",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/devices/system/cpu/online",
    ] {
        let Ok(meta) = std::fs::metadata(path) else {
            continue; // not on this machine's kernel
        };
        let resp = envd
            .client
            .get(files_url(&envd, path, None))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers().get("content-length").is_none(),
            "{path}: no length from a size of {}",
            meta.len()
        );
        let got = resp.bytes().await.unwrap();
        assert!(!got.is_empty(), "{path}: read as empty");
        if path == "/proc/self/cmdline" {
            // envd's own command line, as the kernel shows it to envd.
            let envd_cmdline = std::fs::read(format!("/proc/{}/cmdline", envd.pid())).unwrap();
            assert_eq!(got.as_ref(), &envd_cmdline[..], "{path}");
            continue;
        }
        let want = std::fs::read(path).unwrap();
        if path != "/proc/cpuinfo" {
            assert_eq!(got.as_ref(), &want[..], "{path}");
        } else {
            // The MHz lines change between reads; the rest is the same.
            let lines = |b: &[u8]| {
                String::from_utf8_lossy(b)
                    .lines()
                    .filter(|l| !l.starts_with("cpu MHz"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            assert_eq!(lines(&got), lines(&want), "{path}");
        }
        let zipped = envd
            .client
            .get(files_url(&envd, path, None))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut out)
            .unwrap();
        assert!(!out.is_empty(), "{path} gzipped");
    }
    // An empty regular file is still 200 with nothing in it.
    let dir = scratch();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let resp = envd
        .client
        .get(files_url(&envd, empty.to_str().unwrap(), None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Streams 1 GiB up and down; envd's resident memory must not grow with the file.
#[tokio::test]
async fn one_gib_transfer_keeps_memory_flat() {
    let envd = Envd::start().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let dest = dir.path().join("big.bin");
    let before = rss_kib(envd.pid());
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let stream = futures_util::stream::iter(
        (0..CHUNKS)
            .map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 256) as u8; CHUNK]))),
    );
    let resp = envd
        .client
        .post(files_url(&envd, dest.to_str().unwrap(), None))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        std::fs::metadata(&dest).unwrap().len(),
        (CHUNK * CHUNKS) as u64
    );
    let after_up = rss_kib(envd.pid());
    let mut resp = envd
        .client
        .get(files_url(&envd, dest.to_str().unwrap(), None))
        .send()
        .await
        .unwrap();
    let mut total = 0usize;
    while let Some(c) = resp.chunk().await.unwrap() {
        total += c.len();
    }
    assert_eq!(total, CHUNK * CHUNKS);
    let after_down = rss_kib(envd.pid());
    let growth = after_up.max(after_down).saturating_sub(before);
    assert!(
        growth < 64 * 1024,
        "envd RSS grew by {growth} KiB for a 1 GiB transfer"
    );
}

/// `X-Metadata-*` headers become `user.e2b.*` xattrs and come back in `EntryInfo.metadata`.
#[tokio::test]
async fn upload_metadata_round_trips() {
    let envd = Envd::start().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let dest = dir.path().join("meta.txt");
    let resp = envd
        .client
        .post(files_url(&envd, dest.to_str().unwrap(), None))
        .header("content-type", "application/octet-stream")
        .header("x-metadata-owner-team", "blue")
        .body("data")
        .send()
        .await
        .unwrap();
    if resp.status() == 500 || resp.status() == 403 {
        let body: Value = resp.json().await.unwrap();
        panic!("this filesystem refuses user xattrs: {body}");
    }
    assert_eq!(resp.status(), 200);
    let (_, body) = envd
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": dest.to_str().unwrap()}),
        )
        .await;
    assert_eq!(body["entry"]["metadata"], json!({"owner-team": "blue"}));
}
