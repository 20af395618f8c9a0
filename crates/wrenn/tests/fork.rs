//! `wrenn capsule fork` against a real `wrenn up` (control plane, agent, microVMs): children
//! that hold the source's files, a count out of range and a fork the host has no room for
//! (clear errors, nothing made), and children that outlive their source.
//! Needs root, nftables, QEMU and the `minimal` image; network slots 4380–4385.

mod common;

use std::process::{Command, Output, Stdio};

use common::Up;

const BIN: &str = env!("CARGO_BIN_EXE_wrenn");

fn cli(up: &Up, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("WRENN_BASE_URL", format!("http://{}", up.addr))
        .env("WRENN_API_KEY", &up.key)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(up: &Up, args: &[&str]) -> String {
    let out = cli(up, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn refused(up: &Up, args: &[&str]) -> String {
    let out = cli(up, args);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn live(up: &Up) -> usize {
    ok(up, &["capsule", "list"])
        .lines()
        .filter(|l| l.starts_with("cl-"))
        .count()
}

#[test]
fn the_cli_forks_capsules_all_or_nothing() {
    let mut up = Up::in_temp_dir("4380-4385", "minimal", |_| {});
    let _reap = common::Reap {
        dir: up.data_dir.clone(),
        slots: 4380..=4385,
    };
    let src = ok(&up, &["capsule", "create", "--template", "minimal"]);
    ok(
        &up,
        &[
            "capsule",
            "exec",
            &src,
            "--",
            "sh",
            "-c",
            "echo hi > /home/user/f",
        ],
    );
    let children: Vec<String> = ok(&up, &["capsule", "fork", &src, "-n", "2"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(children.len(), 2, "{children:?}");
    for c in &children {
        assert!(c.starts_with("cl-") && c != &src, "{c}");
        assert_eq!(
            ok(&up, &["capsule", "exec", c, "--", "cat", "/home/user/f"]),
            "hi"
        );
    }
    assert_eq!(live(&up), 3);
    // Out of range: refused by the API before anything.
    let e = refused(&up, &["capsule", "fork", &src, "-n", "33"]);
    assert!(e.contains("invalid_request") && e.contains("1..=32"), "{e}");
    // Three slots are left: four children do not fit, and none is made.
    let e = refused(&up, &["capsule", "fork", &src, "-n", "4"]);
    assert!(e.contains("host_unavailable"), "{e}");
    assert_eq!(live(&up), 3);
    // The source goes; its children stay and keep its files.
    ok(&up, &["capsule", "destroy", &src]);
    for c in &children {
        assert_eq!(
            ok(&up, &["capsule", "exec", c, "--", "cat", "/home/user/f"]),
            "hi"
        );
    }
    // A child forks too.
    let grand = ok(&up, &["capsule", "fork", &children[0], "-n", "1"]);
    assert_eq!(
        ok(
            &up,
            &["capsule", "exec", &grand, "--", "cat", "/home/user/f"]
        ),
        "hi"
    );
    let mut all = children.clone();
    all.push(grand);
    let mut args = vec!["capsule", "destroy"];
    args.extend(all.iter().map(String::as_str));
    ok(&up, &args);
    assert_eq!(live(&up), 0);
    let forks = std::fs::read_dir(up.data_dir.join("forks"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(forks, 0, "fork images left behind");
    up.stop();
}
