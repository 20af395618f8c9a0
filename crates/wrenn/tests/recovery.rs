//! `kill -9` the agent while capsules run and are paused; a restarted agent re-adopts them,
//! and removes what nothing owns. Runs the real `wrenn agent` binary; needs root, nftables,
//! QEMU and `make images`.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use common::images_dir;
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, CapsuleRef, CapsuleState, CreateCapsuleRequest, ExecRequest,
    ListCapsulesRequest,
};

fn start_agent(data: &Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--slots",
            "1200-1299",
            "--data-dir",
        ])
        .arg(data)
        .arg("--images")
        .arg(images_dir())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Warnings (a data folder's loose modes fixed) may come first.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if line.starts_with("warning: ") {
            continue;
        }
        break line
            .trim()
            .strip_prefix("wrenn agent listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_string();
    };
    (child, format!("http://{addr}"))
}

async fn sh(client: &mut AgentClient<tonic::transport::Channel>, id: &str, script: &str) -> String {
    let out = client
        .exec(ExecRequest {
            capsule_id: id.into(),
            cmd: "/bin/bash".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[tokio::test]
async fn agent_restart_after_kill_9_re_adopts_and_cleans() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    // b's pause keeps its VMM (`--keep-paused`).
    let (mut agent, url) = start_agent(data.path(), &["--keep-paused", "1"]);
    let mut client = AgentClient::connect(url).await.unwrap();
    let create = || CreateCapsuleRequest {
        template: "minimal".into(),
        ..Default::default()
    };
    let a = client.create_capsule(create()).await.unwrap().into_inner();
    let b = client.create_capsule(create()).await.unwrap().into_inner();
    sh(
        &mut client,
        &a.id,
        "echo a > /home/user/mark; (sleep 100000 &)",
    )
    .await;
    sh(&mut client, &b.id, "echo b > /home/user/mark").await;
    client
        .pause_capsule(CapsuleRef { id: b.id.clone() })
        .await
        .unwrap();

    let qemus_of =
        |id: &str| wrenn_vmm::qemu::processes_under(&data.path().join("capsules").join(id));
    assert_eq!(qemus_of(&b.id).len(), 1, "b's VMM kept at its pause");

    // The agent dies hard; its QEMUs keep running.
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(data.path()).len(),
        2,
        "a's QEMU and b's kept one survive the agent"
    );

    // Things nobody owns: a folder without a record and a network slot.
    std::fs::create_dir_all(data.path().join("capsules/cl-orphan")).unwrap();
    assert!(Command::new("ip")
        .args(["netns", "add", "wrenn-1277"])
        .status()
        .unwrap()
        .success());

    let (mut agent, url) = start_agent(data.path(), &["--keep-paused", "1"]);
    let mut client = AgentClient::connect(url).await.unwrap();
    let list = client
        .list_capsules(ListCapsulesRequest {})
        .await
        .unwrap()
        .into_inner();
    let state_of = |id: &str| list.capsules.iter().find(|c| c.id == id).map(|c| c.state);
    assert_eq!(state_of(&a.id), Some(CapsuleState::Running as i32));
    assert_eq!(state_of(&b.id), Some(CapsuleState::Paused as i32));
    assert!(!data.path().join("capsules/cl-orphan").exists());
    assert!(!netns_exists("wrenn-1277"));
    // b's kept VMM was nobody's: removed; b resumes from its files.
    assert!(qemus_of(&b.id).is_empty());
    assert_eq!(qemus_of(&a.id).len(), 1);

    assert_eq!(
        sh(
            &mut client,
            &a.id,
            "cat /home/user/mark; pgrep -x sleep >/dev/null && echo proc"
        )
        .await,
        "a\nproc\n"
    );
    client
        .resume_capsule(CapsuleRef { id: b.id.clone() })
        .await
        .unwrap();
    assert_eq!(sh(&mut client, &b.id, "cat /home/user/mark").await, "b\n");
    // The adopted VMM is still managed: pause and resume it.
    client
        .pause_capsule(CapsuleRef { id: a.id.clone() })
        .await
        .unwrap();
    client
        .resume_capsule(CapsuleRef { id: a.id.clone() })
        .await
        .unwrap();
    assert_eq!(sh(&mut client, &a.id, "cat /home/user/mark").await, "a\n");

    // A clean stop leaves running capsules running but ends the VMM a pause kept: a paused
    // capsule's state is in its files, and the next agent resumes it from them.
    client
        .pause_capsule(CapsuleRef { id: a.id.clone() })
        .await
        .unwrap();
    assert_eq!(qemus_of(&a.id).len(), 1, "a's VMM kept at its pause");
    drop(client);
    // SAFETY: plain kill(2) of the agent child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGINT) };
    let _ = agent.wait();
    assert!(qemus_of(&a.id).is_empty(), "the stop ended the kept VMM");
    assert_eq!(qemus_of(&b.id).len(), 1, "b runs on");
    let (mut agent, url) = start_agent(data.path(), &[]);
    let mut client = AgentClient::connect(url).await.unwrap();
    client
        .resume_capsule(CapsuleRef { id: a.id.clone() })
        .await
        .unwrap();
    assert_eq!(sh(&mut client, &a.id, "cat /home/user/mark").await, "a\n");

    for c in [&a, &b] {
        client
            .destroy_capsule(CapsuleRef { id: c.id.clone() })
            .await
            .unwrap();
        let slot_ns = format!(
            "wrenn-{}",
            u32::from(c.address.parse::<std::net::Ipv4Addr>().unwrap())
                .wrapping_sub(u32::from(std::net::Ipv4Addr::new(10, 200, 0, 1)))
                / 2
        );
        assert!(!netns_exists(&slot_ns), "{slot_ns} left behind");
    }
    drop(client);
    // SAFETY: plain kill(2) of the agent child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGINT) };
    let _ = agent.wait();
    assert_eq!(wrenn_vmm::qemu::processes_under(data.path()).len(), 0);
    assert_eq!(
        std::fs::read_dir(data.path().join("capsules"))
            .unwrap()
            .count(),
        0
    );
}
