//! A build's archive: a tar, tar.gz or zip read here, every entry vetted (relative paths, no
//! `..`, symlinks that stay inside, only files, folders and symlinks), then written again as
//! a plain tar that the build capsule unpacks. Nothing of the caller's archive reaches the
//! capsule but what passed.

use std::io::Read;

use crate::error::{ApiError, Result};

/// Largest archive a build takes.
pub const MAX_ARCHIVE: usize = 100 << 20;
/// Most bytes its files may hold once unpacked.
const MAX_UNPACKED: u64 = 512 << 20;
/// Most entries.
const MAX_ENTRIES: usize = 100_000;

/// One vetted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, normalized (`a/b`), never `..` nor absolute.
    pub path: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(format!("archive: {}", msg.into()))
}

/// Reads `bytes` (tar, tar.gz or zip, by their first bytes) into vetted entries.
pub fn read(bytes: &[u8]) -> Result<Vec<Entry>> {
    if bytes.len() > MAX_ARCHIVE {
        return Err(bad("larger than 100 MiB"));
    }
    let entries = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_UNPACKED * 2)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("not a readable gzip stream: {e}")))?;
        read_tar(&out)?
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        read_zip(bytes)?
    } else if bytes.len() >= 512 && (&bytes[257..262] == b"ustar" || bytes.iter().all(|&b| b == 0))
    {
        read_tar(bytes)?
    } else {
        return Err(bad("not a tar, tar.gz or zip archive"));
    };
    let mut total = 0u64;
    for e in &entries {
        if let Kind::File { data, .. } = &e.kind {
            total += data.len() as u64;
        }
        if let Kind::Symlink { target } = &e.kind {
            check_link(&e.path, target)?;
        }
    }
    if total > MAX_UNPACKED {
        return Err(bad("more than 512 MiB once unpacked"));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(bad("more than 100000 entries"));
    }
    Ok(entries)
}

/// `raw` as a relative path inside the archive, normalized.
pub fn clean_path(raw: &str) -> Result<String> {
    if raw.starts_with('/') {
        return Err(bad(format!("{raw:?} is an absolute path")));
    }
    if raw.contains('\0') || raw.contains('\\') && raw.contains("..") {
        return Err(bad(format!("{raw:?} is not a plain path")));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad(format!("{raw:?} reaches out of the archive (..)"))),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(String::new());
    }
    Ok(parts.join("/"))
}

/// A symlink at `path` pointing at `target` must stay inside the archive.
fn check_link(path: &str, target: &str) -> Result<()> {
    if target.starts_with('/') {
        return Err(bad(format!(
            "symlink {path:?} points out of the archive ({target:?})"
        )));
    }
    let mut depth: Vec<&str> = path.split('/').collect();
    depth.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return Err(bad(format!(
                        "symlink {path:?} points out of the archive ({target:?})"
                    )));
                }
            }
            c => depth.push(c),
        }
    }
    Ok(())
}

fn octal(field: &[u8]) -> Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(bad("a tar size in base-256 (over 8 GiB) is not supported"));
    }
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| bad("a tar header is damaged"))
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The `path`/`linkpath` records of a pax header.
fn pax(data: &[u8]) -> (Option<String>, Option<String>) {
    let (mut path, mut link) = (None, None);
    let s = String::from_utf8_lossy(data);
    for rec in s.split('\n') {
        let Some((_, kv)) = rec.split_once(' ') else {
            continue;
        };
        match kv.split_once('=') {
            Some(("path", v)) => path = Some(v.to_owned()),
            Some(("linkpath", v)) => link = Some(v.to_owned()),
            _ => {}
        }
    }
    (path, link)
}

fn read_tar(b: &[u8]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let (mut long_name, mut long_link): (Option<String>, Option<String>) = (None, None);
    while at + 512 <= b.len() {
        let h = &b[at..at + 512];
        if h.iter().all(|&x| x == 0) {
            break;
        }
        let size = usize::try_from(octal(&h[124..136])?).map_err(|_| bad("entry too large"))?;
        let start = at + 512;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= b.len())
            .ok_or_else(|| bad("a tar entry is cut short"))?;
        let data = &b[start..end];
        at = start + size.div_ceil(512) * 512;
        let kind = h[156];
        match kind {
            b'L' => {
                long_name = Some(text(data));
                continue;
            }
            b'K' => {
                long_link = Some(text(data));
                continue;
            }
            b'x' => {
                let (p, l) = pax(data);
                long_name = p.or(long_name);
                long_link = l.or(long_link);
                continue;
            }
            b'g' => continue,
            _ => {}
        }
        let mut name = text(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = text(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let raw = long_name.take().unwrap_or(name);
        let link = long_link.take().unwrap_or_else(|| text(&h[157..257]));
        let path = clean_path(&raw)?;
        let mode = (octal(&h[100..108])? & 0o7777) as u32;
        let kind = match kind {
            b'0' | 0 | b'7' => Kind::File {
                data: data.to_vec(),
                mode,
            },
            b'5' => Kind::Dir { mode },
            b'2' => Kind::Symlink { target: link },
            b'1' => {
                return Err(bad(format!(
                    "{raw:?} is a hard link (not supported; use a copy or a symlink)"
                )))
            }
            _ => {
                return Err(bad(format!(
                    "{raw:?} is a device, fifo or other special file"
                )))
            }
        };
        if path.is_empty() {
            if matches!(kind, Kind::Dir { .. }) {
                continue;
            }
            return Err(bad(format!("{raw:?} has no name")));
        }
        out.push(Entry { path, kind });
    }
    Ok(out)
}

fn u16_at(b: &[u8], at: usize) -> Result<usize> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
        .ok_or_else(|| bad("a zip header is cut short"))
}

