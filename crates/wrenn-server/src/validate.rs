//! Bounds on what a client may put into a capsule, checked before anything is made: environment
//! variables (on create and on every exec), a command's program and arguments, and a capsule's
//! metadata. Input past them is `invalid_request` with a message naming the limit, never a
//! capsule that fails later (a 1 MB variable makes every `execve` in the guest fail with
//! `E2BIG`: Linux takes at most 128 KiB per string and about 2 MiB in all).

use std::collections::HashMap;

use crate::error::{ApiError, Result};

/// Longest variable name, in bytes.
pub const MAX_ENV_NAME: usize = 256;
/// Longest variable value, in bytes.
pub const MAX_ENV_VALUE: usize = 32 * 1024;
/// Most variables in one map (a create's, or an exec's).
pub const MAX_ENV_VARS: usize = 256;
/// Most bytes of one map, counted as the guest's `NAME=value\0` strings. A create's and an
/// exec's together stay far below the kernel's limit for a whole environment.
pub const MAX_ENV_TOTAL: usize = 128 * 1024;

/// Longest program or argument, in bytes (the kernel's per-string limit, less its NUL).
pub const MAX_ARG: usize = 128 * 1024 - 1;
/// Most bytes of a program and its arguments together.
pub const MAX_ARGS_TOTAL: usize = 512 * 1024;
/// Most arguments.
pub const MAX_ARGS: usize = 4096;

/// Most metadata keys on a capsule.
pub const MAX_METADATA_KEYS: usize = 64;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY: usize = 128;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE: usize = 1024;
/// Most bytes of all keys and values together.
pub const MAX_METADATA_TOTAL: usize = 16 * 1024;

