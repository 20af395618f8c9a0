//! The gRPC surface through a real agent (in-process server, tonic client, real capsules).
//! Needs root, nftables, QEMU and `make images`.

use std::{path::PathBuf, sync::Arc};

use tonic::Code;
use wrenn_agent::{
    manager::{AgentConfig, Manager},
    service::{self, Listen},
    AgentError,
};
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, CapsuleRef, CapsuleState, CreateCapsuleRequest, ExecRequest,
    HostInfoRequest, ListCapsulesRequest,
};

fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

/// A real agent (manager + gRPC server) on loopback, owning the slots in `slots`.
struct TestAgent {
    client: AgentClient<tonic::transport::Channel>,
    manager: Arc<Manager>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), AgentError>>,
    data: tempfile::TempDir,
}

impl TestAgent {
    async fn start(max_capsules: usize, slots: std::ops::RangeInclusive<u32>) -> TestAgent {
        let data = tempfile::tempdir_in("/var/tmp").unwrap();
        let manager = Arc::new(
            Manager::start(AgentConfig {
                data_dir: data.path().to_path_buf(),
                images_dir: images_dir(),
                qemu: wrenn_vmm::qemu::default_qemu(),
                max_capsules,
                slots,
                shapes: Default::default(),
                dns_upstreams: Vec::new(),
                egress_allow_private: Vec::new(),
            })
            .await
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service::serve(
            Listen::Tcp(listener),
            None,
            manager.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        let client = AgentClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        TestAgent {
            client,
            manager,
            stop,
            server,
            data,
        }
    }

    /// Stops the server (the client goes first) and returns the data folder for checks.
    async fn stop(self) -> tempfile::TempDir {
        drop(self.client);
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
        self.data
    }
}

#[tokio::test]
async fn grpc_surface_and_error_codes() {
    let mut agent = TestAgent::start(2, 100..=199).await;
    agent.manager.spawn_sampler();
    let client = &mut agent.client;

    let info = client
        .host_info(HostInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(info.cpus >= 1 && info.memory_bytes > 0);
    assert!(info.accel == "tcg" || info.accel == "kvm");
    assert!(
        info.templates.contains(&"minimal".to_string()),
        "{:?}",
        info.templates
    );

    let c = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            env_vars: [("FOO".to_string(), "bar".to_string())].into(),
            metadata: [("owner".to_string(), "test".to_string())].into(),
            egress: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.state, CapsuleState::Running as i32);
    assert_eq!(c.metadata["owner"], "test");
    assert!(c.id.starts_with("cl-"));

    let out = client
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            cmd: "/bin/bash".into(),
            args: vec![
                "-c".into(),
                "echo $FOO $BAR $(pwd) $(id -un); echo err >&2; exit 3".into(),
            ],
            env: [("BAR".to_string(), "baz".to_string())].into(),
            cwd: "/tmp".into(),
            user: "root".into(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar baz /tmp root\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 3);

    let timed = client
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            cmd: "/bin/sleep".into(),
            args: vec!["30".into()],
            timeout_ms: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!timed.error.is_empty(), "a deadline kill is reported");

    let listed = client
        .list_capsules(ListCapsulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.capsules.len(), 1);

    // Metrics sampled in the background.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let m = client
        .get_metrics(wrenn_proto::agent::v1::GetMetricsRequest {
            capsule_id: c.id.clone(),
            range_secs: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(m.points.len() >= 2, "{} points", m.points.len());
    assert!(m
        .points
        .iter()
        .all(|p| p.mem_bytes > 16 << 20 && p.disk_bytes > 0));
    let bad = client
        .get_metrics(wrenn_proto::agent::v1::GetMetricsRequest {
            capsule_id: c.id.clone(),
            range_secs: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let r = |id: &str| CapsuleRef { id: id.to_string() };
    let p = client.pause_capsule(r(&c.id)).await.unwrap().into_inner();
    assert_eq!(p.state, CapsuleState::Paused as i32);
    let err = client.pause_capsule(r(&c.id)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = client
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            cmd: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let resumed = client.resume_capsule(r(&c.id)).await.unwrap().into_inner();
    assert_eq!(resumed.state, CapsuleState::Running as i32);

    // Bad requests get the right codes.
    let unknown = wrenn_types::Id::new(wrenn_types::IdKind::Capsule).to_string();
    assert_eq!(
        client.get_capsule(r(&unknown)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        client.get_capsule(r("../../etc")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .destroy_capsule(r(&unknown))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // The network of a capsule: unknown id, bad lists, and the record it answers.
    use wrenn_proto::agent::v1::{EgressPolicy, SetCapsuleNetworkRequest};
    let net = |id: &str, allow: &[&str]| SetCapsuleNetworkRequest {
        capsule_id: id.into(),
        egress: true,
        egress_policy: Some(EgressPolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: vec![],
        }),
    };
    assert_eq!(
        client
            .set_capsule_network(net(&unknown, &[]))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .set_capsule_network(net(&c.id, &["10.0.0.0/99"]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let changed = client
        .set_capsule_network(net(&c.id, &["Example.com"]))
        .await
        .unwrap()
        .into_inner();
    assert!(changed.egress);
    assert_eq!(changed.egress_policy.unwrap().allow, ["example.com"]);
    let bad_template = client
        .create_capsule(CreateCapsuleRequest {
            template: "../x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_template.code(), Code::InvalidArgument);
    let missing = client
        .create_capsule(CreateCapsuleRequest {
            template: "nothing-here".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let empty_cmd = client
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(empty_cmd.code(), Code::InvalidArgument);

    // Capacity: the limit is 2.
    let second = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let third = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted);

    for id in [&c.id, &second.id] {
        client.destroy_capsule(r(id)).await.unwrap();
    }
    assert!(client
        .list_capsules(ListCapsulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capsules
        .is_empty());
    let data = agent.stop().await;
    assert_eq!(
        std::fs::read_dir(data.path().join("capsules"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn grpc_processes_and_files() {
    use wrenn_proto::agent::v1::{
        exec_event, kill_process_request::Selector, write_file_stream_request::Part, FileRequest,
        FileType, KillProcessRequest, ListDirRequest, MoveRequest, StartBackgroundRequest,
        WriteFileRequest, WriteFileStreamRequest,
    };
    let mut agent = TestAgent::start(1, 400..=499).await;
    let client = &mut agent.client;
    let c = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Streamed exec: start, ordered output, end.
    let mut stream = client
        .exec_stream(ExecRequest {
            capsule_id: c.id.clone(),
            cmd: "/bin/bash".into(),
            args: vec![
                "-c".into(),
                "for i in 1 2 3; do echo $i; sleep 0.1; done; exit 4".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(ev) = stream.message().await.unwrap() {
        events.push(ev.event.unwrap());
    }
    assert!(matches!(events.first(), Some(exec_event::Event::Start(_))));
    let out: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            exec_event::Event::Stdout(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(out, b"1\n2\n3\n");
    match events.last() {
        Some(exec_event::Event::End(end)) => assert_eq!(end.exit_code, 4),
        other => panic!("last event {other:?}"),
    }

    // Background process by tag: listed, killed, gone.
    let bg = client
        .start_background(StartBackgroundRequest {
            capsule_id: c.id.clone(),
            cmd: "/bin/sleep".into(),
            args: vec!["1000".into()],
            tag: "sleeper".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(bg.pid > 0);
    let procs = client
        .list_processes(CapsuleRef { id: c.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(procs
        .processes
        .iter()
        .any(|p| p.tag == "sleeper" && p.cmd == "/bin/sleep"));
    let bad_signal = client
        .kill_process(KillProcessRequest {
            capsule_id: c.id.clone(),
            selector: Some(Selector::Tag("sleeper".into())),
            signal: "SIGHUP".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_signal.code(), Code::InvalidArgument);
    client
        .kill_process(KillProcessRequest {
            capsule_id: c.id.clone(),
            selector: Some(Selector::Tag("sleeper".into())),
            signal: String::new(),
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let procs = client
        .list_processes(CapsuleRef { id: c.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!procs.processes.iter().any(|p| p.tag == "sleeper"));
    let gone = client
        .kill_process(KillProcessRequest {
            capsule_id: c.id.clone(),
            selector: Some(Selector::Pid(999_999)),
            signal: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Reattach by tag: replayed output, then the end after a kill.
    client
        .start_background(StartBackgroundRequest {
            capsule_id: c.id.clone(),
            cmd: "/bin/bash".into(),
            args: vec!["-c".into(), "echo hi; sleep 1000".into()],
            tag: "talker".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut attached = client
        .connect_process(wrenn_proto::agent::v1::ConnectProcessRequest {
            capsule_id: c.id.clone(),
            selector: Some(
                wrenn_proto::agent::v1::connect_process_request::Selector::Tag("talker".into()),
            ),
        })
        .await
        .unwrap()
        .into_inner();
    let first = attached.message().await.unwrap().unwrap().event.unwrap();
    assert!(matches!(first, exec_event::Event::Start(_)), "{first:?}");
    let second = attached.message().await.unwrap().unwrap().event.unwrap();
    assert_eq!(second, exec_event::Event::Stdout(b"hi\n".to_vec()));
    client
        .kill_process(KillProcessRequest {
            capsule_id: c.id.clone(),
            selector: Some(Selector::Tag("talker".into())),
            signal: "SIGTERM".into(),
        })
        .await
        .unwrap();
    let mut last = None;
    while let Some(ev) = attached.message().await.unwrap() {
        last = ev.event;
    }
    match last {
        Some(exec_event::Event::End(end)) => assert!(!end.error.is_empty(), "killed: {end:?}"),
        other => panic!("expected the end, got {other:?}"),
    }

    // Files.
    let f = |path: &str| FileRequest {
        capsule_id: c.id.clone(),
        path: path.into(),
        user: String::new(),
    };
    let written = client
        .write_file(WriteFileRequest {
            capsule_id: c.id.clone(),
            path: "/home/user/dir/a.txt".into(),
            content: b"hello".to_vec(),
            user: "user".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((written.size, written.owner.as_str()), (5, "user"));
    let read = client
        .read_file(f("/home/user/dir/a.txt"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.content, b"hello");

    let big: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut parts = vec![WriteFileStreamRequest {
        part: Some(Part::Start(
            wrenn_proto::agent::v1::write_file_stream_request::Start {
                capsule_id: c.id.clone(),
                path: "/home/user/dir/big.bin".into(),
                user: String::new(),
            },
        )),
    }];
    parts.extend(big.chunks(1 << 20).map(|ch| WriteFileStreamRequest {
        part: Some(Part::Data(ch.to_vec())),
    }));
    let e = client
        .write_file_stream(tokio_stream::iter(parts))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.size as usize, big.len());
    let mut stream = client
        .read_file_stream(f("/home/user/dir/big.bin"))
        .await
        .unwrap()
        .into_inner();
    let mut back = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        back.extend(chunk.data);
    }
    assert!(back == big, "10 MiB round trip");

    let list = client
        .list_dir(ListDirRequest {
            capsule_id: c.id.clone(),
            path: "/home/user/dir".into(),
            depth: 1,
            user: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "big.bin"]);
    let d = client
        .make_dir(f("/home/user/dir/sub"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.r#type, FileType::Directory as i32);
    let again = client.make_dir(f("/home/user/dir/sub")).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let moved = client
        .r#move(MoveRequest {
            capsule_id: c.id.clone(),
            source: "/home/user/dir/a.txt".into(),
            destination: "/home/user/dir/sub/b.txt".into(),
            user: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.path, "/home/user/dir/sub/b.txt");
    client.remove(f("/home/user/dir")).await.unwrap();
    let missing = client.stat(f("/home/user/dir")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let missing = client.read_file(f("/nope")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    client
        .destroy_capsule(CapsuleRef { id: c.id.clone() })
        .await
        .unwrap();
    agent.stop().await;
}

#[tokio::test]
async fn idle_capsules_time_out_by_their_policy() {
    use wrenn_proto::agent::v1::TimeoutAction;
    let mut agent = TestAgent::start(3, 500..=599).await;
    agent.manager.spawn_reaper();
    let client = &mut agent.client;
    let make = |secs, action: TimeoutAction| CreateCapsuleRequest {
        template: "minimal".into(),
        timeout_secs: secs,
        on_timeout: action as i32,
        ..Default::default()
    };
    let pause = client
        .create_capsule(make(2, TimeoutAction::Pause))
        .await
        .unwrap()
        .into_inner();
    let destroy = client
        .create_capsule(make(2, TimeoutAction::Destroy))
        .await
        .unwrap()
        .into_inner();
    let pinged = client
        .create_capsule(make(2, TimeoutAction::Destroy))
        .await
        .unwrap()
        .into_inner();
    let r = |id: &str| CapsuleRef { id: id.to_string() };
    for _ in 0..10 {
        client.ping(r(&pinged.id)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let p = client.get_capsule(r(&pause.id)).await.unwrap().into_inner();
    assert_eq!(p.state, CapsuleState::Paused as i32);
    let d = client.get_capsule(r(&destroy.id)).await.unwrap_err();
    assert_eq!(d.code(), Code::NotFound);
    let k = client
        .get_capsule(r(&pinged.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.state, CapsuleState::Running as i32, "pings keep it alive");
    assert_eq!(
        client.ping(r(&pause.id)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    for id in [&pause.id, &pinged.id] {
        client.destroy_capsule(r(id)).await.unwrap();
    }
    agent.stop().await;
}

#[tokio::test]
async fn terminals_attach_input_resize_and_reattach() {
    use wrenn_proto::agent::v1::{exec_event, PtyAttachRequest, PtyInputRequest, PtyResizeRequest};
    let mut agent = TestAgent::start(1, 600..=699).await;
    let client = &mut agent.client;
    let c = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let attach = |cmd: &str| PtyAttachRequest {
        capsule_id: c.id.clone(),
        tag: "term".into(),
        cmd: cmd.into(),
        args: if cmd.is_empty() {
            vec![]
        } else {
            vec!["--norc".into(), "-i".into()]
        },
        cols: 80,
        rows: 24,
        ..Default::default()
    };
    let input = |data: &[u8]| PtyInputRequest {
        capsule_id: c.id.clone(),
        tag: "term".into(),
        data: data.to_vec(),
    };
    let mut term = client
        .pty_attach(attach("/bin/bash"))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        term.message().await.unwrap().unwrap().event,
        Some(exec_event::Event::Start(_))
    ));
    client
        .pty_resize(PtyResizeRequest {
            capsule_id: c.id.clone(),
            tag: "term".into(),
            cols: 120,
            rows: 40,
        })
        .await
        .unwrap();
    client.pty_input(input(b"stty size\n")).await.unwrap();
    let mut screen = Vec::new();
    while !String::from_utf8_lossy(&screen).contains("40 120") {
        match term.message().await.unwrap().and_then(|m| m.event) {
            Some(exec_event::Event::Pty(b)) => screen.extend(b),
            Some(_) => {}
            None => panic!("terminal ended early: {}", String::from_utf8_lossy(&screen)),
        }
    }
    drop(term);

    // Reattach by tag: the screen so far is replayed.
    let mut again = client.pty_attach(attach("")).await.unwrap().into_inner();
    let mut replay = Vec::new();
    assert!(matches!(
        again.message().await.unwrap().unwrap().event,
        Some(exec_event::Event::Start(_))
    ));
    while !String::from_utf8_lossy(&replay).contains("40 120") {
        if let Some(exec_event::Event::Pty(b)) = again.message().await.unwrap().unwrap().event {
            replay.extend(b);
        }
    }
    client.pty_input(input(b"exit\n")).await.unwrap();
    let mut end = None;
    while let Some(m) = again.message().await.unwrap() {
        if let Some(exec_event::Event::End(e)) = m.event {
            end = Some(e);
        }
    }
    assert_eq!(end.expect("the shell ended").exit_code, 0);

    // Bad requests.
    let mut no_tag = attach("/bin/bash");
    no_tag.tag.clear();
    assert_eq!(
        client.pty_attach(no_tag).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let zero = client
        .pty_resize(PtyResizeRequest {
            capsule_id: c.id.clone(),
            tag: "term".into(),
            cols: 0,
            rows: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    let mut ghost = input(b"x");
    ghost.tag = "ghost".into();
    assert_eq!(
        client.pty_input(ghost).await.unwrap_err().code(),
        Code::NotFound
    );

    client
        .destroy_capsule(CapsuleRef { id: c.id.clone() })
        .await
        .unwrap();
    agent.stop().await;
}

fn r(id: &str) -> CapsuleRef {
    CapsuleRef { id: id.to_string() }
}

/// Runs `script` in `capsule` with bash and returns (stdout, exit code).
async fn bash(
    client: &mut AgentClient<tonic::transport::Channel>,
    capsule: &str,
    script: &str,
) -> (String, i32) {
    let out = client
        .exec(ExecRequest {
            capsule_id: capsule.into(),
            cmd: "/bin/bash".into(),
            args: vec!["-c".into(), script.into()],
            user: "root".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.exit_code,
    )
}

#[tokio::test]
async fn shapes_disks_and_cgroup_limits() {
    let mut agent = TestAgent::start(2, 1000..=1049).await;
    let client = &mut agent.client;
    let create = |vcpus, memory_mib, disk_mib| CreateCapsuleRequest {
        template: "minimal".into(),
        vcpus,
        memory_mib,
        disk_mib,
        ..Default::default()
    };
    // Shapes and sizes out of range, and a disk smaller than the template's.
    for bad in [
        create(64, 0, 0),
        create(0, 100, 0),
        create(0, 257, 0),
        create(0, 0, 512),
    ] {
        let err = client.create_capsule(bad.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    assert!(
        agent.manager.list().is_empty(),
        "a refused create leaves nothing"
    );

    // 2 vCPUs, 512 MiB (a shape of the default set), 3 GiB of disk: a snapshot of that shape is made once, then restored.
    let c = client
        .create_capsule(create(2, 512, 3072))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((c.vcpus, c.memory_mib, c.disk_mib), (2, 512, 3072));
    let (out, code) = bash(
        client,
        &c.id,
        "nproc; awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo; \
         df -B1M --output=size / | tail -1",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<u64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(lines[0], 2, "{out}");
    assert!((400..=512).contains(&lines[1]), "guest RAM {out}");
    assert!(
        (2900..=3072).contains(&lines[2]),
        "root filesystem size {out}"
    );
    // The disk is enforced: the guest cannot hold more than its size.
    let (out, code) = bash(client, &c.id, "fallocate -l 4G /big 2>&1; echo rc=$?").await;
    assert_eq!(code, 0);
    assert!(
        out.contains("No space left") && !out.contains("rc=0"),
        "{out}"
    );

    // The VMM runs in the capsule's own groups, capped at its vCPUs and RAM plus overhead.
    let rec = agent.manager.get(&c.id).unwrap();
    let pid = rec.vmm_pid.unwrap();
    let group = wrenn_vmm::cgroup::Cgroup::named(&format!("wrenn-{}", rec.slot));
    if let Some(group) = &group {
        assert!(group.contains(pid), "QEMU {pid} is in {group:?}");
        let limits = group.limits().unwrap();
        assert_eq!(limits.cpus, 2);
        assert_eq!(
            limits.memory_bytes,
            (512 + wrenn_agent::capsule::VMM_OVERHEAD_MIB) << 20
        );
    }
    // Paused, the capsule keeps its shape and disk; resumed, its VMM rejoins its groups.
    client.pause_capsule(r(&c.id)).await.unwrap();
    client.resume_capsule(r(&c.id)).await.unwrap();
    let (out, _) = bash(client, &c.id, "nproc; df -B1M --output=size / | tail -1").await;
    assert_eq!(out.split_whitespace().next(), Some("2"), "{out}");
    if let Some(group) = &group {
        let pid = agent.manager.get(&c.id).unwrap().vmm_pid.unwrap();
        assert!(group.contains(pid));
    }

    // The same shape again restores the kept snapshot (one shape folder).
    let d = client
        .create_capsule(CreateCapsuleRequest {
            egress: true,
            ..create(2, 512, 0)
        })
        .await
        .unwrap()
        .into_inner();
    // The guest's only name server is its slot's resolver.
    let (out, _) = bash(client, &d.id, "grep ^nameserver /etc/resolv.conf").await;
    assert_eq!(out.trim(), "nameserver 169.254.0.22");
    // Made once for this image (shapes of an older build of it may still be there).
    let inputs = std::fs::read_to_string(images_dir().join("minimal/inputs.sha256")).unwrap();
    let this_image = format!("{}-2c-512m", &inputs.trim()[..12]);
    let shapes = std::fs::read_dir(images_dir().join("minimal/shapes"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() == this_image)
        .count();
    assert_eq!(shapes, 1);
    assert_eq!(d.disk_mib, 2048, "the template's disk by default");

    for id in [&c.id, &d.id] {
        client.destroy_capsule(r(id)).await.unwrap();
    }
    if let Some(group) = &group {
        assert!(group.dirs.iter().all(|d| !d.exists()), "groups removed");
    }
    agent.stop().await;
}

#[tokio::test]
async fn snapshot_templates_and_watch() {
    use wrenn_proto::agent::v1::{
        watch_dir_event, DeleteTemplateRequest, FsEventType, ListTemplatesRequest,
        SnapshotCapsuleRequest, TemplateKind, WatchDirRequest, WriteFileRequest,
    };
    let mut agent = TestAgent::start(2, 1050..=1099).await;
    let client = &mut agent.client;
    let c = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Watch: `started`, then the changes a write makes.
    bash(client, &c.id, "mkdir -p /tmp/w && chmod 777 /tmp/w").await;
    let mut watch = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client.watch_dir(WatchDirRequest {
            capsule_id: c.id.clone(),
            path: "/tmp/w".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("WatchDir answers")
    .unwrap()
    .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), watch.message())
        .await
        .expect("the watch starts")
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.event,
        Some(watch_dir_event::Event::Started(_))
    ));
    client
        .write_file(WriteFileRequest {
            capsule_id: c.id.clone(),
            path: "/tmp/w/hello.txt".into(),
            content: b"hi".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&(FsEventType::Create as i32)) && seen.len() < 10 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
            .await
            .expect("a watch event")
            .unwrap()
            .unwrap();
        // Uploads go through a temporary file renamed into place.
        if let Some(watch_dir_event::Event::Fs(fs)) = ev.event {
            if fs.name == "hello.txt" {
                seen.push(fs.r#type);
            }
        }
    }
    assert!(seen.contains(&(FsEventType::Create as i32)), "{seen:?}");
    drop(watch);
    let missing = client
        .watch_dir(WatchDirRequest {
            capsule_id: c.id.clone(),
            path: "/no/such/dir".into(),
            ..Default::default()
        })
        .await;
    let code = match missing {
        Err(e) => e.code(),
        Ok(s) => s.into_inner().message().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::NotFound);

    // A snapshot keeps the disk and the running processes; the source stays paused.
    bash(
        client,
        &c.id,
        "echo kept > /root/marker; nohup sleep 777 >/dev/null 2>&1 &",
    )
    .await;
    let name = format!("test-snap-{}", std::process::id());
    let snap = |name: &str, overwrite| SnapshotCapsuleRequest {
        capsule_id: c.id.clone(),
        name: name.into(),
        overwrite,
    };
    let t = client
        .snapshot_capsule(snap(&name, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.kind, TemplateKind::Snapshot as i32);
    assert_eq!((t.base.as_str(), t.vcpus), ("minimal", c.vcpus));
    assert!(t.size_bytes > 0 && t.disk_bytes >= 2 << 30, "{t:?}");
    let source = client.get_capsule(r(&c.id)).await.unwrap().into_inner();
    assert_eq!(source.state, CapsuleState::Paused as i32);
    let listed = client
        .list_templates(ListTemplatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .templates;
    assert!(listed.iter().any(|x| x.name == name));
    assert!(listed
        .iter()
        .any(|x| x.name == "minimal" && x.kind == TemplateKind::Base as i32));

    let d = client
        .create_capsule(CreateCapsuleRequest {
            template: name.clone(),
            template_kind: TemplateKind::Snapshot as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (out, _) = bash(
        client,
        &d.id,
        "cat /root/marker; pgrep -fx 'sleep 777' | wc -l",
    )
    .await;
    assert_eq!(out, "kept\n1\n");
    // Its capsules have its shape.
    let other_shape = client
        .create_capsule(CreateCapsuleRequest {
            template: name.clone(),
            template_kind: TemplateKind::Snapshot as i32,
            vcpus: c.vcpus + 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other_shape.code(), Code::InvalidArgument);
    // Only as the kind the control plane resolved: a snapshot template is no base template.
    let as_base = client
        .create_capsule(CreateCapsuleRequest {
            template: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(as_base.code(), Code::NotFound);

    // Names: taken, in use, a base template, invalid.
    let taken = client
        .snapshot_capsule(snap(&name, false))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let in_use = client
        .snapshot_capsule(snap(&name, true))
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    let base = client
        .snapshot_capsule(snap("minimal", true))
        .await
        .unwrap_err();
    assert_eq!(base.code(), Code::FailedPrecondition);
    let invalid = client
        .snapshot_capsule(snap("../x", false))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let del = |name: &str| DeleteTemplateRequest { name: name.into() };
    assert_eq!(
        client.delete_template(del(&name)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        client
            .delete_template(del("minimal"))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );

    // Once its capsule is gone, it can be replaced and deleted.
    client.destroy_capsule(r(&d.id)).await.unwrap();
    client.snapshot_capsule(snap(&name, true)).await.unwrap();
    client.delete_template(del(&name)).await.unwrap();
    assert_eq!(
        client.delete_template(del(&name)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(!images_dir().join(&name).exists());
    // The source resumes with its file.
    client.resume_capsule(r(&c.id)).await.unwrap();
    let (out, _) = bash(client, &c.id, "cat /root/marker").await;
    assert_eq!(out, "kept\n");
    client.destroy_capsule(r(&c.id)).await.unwrap();
    agent.stop().await;
}
