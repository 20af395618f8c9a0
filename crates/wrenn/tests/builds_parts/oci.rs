//! `FROM <OCI image>` builds: an image the test writes (busybox, a program, an `Env`) pushed to
//! a docker-registry of its own on 127.0.0.1:15000, built FROM with a RUN step; a capsule of the
//! result runs the image's program and sees the RUN's file and the image's environment. The
//! image's template is the build's own (not listed, not reachable by name), reused by digest;
//! a bad reference, an unreachable registry and a missing tag fail the build naming the line.
//! A cancel while a large layer comes through a slow proxy (127.0.0.1:15101 to a registry on
//! 15100) stops the pull at once and leaves no partial cache entry, temporary or template.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use wrenn_oci::testkit::{
    image::{Comp, Pusher},
    Registry,
};

use super::{common, Api, Reap, Up, SERIAL, SLOTS};

/// The static envd that goes into images.
fn envd_static() -> PathBuf {
    if let Some(p) = std::env::var_os("WRENN_ENVD") {
        return PathBuf::from(p);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/target"))
        .join("envd-static")
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

/// A `wrenn up` whose agent reaches `registry` over plain HTTP (`oci.toml`) and has an images
/// folder of its own (`minimal` hard-linked in: image templates are written beside it).
fn up_with_registry(registry: &str) -> (tempfile::TempDir, Reap, Up) {
    let dir = tempfile::Builder::new()
        .prefix("ocib-up-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    sh(&format!(
        "cp -al {}/minimal {}/minimal",
        common::images_dir().display(),
        images.display()
    ));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("oci.toml"),
        format!("[registries.\"{registry}\"]\ninsecure = true\n"),
    )
    .unwrap();
    let cmd = common::up_command(super::bin(), SLOTS, &data, "minimal");
    // The images folder of its own (the later --images wins).
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut fixed = Command::new(cmd.get_program());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--images" {
            it.next();
            fixed.arg("--images").arg(&images);
        } else {
            fixed.arg(a);
        }
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => fixed.env(k, v),
            None => fixed.env_remove(k),
        };
    }
    fixed
        .env("WRENN_ENVD", envd_static())
        .stdout(std::process::Stdio::piped());
    let up = Up::spawn(fixed, &data, 600);
    let reap = Reap {
        dir: up.data_dir.clone(),
        slots: 4200..=4299,
    };
    (dir, reap, up)
}

/// One layer: busybox as `/bin/sh`, a program and a marker, as GNU tar writes it.
fn layer() -> Vec<u8> {
    layer_with("true")
}

