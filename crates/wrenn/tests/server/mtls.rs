//! `wrenn server` and `wrenn agent` as two processes over mutual TLS.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::{mtls_agent, ready};
use serde_json::{json, Value};

/// `wrenn server` and `wrenn agent` as separate processes over mutual TLS, with the PKI made
/// by `wrenn agent-cert`; the server refuses an agent that is not in its PKI.
#[tokio::test(flavor = "multi_thread")]
async fn server_and_agent_apart_over_mtls() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let pki = dir.path().join("pki");
    let bin = env!("CARGO_BIN_EXE_wrenn");
    let (mut agent, agent_port) = mtls_agent(dir.path(), "2450-2499");

    let mut server = Command::new(bin)
        .args(["server", "--listen", "127.0.0.1:0", "--agent"])
        .arg(format!("localhost:{agent_port}"))
        .arg("--pki-dir")
        .arg(&pki)
        .arg("--data-dir")
        .arg(dir.path().join("server"))
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, key) = ready(&mut server, &dir.path().join("server"));
    let http = reqwest::Client::new();
    let c: Value = http
        .post(format!("http://{addr}/v1/capsules"))
        .header("x-api-key", &key)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = c["id"].as_str().expect("a capsule").to_string();
    let out: Value = http
        .post(format!("http://{addr}/v1/capsules/{id}/exec"))
        .header("x-api-key", &key)
        .json(&json!({ "cmd": "echo", "args": ["over mTLS"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["stdout"], "over mTLS\n");
    let gone = http
        .delete(format!("http://{addr}/v1/capsules/{id}"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);

    // A server with a PKI of its own (a different CA) cannot reach this agent.
    let stranger = Command::new(bin)
        .args(["server", "--listen", "127.0.0.1:0", "--agent"])
        .arg(format!("localhost:{agent_port}"))
        .arg("--data-dir")
        .arg(dir.path().join("stranger"))
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let failed = tokio::task::spawn_blocking(move || {
        let mut stranger = stranger;
        for _ in 0..300 {
            if stranger.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = stranger.kill();
        stranger.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("agent"), "{err}");

    for child in [&mut server, &mut agent] {
        // SAFETY: kill(2) of our own children.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = child.wait();
    }
}