fn u32_at(b: &[u8], at: usize) -> Result<usize> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(|| bad("a zip header is cut short"))
}

fn read_zip(b: &[u8]) -> Result<Vec<Entry>> {
    // The end of central directory record: within the last 64 KiB + 22 bytes.
    let from = b.len().saturating_sub(22 + 65_535);
    let eocd = (from..b.len().saturating_sub(21))
        .rev()
        .find(|&i| b[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| bad("a zip without its central directory"))?;
    let count = u16_at(b, eocd + 10)?;
    let mut at = u32_at(b, eocd + 16)?;
    if count == 0xffff || at == 0xffff_ffff {
        return Err(bad("zip64 archives are not supported"));
    }
    let mut out = Vec::new();
    for _ in 0..count {
        if !b.get(at..).is_some_and(|s| s.starts_with(b"PK\x01\x02")) {
            return Err(bad("a zip central directory entry is damaged"));
        }
        let method = u16_at(b, at + 10)?;
        let csize = u32_at(b, at + 20)?;
        let usize_ = u32_at(b, at + 24)?;
        let nlen = u16_at(b, at + 28)?;
        let xlen = u16_at(b, at + 30)?;
        let clen = u16_at(b, at + 32)?;
        let attrs = u32_at(b, at + 38)?;
        let local = u32_at(b, at + 42)?;
        let raw = b
            .get(at + 46..at + 46 + nlen)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .ok_or_else(|| bad("a zip name is cut short"))?;
        at += 46 + nlen + xlen + clen;
        let lnlen = u16_at(b, local + 26)?;
        let lxlen = u16_at(b, local + 28)?;
        let start = local + 30 + lnlen + lxlen;
        let packed = b
            .get(start..start + csize)
            .ok_or_else(|| bad(format!("{raw:?}: its data is cut short")))?;
        let data = match method {
            0 => packed.to_vec(),
            8 => {
                let mut d = Vec::with_capacity(usize_.min(MAX_UNPACKED as usize));
                flate2::read::DeflateDecoder::new(packed)
                    .take(MAX_UNPACKED + 1)
                    .read_to_end(&mut d)
                    .map_err(|e| bad(format!("{raw:?}: {e}")))?;
                d
            }
            m => {
                return Err(bad(format!(
                    "{raw:?}: zip compression method {m} is not supported (stored or deflate)"
                )))
            }
        };
        let unix = (attrs >> 16) as u32;
        let path = clean_path(&raw)?;
        let kind = if raw.ends_with('/') || unix & 0o170000 == 0o040000 {
            Kind::Dir {
                mode: if unix & 0o7777 == 0 {
                    0o755
                } else {
                    unix & 0o7777
                },
            }
        } else if unix & 0o170000 == 0o120000 {
            Kind::Symlink {
                target: String::from_utf8_lossy(&data).into_owned(),
            }
        } else {
            Kind::File {
                data,
                mode: if unix & 0o7777 == 0 {
                    0o644
                } else {
                    unix & 0o7777
                },
            }
        };
        if path.is_empty() {
            continue;
        }
        out.push(Entry { path, kind });
    }
    Ok(out)
}

fn header(name: &[u8], mode: u32, size: u64, kind: u8, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    let put = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    put(&mut h, 100, 8, u64::from(mode));
    put(&mut h, 108, 8, 0);
    put(&mut h, 116, 8, 0);
    put(&mut h, 124, 12, size);
    put(&mut h, 136, 12, 0);
    h[156] = kind;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// The entries as a plain tar (GNU long names past 100 bytes).
pub fn write_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut name = e.path.clone();
        if matches!(e.kind, Kind::Dir { .. }) {
            name.push('/');
        }
        if name.len() > 100 {
            let long = format!("{name}\0");
            out.extend_from_slice(&header(
                b"././@LongLink",
                0o644,
                long.len() as u64,
                b'L',
                b"",
            ));
            push_data(&mut out, long.as_bytes());
        }
        match &e.kind {
            Kind::File { data, mode } => {
                out.extend_from_slice(&header(
                    name.as_bytes(),
                    *mode,
                    data.len() as u64,
                    b'0',
                    b"",
                ));
                push_data(&mut out, data);
            }
            Kind::Dir { mode } => {
                out.extend_from_slice(&header(name.as_bytes(), *mode, 0, b'5', b""));
            }
            Kind::Symlink { target } => {
                if target.len() > 100 {
                    let long = format!("{target}\0");
                    out.extend_from_slice(&header(
                        b"././@LongLink",
                        0o644,
                        long.len() as u64,
                        b'K',
                        b"",
                    ));
                    push_data(&mut out, long.as_bytes());
                }
                out.extend_from_slice(&header(name.as_bytes(), 0o777, 0, b'2', target.as_bytes()));
            }
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
