//! Processes, files and terminals through the agent.

use tonic::Code;
use wrenn_proto::agent::v1::{CapsuleRef, CreateCapsuleRequest, ExecRequest};

use super::TestAgent;

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
