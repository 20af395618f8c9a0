//! Property-based fuzzing of what envd parses off the wire, against the real envd binary on
//! loopback: multipart uploads (well-formed ones write exactly their parts; mangled ones are a
//! 4xx JSON error, leave no temporary file and never take envd down) and Connect envelope
//! streams. `PROPTEST_CASES` cases each (default 64 here: each case is real HTTP).

mod common;

use common::*;
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::Value;

/// Cases per property: `PROPTEST_CASES`, else 64.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// A multipart body: parts of (field name, file name, content), closed or not.
fn multipart(boundary: &str, parts: &[(String, Option<String>, Vec<u8>)], close: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut cd = format!("Content-Disposition: form-data; name=\"{name}\"");
        if let Some(f) = file {
            cd.push_str(&format!("; filename=\"{f}\""));
        }
        body.extend_from_slice(cd.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    if close {
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    }
    body
}

/// A boundary (RFC 2046 characters, no space) that none of `contents` contains.
fn boundary() -> impl Strategy<Value = String> {
    "[A-Za-z0-9'()+_,./:=?-]{1,40}"
}

/// Parts: some files, some plain fields (skipped by envd), file contents of any bytes.
fn parts() -> impl Strategy<Value = Vec<(bool, Vec<u8>)>> {
    proptest::collection::vec(
        (
            prop::bool::weighted(0.8),
            proptest::collection::vec(any::<u8>(), 0..3000),
        ),
        1..5,
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Files in `dir` that an unfinished upload left.
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".wrenn-upload-"))
        .collect()
}

