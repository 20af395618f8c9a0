//! Templates and paused capsules that travel between real hosts: a snapshot made on one host
//! used on another (copied there by the control plane), and paused capsules moved by a drain
//! with `move_paused` and by `POST /v1/capsules/{id}/move`, resuming with their files and
//! processes.

use std::time::Instant;

use serde_json::json;
use wrenn_client::Exec;

use crate::harness::Cluster;

async fn sh(c: &Cluster, id: &str, script: &str) -> String {
    let out = c.admin.exec(id, &Exec::shell(script)).await.unwrap();
    assert_eq!(out.exit_code, 0, "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes a file and starts a process that outlives the exec; the process's pid.
async fn leave_marks(c: &Cluster, id: &str) -> String {
    sh(c, id, "echo travelled > /home/user/mark").await;
    sh(
        c,
        id,
        "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
    )
    .await
}

/// The file and the process of [`leave_marks`] are there.
async fn check_marks(c: &Cluster, id: &str, pid: &str) {
    assert_eq!(sh(c, id, "cat /home/user/mark").await, "travelled");
    let cmdline = sh(c, id, &format!("tr '\\0' ' ' < /proc/{pid}/cmdline")).await;
    assert_eq!(cmdline, "sleep 1000", "process {pid}");
}

/// A snapshot made on host 0, used for a create forced onto host 1: the template is copied
/// there, and the new capsule has the source's file and its running process.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_made_on_one_host_starts_on_another() {
    let c = Cluster::start_own_images(2);
    let src = c.capsule_on(&["h0"]).await;
    assert_eq!(c.capsule_host(&src).await, c.agents[0].host_id);
    let pid = leave_marks(&c, &src).await;
    let t = c
        .admin
        .create_snapshot(&src, Some("travelling"), false)
        .await
        .unwrap();
    assert_eq!(t.name, "travelling");
    let target = c.agents[1].host_id.clone();
    let on_host = c.template_folder_name("travelling").await;
    let folder = |i: usize| c.images_of(i).join(&on_host);
    assert!(folder(0).join("template.json").exists(), "made on host 0");
    assert!(!folder(1).exists(), "not on host 1 before a create there");
    let started = Instant::now();
    let (status, made, _) = c
        .create_as(
            &c.up.key,
            &json!({ "template": "travelling", "host_id": target }),
        )
        .await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(c.capsule_host(&id).await, target);
    assert!(folder(1).join("template.json").exists(), "copied to host 1");
    check_marks(&c, &id, &pid).await;
    // A second create there uses the copy (nothing to send).
    let again = Instant::now();
    let (status, made, _) = c
        .create_as(
            &c.up.key,
            &json!({ "template": "travelling", "host_id": target }),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let second = made["id"].as_str().unwrap().to_string();
    check_marks(&c, &second, &pid).await;
    eprintln!(
        "FIGURE cluster.template_travel create_with_copy_secs={secs:.1} create_after_secs={:.1}",
        again.elapsed().as_secs_f64()
    );
    for id in [src, id, second] {
        c.admin.destroy_capsule(&id).await.unwrap();
    }
    // Deleting the template deletes it on both hosts.
    c.admin.delete_template("travelling").await.unwrap();
    assert!(
        !folder(0).exists() && !folder(1).exists(),
        "deleted on both"
    );
}

/// A drain with `move_paused` moves a paused capsule off its host; resumed there it has its
/// file and process. Paused again, `POST /v1/capsules/{id}/move` moves it once more. A capsule
/// created with host tags only moves to hosts that have them.
#[tokio::test(flavor = "multi_thread")]
async fn paused_capsules_move_by_drain_and_by_move() {
    let c = Cluster::start(2);
    let from = c.agents[0].host_id.clone();
    // Placed by host id (no tags, so any host may take it later).
    let (status, made, _) = c
        .create_as(
            &c.up.key,
            &json!({ "template": "minimal", "host_id": from }),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(c.capsule_host(&id).await, from);
    // Tagged for host 0 alone: it stays there, and its move says why.
    let tied = c.capsule_on(&["h0"]).await;
    c.admin.pause_capsule(&tied).await.unwrap();
    c.wait_capsule(&tied, "paused").await;
    let (status, body) = c
        .post(
            &format!("/v1/capsules/{tied}/move"),
            &[("x-api-key", &c.up.key)],
            &json!({}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "host_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("with tags [h0]"),
        "{body}"
    );
    assert_eq!(c.capsule_host(&tied).await, from);
    c.admin.destroy_capsule(&tied).await.unwrap();
    let pid = leave_marks(&c, &id).await;
    c.admin.pause_capsule(&id).await.unwrap();
    c.wait_capsule(&id, "paused").await;

    let started = Instant::now();
    let drained = c.admin.drain_host(&from, true).await.unwrap();
    let drain_secs = started.elapsed().as_secs_f64();
    assert_eq!(drained.moved, vec![id.clone()], "{drained:?}");
    assert!(drained.failed.is_empty(), "{drained:?}");
    let now_on = c.capsule_host(&id).await;
    assert_ne!(now_on, from);
    c.wait_capsule(&id, "paused").await;
    assert!(
        !c.agents[0].data_dir.join("capsules").join(&id).exists(),
        "the old host keeps no copy"
    );
    c.admin.resume_capsule(&id).await.unwrap();
    c.wait_capsule(&id, "running").await;
    check_marks(&c, &id, &pid).await;

    // Once more, by the move route (the draining host is never a target).
    c.admin.pause_capsule(&id).await.unwrap();
    c.wait_capsule(&id, "paused").await;
    let started = Instant::now();
    let (status, body) = c
        .post(
            &format!("/v1/capsules/{id}/move"),
            &[("x-api-key", &c.up.key)],
            &json!({}),
        )
        .await;
    let move_secs = started.elapsed().as_secs_f64();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "paused", "{body}");
    let last = c.capsule_host(&id).await;
    assert_ne!(last, now_on);
    assert_ne!(last, from, "a draining host took a move");
    c.admin.resume_capsule(&id).await.unwrap();
    c.wait_capsule(&id, "running").await;
    check_marks(&c, &id, &pid).await;
    // A running capsule does not move.
    let (status, body) = c
        .post(
            &format!("/v1/capsules/{id}/move"),
            &[("x-api-key", &c.up.key)],
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state");
    eprintln!("FIGURE cluster.move drain_move_secs={drain_secs:.1} move_secs={move_secs:.1}");
    c.admin.destroy_capsule(&id).await.unwrap();
}