/// At most `max` characters of `s`, for messages (never echo a megabyte back).
fn shown(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn env_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks one map of environment variables; `what` names it in messages (`envs`).
pub fn envs(what: &str, env: &HashMap<String, String>) -> Result<()> {
    if env.len() > MAX_ENV_VARS {
        return Err(ApiError::InvalidRequest(format!(
            "{what}: {} variables; at most {MAX_ENV_VARS}",
            env.len()
        )));
    }
    let mut total = 0usize;
    // In name order, so the message is the same for the same input.
    let mut names: Vec<&String> = env.keys().collect();
    names.sort();
    for name in names {
        let value = &env[name];
        if name.len() > MAX_ENV_NAME {
            return Err(ApiError::InvalidRequest(format!(
                "{what}: the name {} is {} bytes; at most {MAX_ENV_NAME}",
                shown(name, 32),
                name.len()
            )));
        }
        if !env_name_ok(name) {
            return Err(ApiError::InvalidRequest(format!(
                "{what}: invalid variable name {}: names are [A-Za-z_][A-Za-z0-9_]*",
                shown(name, 64)
            )));
        }
        if value.len() > MAX_ENV_VALUE {
            return Err(ApiError::InvalidRequest(format!(
                "{what}: the value of {name} is {} bytes; at most {MAX_ENV_VALUE}",
                value.len()
            )));
        }
        if value.contains('\0') {
            return Err(ApiError::InvalidRequest(format!(
                "{what}: the value of {name} contains a NUL byte"
            )));
        }
        total += name.len() + value.len() + 2;
    }
    if total > MAX_ENV_TOTAL {
        return Err(ApiError::InvalidRequest(format!(
            "{what}: {total} bytes in all; at most {MAX_ENV_TOTAL}"
        )));
    }
    Ok(())
}

/// Checks a command: its program, arguments and working directory.
pub fn command(cmd: &str, args: &[String], cwd: Option<&str>) -> Result<()> {
    if args.len() > MAX_ARGS {
        return Err(ApiError::InvalidRequest(format!(
            "{} arguments; at most {MAX_ARGS}",
            args.len()
        )));
    }
    let mut total = 0usize;
    for (what, s) in std::iter::once(("cmd", cmd)).chain(args.iter().map(|a| ("an argument", &**a)))
    {
        if s.len() > MAX_ARG {
            return Err(ApiError::InvalidRequest(format!(
                "{what} is {} bytes; at most {MAX_ARG}",
                s.len()
            )));
        }
        if s.contains('\0') {
            return Err(ApiError::InvalidRequest(format!(
                "{what} contains a NUL byte"
            )));
        }
        total += s.len() + 1;
    }
    if total > MAX_ARGS_TOTAL {
        return Err(ApiError::InvalidRequest(format!(
            "cmd and args are {total} bytes in all; at most {MAX_ARGS_TOTAL}"
        )));
    }
    if let Some(cwd) = cwd {
        if cwd.contains('\0') || cwd.len() > 4096 {
            return Err(ApiError::InvalidRequest(
                "cwd contains a NUL byte or is longer than 4096 bytes".into(),
            ));
        }
    }
    Ok(())
}

/// Checks a capsule's metadata.
pub fn metadata(m: &HashMap<String, String>) -> Result<()> {
    if m.len() > MAX_METADATA_KEYS {
        return Err(ApiError::InvalidRequest(format!(
            "metadata: {} keys; at most {MAX_METADATA_KEYS}",
            m.len()
        )));
    }
    let mut total = 0usize;
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for key in keys {
        let value = &m[key];
        if key.is_empty() || key.len() > MAX_METADATA_KEY {
            return Err(ApiError::InvalidRequest(format!(
                "metadata: the key {} is {} bytes; keys are 1..={MAX_METADATA_KEY} bytes",
                shown(key, 32),
                key.len()
            )));
        }
        if value.len() > MAX_METADATA_VALUE {
            return Err(ApiError::InvalidRequest(format!(
                "metadata: the value of {} is {} bytes; at most {MAX_METADATA_VALUE}",
                shown(key, 32),
                value.len()
            )));
        }
        if key.contains('\0') || value.contains('\0') {
            return Err(ApiError::InvalidRequest(format!(
                "metadata: {} contains a NUL byte",
                shown(key, 32)
            )));
        }
        total += key.len() + value.len();
    }
    if total > MAX_METADATA_TOTAL {
        return Err(ApiError::InvalidRequest(format!(
            "metadata: {total} bytes in all; at most {MAX_METADATA_TOTAL}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn refused(r: Result<()>) -> String {
        match r {
            Err(ApiError::InvalidRequest(m)) => m,
            other => panic!("expected invalid_request, got {other:?}"),
        }
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "PATH", "a_b_9", "_1", "LD_PRELOAD"] {
            assert!(env_name_ok(ok), "{ok}");
            envs("envs", &map(&[(ok, "v".into())])).unwrap();
        }
        for bad in ["", "1A", "A=B", "A B", "A-B", "É", "A\0", "A.B", "=", " A"] {
            assert!(!env_name_ok(bad), "{bad:?}");
            let m = refused(envs("envs", &map(&[(bad, "v".into())])));
            assert!(m.contains("[A-Za-z_][A-Za-z0-9_]*"), "{m}");
        }
    }

    #[test]
    fn env_sizes() {
        envs("envs", &map(&[("A", "x".repeat(MAX_ENV_VALUE))])).unwrap();
        let m = refused(envs("envs", &map(&[("A", "x".repeat(1 << 20))])));
        assert!(
            m.contains("1048576 bytes") && m.contains("at most 32768"),
            "{m}"
        );
        let m = refused(envs("envs", &map(&[("A", "a\0b".into())])));
        assert!(m.contains("NUL"), "{m}");
        let long = "N".repeat(MAX_ENV_NAME + 1);
        let m = refused(envs("envs", &map(&[(&long, "v".into())])));
        assert!(m.len() < 200, "the name is not echoed whole: {m}");
        // Many values, each within bounds, too much in all.
        let many: HashMap<String, String> = (0..8)
            .map(|i| (format!("V{i}"), "x".repeat(MAX_ENV_VALUE - 10)))
            .collect();
        let m = refused(envs("envs", &many));
        assert!(m.contains("in all"), "{m}");
        let count: HashMap<String, String> = (0..=MAX_ENV_VARS)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        refused(envs("envs", &count));
    }

    #[test]
    fn commands() {
        command("/bin/sh", &["-c".into(), "echo hi".into()], Some("/tmp")).unwrap();
        command("/bin/sh", &["-c".into(), "x".repeat(MAX_ARG)], None).unwrap();
        refused(command("/bin/sh", &["x".repeat(MAX_ARG + 1)], None));
        refused(command("/bin/sh", &["a\0b".into()], None));
        refused(command("/bin/\0sh", &[], None));
        refused(command("/bin/sh", &[], Some("/t\0mp")));
        let args: Vec<String> = (0..5).map(|_| "x".repeat(MAX_ARG)).collect();
        refused(command("/bin/sh", &args, None));
    }

    #[test]
    fn metadata_bounds() {
        metadata(&map(&[("owner", "me".into())])).unwrap();
        metadata(&HashMap::new()).unwrap();
        refused(metadata(&map(&[("", "v".into())])));
        refused(metadata(&map(&[(
            &"k".repeat(MAX_METADATA_KEY + 1),
            "v".into(),
        )])));
        refused(metadata(&map(&[("k", "v".repeat(MAX_METADATA_VALUE + 1))])));
        let many: HashMap<String, String> = (0..=MAX_METADATA_KEYS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        refused(metadata(&many));
        let big: HashMap<String, String> = (0..20)
            .map(|i| (format!("k{i}"), "v".repeat(MAX_METADATA_VALUE)))
            .collect();
        let m = refused(metadata(&big));
        assert!(m.contains("in all"), "{m}");
    }
}
