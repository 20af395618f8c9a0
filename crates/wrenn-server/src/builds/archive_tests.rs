use std::io::Write;

use super::*;

fn file(path: &str, data: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        kind: Kind::File {
            data: data.to_vec(),
            mode: 0o644,
        },
    }
}

fn link(path: &str, target: &str) -> Entry {
    Entry {
        path: path.into(),
        kind: Kind::Symlink {
            target: target.into(),
        },
    }
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A zip of stored entries (name, unix mode with type bits, data).
fn zip(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, mode, data) in entries {
        let offset = out.len() as u32;
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&0u32.to_le_bytes()); // crc (unchecked here)
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&0u32.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&(mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_at = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_at.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

fn refused(bytes: &[u8], needle: &str) {
    match read(bytes) {
        Err(ApiError::InvalidRequest(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected a refusal ({needle}), got {other:?}"),
    }
}

#[test]
fn tar_and_gzip_round_trip_with_long_names() {
    let long = format!("{}/file.txt", "d".repeat(150));
    let entries = vec![
        Entry {
            path: "dir".into(),
            kind: Kind::Dir { mode: 0o755 },
        },
        file("dir/a.txt", b"hello"),
        file(&long, &[7u8; 1000]),
        link("dir/b", "a.txt"),
        link("dir/c", &format!("../{}", "x".repeat(120))),
    ];
    let tar = write_tar(&entries);
    assert_eq!(read(&tar).unwrap(), entries);
    assert_eq!(read(&gz(&tar)).unwrap(), entries);
}

#[test]
fn real_gnu_tar_archives_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let deep = src.join("x".repeat(120));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f"), b"deep").unwrap();
    std::fs::write(src.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("run.sh", src.join("start")).unwrap();
    let out = dir.path().join("a.tgz");
    let ok = std::process::Command::new("tar")
        .args([
            "-czf",
            out.to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let entries = read(&std::fs::read(&out).unwrap()).unwrap();
    let deep_file = format!("{}/f", "x".repeat(120));
    assert!(
        entries.iter().any(|e| e.path == deep_file
            && e.kind
                == Kind::File {
                    data: b"deep".to_vec(),
                    mode: 0o644
                }),
        "{entries:?}"
    );
    assert!(entries.iter().any(|e| e.path == "start"
        && e.kind
            == Kind::Symlink {
                target: "run.sh".into()
            }));
}

#[test]
fn escaping_paths_and_links_are_refused() {
    refused(&write_tar(&[file("../evil", b"x")]), "reaches out");
    refused(&write_tar(&[file("a/../../evil", b"x")]), "reaches out");
    refused(&write_tar(&[file("/etc/passwd", b"x")]), "absolute");
    refused(&write_tar(&[link("a", "/etc/shadow")]), "points out");
    refused(&write_tar(&[link("a/b", "../../etc")]), "points out");
    refused(&gz(&write_tar(&[file("../x", b"")])), "reaches out");
    refused(&zip(&[("../x", 0o100644, b"x")]), "reaches out");
    refused(&zip(&[("l", 0o120777, b"/etc")]), "points out");
    // Inside is fine.
    assert!(read(&write_tar(&[link("a/b", "../c")])).is_ok());
}

#[test]
fn zip_entries_are_read() {
    let z = zip(&[
        ("site/", 0o040755, b""),
        ("site/index.html", 0o100600, b"<h1>hi</h1>"),
        ("site/l", 0o120777, b"index.html"),
    ]);
    let e = read(&z).unwrap();
    assert_eq!(
        e,
        vec![
            Entry {
                path: "site".into(),
                kind: Kind::Dir { mode: 0o755 }
            },
            Entry {
                path: "site/index.html".into(),
                kind: Kind::File {
                    data: b"<h1>hi</h1>".to_vec(),
                    mode: 0o600
                }
            },
            link("site/l", "index.html"),
        ]
    );
}

#[test]
fn other_bytes_and_special_files_are_refused() {
    refused(b"hello world", "not a tar");
    refused(&[0x1f, 0x8b, 1, 2, 3], "gzip");
    let mut t = write_tar(&[file("a", b"12345")]);
    t[156] = b'3';
    // Fix the checksum is not needed: the reader does not check it, the type is refused.
    refused(&t, "special file");
    let mut t = write_tar(&[file("a", b"12345")]);
    t[156] = b'1';
    refused(&t, "hard link");
    let t = write_tar(&[file("a", &[1u8; 2000])]);
    refused(&t[..1024], "cut short");
}

#[test]
fn clean_paths() {
    assert_eq!(clean_path("./a//b/./c").unwrap(), "a/b/c");
    assert_eq!(clean_path(".").unwrap(), "");
    assert!(clean_path("a/../b").is_err());
}
