//! Building templates for real: debootstrap, kernel, initramfs, ext4, snapshot. Needs root,
//! QEMU, debootstrap and the static envd (`make images` builds it).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use wrenn_agent::images::{self, BuildRequest};
use wrenn_vmm::{snapshot, Net, QemuVm, Vmm};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/target"))
}

fn envd_static() -> PathBuf {
    let p = target_dir().join("envd-static");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-envd-static.sh (make images does)",
        p.display()
    );
    p.canonicalize().unwrap()
}

fn request(template: &str, images_dir: PathBuf) -> BuildRequest {
    BuildRequest {
        template: template.into(),
        images_dir,
        envd: envd_static(),
        vcpus: 1,
        memory_mib: 256,
        accel: wrenn_vmm::accel::detect().0,
        qemu: wrenn_vmm::qemu::default_qemu(),
        slot: None,
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs `script` in a fresh capsule of the template; returns stdout.
async fn run_in(snap: &snapshot::Snapshot, script: &str) -> String {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let envd = free_addr();
    let config = snapshot::prepare_capsule(
        snap,
        dir.path(),
        Net::UserForward { host: envd },
        wrenn_vmm::qemu::default_qemu(),
    )
    .unwrap();
    let mut vm = QemuVm::new(config).unwrap();
    vm.restore(&snap.state()).await.unwrap();
    vm.resume().await.unwrap();
    vm.wait_ready(envd, Duration::from_secs(120)).await.unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "content-type: application/connect+json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://{envd}/process.Process/Start"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let body = format!(
        "{{\"process\":{{\"cmd\":\"/bin/bash\",\"args\":[\"-lc\",{}]}},\"stdin\":false}}",
        serde_json_string(script)
    );
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body.as_bytes());
    let mut child = out;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&framed).await.unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    vm.stop().await.unwrap();
    decode_stdout(&output.stdout)
}

fn serde_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Concatenated stdout of a Connect JSON stream.
fn decode_stdout(mut bytes: &[u8]) -> String {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        let text = String::from_utf8_lossy(&bytes[5..5 + len]).into_owned();
        if let Some(i) = text.find("\"stdout\":\"") {
            let rest = &text[i + 10..];
            let b64 = &rest[..rest.find('"').unwrap()];
            out.extend(b64_decode(b64));
        }
        bytes = &bytes[5 + len..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn b64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| u32::from(val(*c))).collect();
        let n = v.iter().fold(0u32, |acc, x| (acc << 6) | x) << (6 * (4 - v.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..v.len() - 1]);
    }
    out
}

/// A from-scratch build of `minimal` into an empty folder, then a capsule from it.
#[tokio::test]
async fn builds_minimal_from_nothing_and_skips_when_unchanged() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let mut lines = Vec::new();
    let built = images::build(&request("minimal", dir.path().to_path_buf()), |p| {
        lines.push(p.line)
    })
    .await
    .expect("build minimal");
    assert!(built.rebuilt);
    for step in 1..=5 {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("[{step}/5]"))),
            "progress step {step} in {lines:?}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("bytes")), "{lines:?}");
    assert!(built.snapshot.spec().is_some(), "ready snapshot");

    let again = images::build(&request("minimal", dir.path().to_path_buf()), |_| {})
        .await
        .unwrap();
    assert!(!again.rebuilt, "unchanged inputs are not rebuilt");

    let out = run_in(
        &built.snapshot,
        "id -un; sudo -n id -un; getent passwd user | cut -d: -f6; for t in socat curl git; do command -v $t >/dev/null && echo has-$t; done; test -f /etc/ssl/certs/ca-certificates.crt && echo has-ca",
    )
    .await;
    assert_eq!(
        out,
        "user\nroot\n/home/user\nhas-socat\nhas-curl\nhas-git\nhas-ca\n"
    );
}

#[tokio::test]
async fn python_template_has_numpy_and_requests() {
    let images = std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"));
    let built = images::build(&request("python", images), |_| {})
        .await
        .expect("python template");
    let out = run_in(
        &built.snapshot,
        "python3 -c 'import numpy, requests; print(numpy.arange(4).sum(), requests.__name__)'; python3 -m venv /tmp/v && /tmp/v/bin/pip --version >/dev/null && echo venv-ok",
    )
    .await;
    assert_eq!(out, "6 requests\nvenv-ok\n");
}

#[tokio::test]
async fn bad_template_names_are_refused() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    for name in ["../etc", "", "nope"] {
        let err = images::build(&request(name, dir.path().to_path_buf()), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                wrenn_agent::AgentError::BadTemplateName(_)
                    | wrenn_agent::AgentError::UnknownTemplate(_)
            ),
            "{err}"
        );
    }
}
