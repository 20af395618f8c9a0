//! A template made from an OCI image, booted for real: two layers written by GNU tar (the
//! second whites out a file of the first), pushed to a docker-registry the test runs on
//! 127.0.0.1:15011, pulled and made into a template by `oci_template::template_from_image`
//! (the image has no tool of its own but a busybox `/bin/sh`, and `/sbin` is an absolute
//! link), snapshotted, and a process run in a capsule of it through envd. Needs root, QEMU,
//! `docker-registry`, the static envd and the `minimal` template's kernel (`make images`);
//! QEMU user networking (no slots). Run under the VM lock.

use std::{net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use wrenn_agent::oci_template::{self, RootfsTemplate};
use wrenn_oci::testkit::{
    config_for,
    image::{Comp, Pusher},
    Registry,
};
use wrenn_vmm::{snapshot, Net, QemuVm, Vmm};

fn envd_static() -> PathBuf {
    if let Some(p) = std::env::var_os("WRENN_ENVD") {
        return PathBuf::from(p).canonicalize().expect("WRENN_ENVD");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/target"));
    let p = target.join("envd-static");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-envd-static.sh (make images does)",
        p.display()
    );
    p.canonicalize().unwrap()
}

fn images() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn sh(script: &str) {
    let ok = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .status()
        .unwrap()
        .success();
    assert!(ok, "{script}");
}

/// A layer as GNU tar writes it from `dir`.
fn tar_of(dir: &std::path::Path) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Runs `script` with the image's own `/bin/sh` in a capsule of `snap`; returns stdout.
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
    let body =
        serde_json::json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false})
            .to_string();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body.as_bytes());
    let resp = reqwest::Client::new()
        .post(format!("http://{envd}/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .body(framed)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    vm.stop().await.unwrap();
    let mut out = Vec::new();
    let mut bytes = &resp[..];
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        let msg: serde_json::Value = serde_json::from_slice(&bytes[5..5 + len]).unwrap_or_default();
        if let Some(b64) = msg.pointer("/event/data/stdout").and_then(|v| v.as_str()) {
            use base64::Engine;
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            );
        }
        bytes = &bytes[5 + len..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oci_rootfs_becomes_a_template_whose_capsules_run_its_programs() {
    let kernel_from = images().join("minimal");
    assert!(
        kernel_from.join("vmlinuz").exists(),
        "the minimal template is missing: make images"
    );
    let busybox = PathBuf::from(oci_template::HOST_STATIC_BUSYBOX);
    assert!(
        busybox.exists(),
        "{} is missing: scripts/install-deps.sh installs busybox-static",
        busybox.display()
    );
    let work = tempfile::Builder::new()
        .prefix("oci-tpl-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let w = work.path();
    sh(&format!(
        "cd {w}; mkdir -p l1/bin l1/usr/bin l1/usr/sbin l1/etc l2/etc
         cp {bb} l1/bin/busybox; ln -s busybox l1/bin/sh; ln -s /usr/sbin l1/sbin
         printf '#!/bin/sh\\necho hello-from-oci\\n' > l1/usr/bin/hello; chmod 755 l1/usr/bin/hello
         echo old > l1/etc/gone; echo marker-1 > l1/etc/image-marker
         touch l2/etc/.wh.gone; echo marker-2 > l2/etc/image-marker",
        w = w.display(),
        bb = busybox.display()
    ));
    // Pushed to a registry of the test's own (127.0.0.1:15011; one gzip, one zstd layer) and
    // pulled back through the seam a `FROM <image>` build uses.
    let reg = Registry::start("agent-template", 15011, None).unwrap();
    let push = Pusher::new(&reg, "wrenn/busybox");
    push.image(
        Some("1"),
        "amd64",
        &[
            (tar_of(&w.join("l1")), Comp::Gzip),
            (tar_of(&w.join("l2")), Comp::Zstd),
        ],
        &["PATH=/usr/bin:/bin"],
        true,
    )
    .await
    .unwrap();
    let cache = w.join("oci-cache");
    let puller = wrenn_oci::Puller::new(config_for(&reg, &cache)).unwrap();
    let template_dir = w.join("images/oci-test");
    let (image, disk) = oci_template::template_from_image(
        &puller,
        &format!("{}/wrenn/busybox:1", reg.host()),
        RootfsTemplate {
            rootfs: PathBuf::new(),
            template_dir: template_dir.clone(),
            kernel_from,
            envd: envd_static(),
            busybox,
            disk_bytes: Some(256 << 20),
        },
        |_| {},
    )
    .await
    .expect("template from the image");
    let rootfs = image.rootfs.clone();
    assert_eq!(
        image.config.config.as_ref().and_then(|c| c.env.clone()),
        Some(vec!["PATH=/usr/bin:/bin".to_string()])
    );
    println!(
        "FIGURE oci_template.disk content_bytes={} seconds={:.2}",
        disk.content_bytes,
        disk.elapsed.as_secs_f64()
    );
    assert!(
        !rootfs.join("usr/local/bin/envd").exists(),
        "the unpacked tree is not changed"
    );
    for f in ["vmlinuz", "initrd.img", "rootfs.img"] {
        assert!(template_dir.join(f).is_file(), "{f}");
    }
    assert!(
        !PathBuf::from("/usr/sbin/wrenn-init").exists(),
        "the image's /sbin link stayed inside"
    );

    let envd = free_addr();
    let snap = snapshot::make_template_snapshot(
        &template_dir,
        &snapshot::TemplateBoot {
            vcpus: 1,
            memory_mib: 256,
            accel: wrenn_vmm::accel::detect().0,
            qemu: wrenn_vmm::qemu::default_qemu(),
            net: Net::UserForward { host: envd },
            envd,
            ready_timeout: Duration::from_secs(180),
        },
    )
    .await
    .expect("the OCI template boots to envd and snapshots");
    let out = run_in(&snap, "cat /etc/image-marker; hello; test -e /etc/gone || echo gone-is-gone; /bin/busybox id -un; cat /etc/hostname; test -d /root && echo root-home").await;
    assert_eq!(
        out,
        "marker-2\nhello-from-oci\ngone-is-gone\nuser\nwrenn\nroot-home\n"
    );
}
