//! The agent killed with `-9` under load behind `wrenn server`.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::common::{images_dir, ready};
use serde_json::json;

use super::load::{judge, load, until_ok, Tally};
use super::{bin, figure, Api, Proc, Reap, HANG, SERIAL};

fn start_agent(data: &Path, port: u16) -> Proc {
    let mut child = Command::new(bin())
        .args(["agent", "--slots", "3660-3679", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .arg("--images")
        .arg(images_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Warnings (a data folder's loose modes fixed) may come first.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.is_empty() || line.starts_with("warning: ") {
        line.clear();
        out.read_line(&mut line).unwrap();
    }
    assert!(line.contains("listening"), "{line}");
    Proc(Some(child))
}

/// 4. The agent is killed with `-9` under load: requests fail fast with `host_unavailable`,
///    and succeed again once it is back (its capsules re-adopted).
#[tokio::test(flavor = "multi_thread")]
async fn agent_kill_9_under_load() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent_dir = dir.path().join("agent");
    let _reap = Reap {
        dir: agent_dir.clone(),
        slots: 3660..=3679,
    };
    let mut agent = start_agent(&agent_dir, port);
    let server_dir = dir.path().join("server");
    let mut server = Proc(Some(
        Command::new(bin())
            .args(["server", "--listen", "127.0.0.1:0", "--agent"])
            .arg(format!("http://127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&server_dir)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    ));
    let (addr, key) = ready(server.child(), &server_dir);
    let api = Api::new(addr, key);
    let id = api.capsule().await;
    api.sh(
        &id,
        "echo kept > /home/user/mark; (sleep 100000 >/dev/null 2>&1 &)",
    )
    .await;

    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (api2, id2) = (api.clone(), id.clone());
    let workers = load(
        4,
        phase.clone(),
        stop.clone(),
        tally.clone(),
        move |w, n| {
            let (api, id) = (api2.clone(), id2.clone());
            async move {
                if (w + n as usize).is_multiple_of(2) {
                    api.exec(&id, "cat /home/user/mark").await
                } else {
                    api.call(
                        reqwest::Method::POST,
                        &format!("/v1/capsules/{id}/ping"),
                        None,
                    )
                    .await
                }
            }
        },
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    phase.store(1, Ordering::SeqCst);
    let killed = Instant::now();
    agent.kill_9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A create while the agent is away: refused too, and leaves nothing.
    let refused_create = api.create(json!({ "template": "minimal" })).await;
    assert_eq!(refused_create.status, 503, "{refused_create:?}");
    assert_eq!(refused_create.code(), "host_unavailable");

    let mut agent = start_agent(&agent_dir, port);
    let down = killed.elapsed();
    let (api3, id3) = (api.clone(), id.clone());
    let recovered = until_ok(HANG, || api3.exec(&id3, "true")).await;
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let before = judge(&tally, 0, "host_unavailable");
    let during = judge(&tally, 1, "host_unavailable");
    let after = judge(&tally, 2, "host_unavailable");
    assert_eq!(before.0, before.1, "all succeed before the kill");
    assert!(
        during.2 > 0,
        "requests were refused while the agent was away"
    );
    assert!(after.0 > 0);
    assert_eq!(after.0, after.1, "all succeed after the agent is back");
    // Re-adopted: its file and its process are there, and it is still managed.
    assert_eq!(
        api.sh(
            &id,
            "cat /home/user/mark; pgrep -x sleep >/dev/null && echo proc"
        )
        .await,
        "kept\nproc\n"
    );
    let listed = api.get("/v1/capsules").await.unwrap();
    assert_eq!(listed.body.as_array().unwrap().len(), 1, "{listed:?}");
    assert_eq!(listed.body[0]["status"], "running", "{listed:?}");
    let c = api.capsule().await;
    for id in [&c, &id] {
        assert_eq!(api.delete(id).await.status, 204);
    }
    server.stop();
    agent.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    figure(
        "agent_kill_9",
        &[
            ("requests", tally.answers.len().to_string()),
            ("before_ok", format!("{}/{}", before.1, before.0)),
            ("during_503", during.2.to_string()),
            ("during_ok", during.1.to_string()),
            ("slowest_503_ms", during.3.to_string()),
            ("agent_down_ms", down.as_millis().to_string()),
            (
                "recovered_after_restart_ms",
                recovered.as_millis().to_string(),
            ),
            ("after_ok", format!("{}/{}", after.1, after.0)),
            ("hung", "0".into()),
        ],
    );
}
