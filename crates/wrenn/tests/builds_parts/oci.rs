//! `FROM <OCI image>` builds: an image the test writes (busybox, a program, an `Env`) pushed to
//! a docker-registry of its own on 127.0.0.1:15000, built FROM with a RUN step; a capsule of the
//! result runs the image's program and sees the RUN's file and the image's environment. The
//! image's template is the build's own (not listed, not reachable by name), reused by digest;
//! a bad reference, an unreachable registry and a missing tag fail the build naming the line.

use std::{path::PathBuf, process::Command};

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
    let t = tempfile::Builder::new()
        .prefix("ocib-layer-")
        .tempdir_in("/var/tmp")
        .unwrap();
    sh(&format!(
        "cd {w}; mkdir -p bin usr/bin etc
         cp /bin/busybox bin/busybox; ln -s busybox bin/sh
         for t in cat echo id env test ls mkdir rm; do ln -s busybox bin/$t; done
         printf '#!/bin/sh\\necho hello-from-image\\n' > usr/bin/hello; chmod 755 usr/bin/hello
         echo image > etc/image-marker",
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