/// A refusal: 4xx with envd's JSON error body.
fn check_refusal(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        (400..500).contains(&status),
        "status {status}: {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
    })?;
    prop_assert_eq!(v["code"].as_u64(), Some(u64::from(status)));
    prop_assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_write_exactly_their_parts() {
    let envd = Envd::start().await;
    let dir = scratch();
    let handle = tokio::runtime::Handle::current();
    let n = std::cell::Cell::new(0u32);
    let result = tokio::task::block_in_place(|| {
        runner().run(&(boundary(), parts()), |(b, parts)| {
            n.set(n.get() + 1);
            let case = dir.path().join(format!("c{}", n.get()));
            let parts: Vec<(String, Option<String>, Vec<u8>)> = parts
                .into_iter()
                .enumerate()
                .map(|(i, (file, content))| {
                    let dest = case.join(format!("f{i}"));
                    match file {
                        true => ("file".into(), Some(dest.to_string_lossy().into()), content),
                        false => (format!("field{i}"), None, content),
                    }
                })
                .collect();
            prop_assume!(parts
                .iter()
                .all(|(_, _, c)| !contains(c, format!("--{b}").as_bytes())));
            prop_assume!(parts.iter().any(|(_, f, _)| f.is_some()));
            let body = multipart(&b, &parts, true);
            let (status, text) = handle.block_on(async {
                let r = envd
                    .client
                    .post(envd.url("/files"))
                    .header(
                        "content-type",
                        format!("multipart/form-data; boundary=\"{b}\""),
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap())
            });
            prop_assert_eq!(status, 200, "{}", String::from_utf8_lossy(&text));
            let written: Value = serde_json::from_slice(&text).unwrap();
            let files: Vec<_> = parts.iter().filter(|(_, f, _)| f.is_some()).collect();
            prop_assert_eq!(written.as_array().map(Vec::len), Some(files.len()));
            for (_, f, content) in files {
                let got = std::fs::read(f.as_ref().unwrap()).unwrap();
                prop_assert_eq!(&got, content);
            }
            prop_assert!(leftovers(&case).is_empty());
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!("multipart uploads: {} cases", n.get());
}

/// How a well-formed body is mangled.
#[derive(Debug, Clone)]
enum Mangle {
    Truncate(prop::sample::Index),
    Flip(Vec<(prop::sample::Index, u8)>),
    Insert(prop::sample::Index, Vec<u8>),
    Unclosed,
    BadBoundaryHeader(String),
}

fn mangle() -> impl Strategy<Value = Mangle> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mangle::Truncate),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
            .prop_map(Mangle::Flip),
        (
            any::<prop::sample::Index>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(i, b)| Mangle::Insert(i, b)),
        Just(Mangle::Unclosed),
        prop_oneof![
            Just("multipart/form-data".to_string()),
            Just("multipart/form-data; boundary=".to_string()),
            "multipart/form-data; boundary=[ -~]{0,80}",
            "multipart/form-data;[ -~]{0,40}",
        ]
        .prop_map(Mangle::BadBoundaryHeader),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mangled_multipart_is_refused_cleanly() {
    let envd = Envd::start().await;
    let dir = scratch();
    let handle = tokio::runtime::Handle::current();
    let n = std::cell::Cell::new(0u32);
    let refused = std::cell::Cell::new(0u32);
    let result = tokio::task::block_in_place(|| {
        runner().run(&(boundary(), parts(), mangle()), |(b, parts, how)| {
            n.set(n.get() + 1);
            let case = dir.path().join(format!("m{}", n.get()));
            let parts: Vec<(String, Option<String>, Vec<u8>)> = parts
                .into_iter()
                .enumerate()
                .map(|(i, (_, content))| {
                    let dest = case.join(format!("f{i}"));
                    ("file".into(), Some(dest.to_string_lossy().into()), content)
                })
                .collect();
            let mut ct = format!("multipart/form-data; boundary=\"{b}\"");
            let mut body = multipart(&b, &parts, !matches!(how, Mangle::Unclosed));
            match &how {
                Mangle::Truncate(i) => body.truncate(i.index(body.len() + 1)),
                Mangle::Flip(flips) => {
                    for (i, x) in flips {
                        let i = i.index(body.len());
                        body[i] ^= x | 1;
                    }
                }
                Mangle::Insert(i, bytes) => {
                    let at = i.index(body.len() + 1);
                    body.splice(at..at, bytes.iter().copied());
                }
                Mangle::Unclosed => {}
                Mangle::BadBoundaryHeader(h) => ct = h.clone(),
            }
            let (status, text) = handle.block_on(async {
                let r = envd
                    .client
                    .post(envd.url("/files"))
                    .header("content-type", ct.as_str())
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap())
            });
            if status != 200 {
                refused.set(refused.get() + 1);
                check_refusal(status, &text)?;
            }
            if case.exists() {
                prop_assert!(leftovers(&case).is_empty(), "{:?}", leftovers(&case));
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // envd is still up.
    let health = envd.client.get(envd.url("/health")).send().await.unwrap();
    assert!(health.status().is_success());
    println!(
        "mangled multipart: {} cases, {} refused",
        n.get(),
        refused.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_streams_of_any_bytes_end_in_an_error() {
    let envd = Envd::start().await;
    let handle = tokio::runtime::Handle::current();
    let n = std::cell::Cell::new(0u32);
    // Frames: well-formed envelopes of any payload, or raw bytes.
    let stream = prop_oneof![
        proptest::collection::vec(
            (
                prop_oneof![Just(0u8), Just(2u8), any::<u8>()],
                proptest::collection::vec(any::<u8>(), 0..200)
            ),
            0..4
        )
        .prop_map(|frames| frames
            .iter()
            .flat_map(|(f, p)| envelope(*f, p))
            .collect::<Vec<u8>>()),
        proptest::collection::vec(any::<u8>(), 0..400),
    ];
    let codec = prop_oneof![Just("json"), Just("proto")];
    let result = tokio::task::block_in_place(|| {
        runner().run(&(stream, codec), |(body, codec)| {
            n.set(n.get() + 1);
            let (status, ct, text) = handle.block_on(async {
                let r = envd
                    .client
                    .post(envd.url("/process.Process/Connect"))
                    .header("content-type", format!("application/connect+{codec}"))
                    .header("connect-protocol-version", "1")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let ct = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                (r.status().as_u16(), ct, r.bytes().await.unwrap())
            });
            // A streaming call answers 200 and reports errors in its end-of-stream message.
            prop_assert_eq!(status, 200, "{}", String::from_utf8_lossy(&text));
            prop_assert_eq!(ct, format!("application/connect+{codec}"));
            let mut d = Vec::new();
            let mut rest = &text[..];
            while rest.len() >= 5 {
                let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                prop_assert!(rest.len() >= 5 + len, "a cut frame");
                d.push((rest[0], rest[5..5 + len].to_vec()));
                rest = &rest[5 + len..];
            }
            prop_assert!(rest.is_empty());
            let (flags, last) = d.last().cloned().unwrap_or_default();
            prop_assert_eq!(flags & 2, 2, "no end-of-stream message");
            let end: Value = serde_json::from_slice(&last).unwrap();
            let code = end["error"]["code"].as_str().unwrap_or("");
            prop_assert!(
                matches!(
                    code,
                    "invalid_argument" | "not_found" | "unimplemented" | "resource_exhausted"
                ),
                "{end}"
            );
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let health = envd.client.get(envd.url("/health")).send().await.unwrap();
    assert!(health.status().is_success());
    println!("connect streams: {} cases", n.get());
}
