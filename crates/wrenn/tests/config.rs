//! `wrenn up --config FILE`: the file's values are used, and a bad file stops the start before
//! anything is made. The first test starts a real `wrenn up` (network slots 3240-3249: run it
//! under the VM lock); the second starts nothing.

mod common;

use std::{net::TcpListener, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_wrenn");

/// `wrenn up --config FILE` with nothing else from the environment that the file could set.
fn up_with(file: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("up").arg("--config").arg(file);
    for var in [
        "WRENN_DIR",
        "WRENN_LISTEN",
        "WRENN_IMAGES",
        "WRENN_TEMPLATES",
        "WRENN_AGENT_SLOTS",
        "WRENN_SLOTS",
        "WRENN_CONFIG",
        "DATABASE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn up_takes_its_settings_from_the_file() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = dir.path().join("settings.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "# wrenn up, from a file\nlisten = \"127.0.0.1:{port}\"\nslots = \"3240-3249\"\n\
             data_dir = {data:?}\nimages = {images:?}\ntemplates = [\"minimal\"]\n\
             max-capsules = 2\n",
            images = common::images_dir(),
        ),
    )
    .unwrap();
    let mut cmd = up_with(&file);
    cmd.stdout(std::process::Stdio::piped());
    let up = common::Up::spawn(cmd, &data, 300);
    assert_eq!(
        up.addr,
        format!("127.0.0.1:{port}"),
        "the file's listen address"
    );
    assert!(
        data.join("wrenn.db").exists(),
        "the file's data folder is used"
    );
    drop(up);
}

#[test]
fn a_bad_file_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (text, why) in [
        ("slots = \n", "not valid TOML"),
        ("colour = \"blue\"\n", "unknown key `colour`"),
        ("slots = \"0-3\"\n", "key `slots`: invalid value"),
    ] {
        let file = dir.path().join("wrenn.toml");
        std::fs::write(&file, format!("data-dir = {data:?}\n{text}")).unwrap();
        let out = up_with(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.starts_with("error: configuration file ") && err.contains(why),
            "{text}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(out.stdout.is_empty());
        assert!(!data.exists(), "{text}: nothing is made");
    }
}

#[test]
fn the_memory_budget_is_documented_for_both_commands() {
    for verb in ["up", "agent"] {
        let out = Command::new(BIN).args([verb, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--capsule-memory-mib <MIB>")
                && help.contains("WRENN_CAPSULE_MEMORY_MIB"),
            "{verb} --help: {help}"
        );
    }
}

#[test]
fn counted_host_settings_are_documented_and_checked() {
    for (flag, var) in [
        ("--create-parallelism", "WRENN_CREATE_PARALLELISM"),
        ("--keep-paused", "WRENN_KEEP_PAUSED"),
    ] {
        for verb in ["up", "agent"] {
            let out = Command::new(BIN).args([verb, "--help"]).output().unwrap();
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{verb} --help");
            assert!(
                help.contains(&format!("{flag} <N>")) && help.contains(var),
                "{verb} --help names {flag} and its variable: {help}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        for (verb, value, why) in [
            ("up", "1025", "1025 is not in 0..=1024"),
            ("agent", "1025", "1025 is not in 0..=1024"),
            ("up", "-2", "invalid digit found in string"),
            ("agent", "three", "invalid digit found in string"),
        ] {
            let out = Command::new(BIN)
                .args([verb, "--data-dir"])
                .arg(&data)
                .arg(format!("{flag}={value}"))
                .env_remove(var)
                .env_remove("WRENN_CONFIG")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{verb} {flag} {value}: {err}");
            assert!(
                err.starts_with("error: invalid value")
                    && err.contains(&format!("{flag} <N>"))
                    && err.contains(why),
                "{verb} {flag} {value}: {err}"
            );
            assert!(!data.exists(), "{verb} {flag} {value}: nothing is made");
        }
    }
}
