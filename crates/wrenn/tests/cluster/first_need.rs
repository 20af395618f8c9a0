//! Base templates built on a host the first time a create needs them: an agent registered with
//! an empty images folder and `--envd` builds `minimal` when the scheduler sends it a capsule of
//! it; a host without `--envd` gets no capsule of a base template it lacks (503 naming it).

use std::{os::unix::fs::PermissionsExt, path::PathBuf, time::Instant};

use serde_json::json;
use wrenn_client::Exec;

use crate::harness::{Cluster, PATIENCE};

/// The static envd that `make images` builds into the shared target folder.
fn envd_static() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/target"));
    let p = target.join("envd-static");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-envd-static.sh (make images does)",
        p.display()
    );
    p
}

/// Whether the heartbeats of host `id` list template `name` as present.
async fn host_lists(c: &Cluster, id: &str, name: &str) -> bool {
    let h = c.admin.get_host(id).await.unwrap();
    h.load.templates.iter().any(|t| t.name == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_template_is_built_on_a_host_on_first_need() {
    let mut c = Cluster::start(0);
    c.own_images = true;
    // Host 0: no templates at all, and the envd to build them.
    let (id0, token) = c.create_host(0).await;
    let mut a0 = c.agent(0, &id0);
    std::fs::create_dir_all(&a0.images).unwrap();
    let mut cmd = a0.command();
    cmd.arg("--envd")
        .arg(envd_static())
        .args(["--register", &token])
        .args(["--control-plane", &c.base_url()])
        .args(["--address", &a0.address]);
    tokio::task::block_in_place(|| a0.spawn(cmd));
    c.wait_host(&id0, wrenn_client::hosts::HostStatus::Online)
        .await;
    let built = a0.images.join("minimal");
    assert!(!built.exists(), "nothing built before a create needs it");
    assert!(!host_lists(&c, &id0, "minimal").await);

    let started = Instant::now();
    let (status, made, _) = c
        .create_as(
            &c.up.key,
            &json!({ "template": "minimal", "host_tags": ["h0"] }),
        )
        .await;
    let first_secs = started.elapsed().as_secs_f64();
    assert_eq!(status, 201, "{made}");
    let first = made["id"].as_str().unwrap().to_string();
    assert_eq!(c.capsule_host(&first).await, id0);
    let out = c
        .admin
        .exec(&first, &Exec::shell("echo built here"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "built here");
    // Built in its images folder, private to the agent's user.
    assert!(built.join("snapshot").is_dir(), "{}", built.display());
    let mode = std::fs::metadata(&built).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "template folder mode {mode:o}");
    // Its heartbeats now list it, so the scheduler prefers it for the next one.
    let deadline = Instant::now() + PATIENCE;
    while !host_lists(&c, &id0, "minimal").await {
        assert!(Instant::now() < deadline, "host 0 never listed minimal");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A second create uses what was built.
    let started = Instant::now();
    let (status, made, _) = c
        .create_as(
            &c.up.key,
            &json!({ "template": "minimal", "host_tags": ["h0"] }),
        )
        .await;
    let second_secs = started.elapsed().as_secs_f64();
    assert_eq!(status, 201, "{made}");
    let second = made["id"].as_str().unwrap().to_string();
    eprintln!(
        "FIGURE cluster.first_need create_with_build_secs={first_secs:.1} \
         create_after_secs={second_secs:.1}"
    );

    // Host 1: `minimal` only and no envd: the scheduler sends it no `python` capsule, and says
    // why when it is the only host allowed.
    let mut c1_images = c.images_of(1);
    c1_images.push("minimal");
    crate::common::link_tree(
        &crate::common::images_dir().join("minimal"),
        &c1_images,
        false,
    );
    let a1 = c.register(1).await;
    let (status, body, _) = c
        .create_as(
            &c.up.key,
            &json!({ "template": "python", "host_tags": ["h1"] }),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "host_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("holds template python or can build it"),
        "{body}"
    );
    assert!(!a1.images.join("python").exists());
    for id in [first, second] {
        c.admin.destroy_capsule(&id).await.unwrap();
    }
    drop(a1);
    drop(a0);
}