/// [`layer`] with what `extra` (a shell script run in the layer's folder) adds.
fn layer_with(extra: &str) -> Vec<u8> {
    let t = tempfile::Builder::new()
        .prefix("ocib-layer-")
        .tempdir_in("/var/tmp")
        .unwrap();
    sh(&format!(
        "cd {w}; mkdir -p bin usr/bin etc
         cp /bin/busybox bin/busybox; ln -s busybox bin/sh
         for t in cat echo id env test ls mkdir rm; do ln -s busybox bin/$t; done
         printf '#!/bin/sh\\necho hello-from-image\\n' > usr/bin/hello; chmod 755 usr/bin/hello
         echo image > etc/image-marker
         {extra}",
        w = t.path().display()
    ));
    let out = Command::new("tar")
        .arg("-C")
        .arg(t.path())
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn from_an_oci_image_of_a_local_registry() {
    let _serial = SERIAL.lock().await;
    let reg = Registry::start("ocib-builds", 15015, None).unwrap();
    let host = reg.host();
    Pusher::new(&reg, "wrenn/tool")
        .image(
            Some("1"),
            "amd64",
            &[(layer(), Comp::Gzip)],
            &["PATH=/usr/bin:/bin", "GREETING=from-image"],
            true,
        )
        .await
        .unwrap();
    let (_dir, _reap, up) = up_with_registry(&host);
    let api = Api::new(&up);
    let (s, b) = api
        .post(
            "/v1/builds",
            json!({
                "name": "tool",
                "dockerfile": format!("ARG X=1\nFROM {host}/wrenn/tool:1\nRUN echo ran-in-build > /etc/from-run\n"),
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["base_template"], format!("{host}/wrenn/tool:1"));
    let b = api.wait(b["id"].as_str().unwrap(), 900).await;
    assert_eq!(b["status"], "success", "{b:#}");
    let setup = &b["logs"][0];
    assert_eq!(setup["line"], 2, "{b:#}");
    let pulled = setup["stdout"].as_str().unwrap();
    assert!(pulled.contains("pulled sha256:"), "{b:#}");
    let image_template = pulled
        .split("as template ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap()
        .trim();
    assert!(image_template.starts_with("oci-"), "{pulled}");
    assert_eq!(b["default_env"]["GREETING"], "from-image", "{b:#}");
    // The image's `WorkingDir` (made: the image lacks it) is the template's folder.
    assert_eq!(b["default_workdir"], "/srv", "{b:#}");

    // A capsule of the result: the image's program, the RUN's file, the image's environment.
    let c = api.capsule("tool").await;
    let out = api
        .exec(
            &c,
            "hello; cat /etc/from-run /etc/image-marker; echo $GREETING; pwd",
        )
        .await;
    assert_eq!(
        out["stdout"], "hello-from-image\nran-in-build\nimage\nfrom-image\n/srv\n",
        "{out}"
    );
    api.destroy(&c).await;

    // The image's template is the build's own: not listed, missing by name.
    let listed = api.get("/v1/snapshots").await;
    assert!(!listed.to_string().contains(image_template), "{listed:#}");
    let (s, e) = api
        .post("/v1/capsules", json!({"template": image_template}))
        .await;
    assert_eq!(s, 404, "{e}");

    // By digest it is the same image: reused, not pulled again (the RUN fails: no snapshot).
    let digest = pulled.split_whitespace().nth(1).unwrap();
    let (s, b) = api
        .post(
            "/v1/builds",
            json!({"name": "tool2", "dockerfile": format!("FROM {host}/wrenn/tool@{digest}\nRUN exit 3\n")}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let b = api.wait(b["id"].as_str().unwrap(), 600).await;
    assert_eq!(b["status"], "failed", "{b:#}");
    let setup = b["logs"][0]["stdout"].as_str().unwrap();
    assert!(
        setup.starts_with(&format!("reused {digest} as template {image_template}")),
        "{b:#}"
    );
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("(line 2) `RUN exit 3` failed: exit code 3"),
        "{b:#}"
    );

    // Failures before any capsule, each naming the FROM line.
    for (from, why) in [
        (format!("{host}/wrenn/tool:nope"), "not found"),
        ("127.0.0.1:15016/wrenn/tool:1".to_string(), ""),
        (format!("{host}/Wrenn/Tool:1"), ""),
    ] {
        let (s, b) = api
            .post(
                "/v1/builds",
                json!({"name": "bad", "dockerfile": format!("FROM {from}\nRUN true\n")}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let b = api.wait(b["id"].as_str().unwrap(), 300).await;
        assert_eq!(b["status"], "failed", "{b:#}");
        let err = b["error"].as_str().unwrap();
        assert!(
            err.starts_with(&format!(
                "step 1 (line 1) `FROM {from}` failed: pulling the image: "
            )),
            "{err}"
        );
        assert!(err.to_lowercase().contains(why), "{err}");
    }
    let list = api.get("/v1/capsules").await;
    assert_eq!(list.as_array().unwrap().len(), 0, "{list:#}");
}

/// A TCP proxy to `to` that sends the answers at about `per_sec` bytes a second: how many bytes
/// it sent back and how many connections are open.
struct SlowProxy {
    sent: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowProxy {
    async fn start(port: u16, to: u16, per_sec: u64) -> SlowProxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let (sent, open) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, o) = (sent.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (sent, open) = (s.clone(), o.clone());
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        relay(client, server, per_sec, &sent).await;
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        SlowProxy { sent, open, task }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests through as they come; answers in 16 KiB pieces, paced. Ends when either side does.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    per_sec: u64,
    sent: &AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            sent.fetch_add(n as u64, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_micros(n as u64 * 1_000_000 / per_sec)).await;
        }
    };
    // A client that goes away ends the relay (its half of the copy ends).
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Waits (up to `secs`) until `ok` holds.
async fn until(secs: u64, what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "not after {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_stops_the_pull_and_leaves_nothing_half_made() {
    let _serial = SERIAL.lock().await;
    let reg = Registry::start("ocib-cancel", 15100, None).unwrap();
    // 24 MiB that do not compress, at 1 MiB/s through the proxy: the pull takes ~24 s.
    let big = layer_with("head -c 25165824 /dev/urandom > etc/big");
    let layer_digest = wrenn_oci::testkit::image::sha(&big);
    Pusher::new(&reg, "wrenn/big")
        .image(
            Some("1"),
            "amd64",
            &[(big, Comp::None)],
            &["PATH=/bin"],
            true,
        )
        .await
        .unwrap();
    let proxy = SlowProxy::start(15101, 15100, 1 << 20).await;
    let host = "127.0.0.1:15101";
    let (dir, _reap, up) = up_with_registry(host);
    let api = Api::new(&up);
    let (s, b) = api
        .post(
            "/v1/builds",
            json!({"name": "big", "dockerfile": format!("FROM {host}/wrenn/big:1\nRUN true\n")}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    // Under way: the layer is coming.
    until(300, "the layer's first MiB", || {
        proxy.sent.load(Ordering::SeqCst) > 1 << 20
    })
    .await;
    let (s, c) = api
        .post(&format!("/v1/builds/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    let b = api.wait(&id, 120).await;
    assert_eq!(b["status"], "cancelled", "{b:#}");
    // The pull stopped: its connection closed with the layer not all sent, and nothing more.
    until(60, "the pull's connections closed", || {
        proxy.open.load(Ordering::SeqCst) == 0
    })
    .await;
    let sent = proxy.sent.load(Ordering::SeqCst);
    assert!(sent < 24 << 20, "the whole layer went: {sent} bytes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(proxy.sent.load(Ordering::SeqCst), sent);
    // No partial cache entry, temporary or template.
    let cache = up.data_dir.join("oci");
    let hex = layer_digest.trim_start_matches("sha256:");
    assert!(!cache.join("blobs/sha256").join(hex).exists());
    assert_eq!(names_in(&cache.join("tmp")), Vec::<String>::new());
    assert_eq!(names_in(&cache.join("rootfs")), Vec::<String>::new());
    let images = names_in(&dir.path().join("images"));
    assert_eq!(images, vec!["minimal".to_string()], "{images:?}");
    let list = api.get("/v1/capsules").await;
    assert_eq!(list.as_array().unwrap().len(), 0, "{list:#}");
}
