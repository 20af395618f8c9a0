//! process.Process against a real envd on loopback.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn start_streams_output_then_end() {
    let envd = Envd::start().await;
    let run = envd
        .run("echo out; echo err >&2; exit 3", json!({}), &[])
        .await;
    assert!(
        run.first.get("start").is_some(),
        "first event is start: {:?}",
        run.first
    );
    assert!(run.pid > 0);
    assert_eq!(run.stdout, b"out\n");
    assert_eq!(run.stderr, b"err\n");
    assert_eq!(run.end["exitCode"], 3);
    assert_eq!(run.end["exited"], true);
    assert_eq!(run.end["status"], "exit status 3");
    assert_eq!(run.stream_end, json!({}));
}

#[tokio::test]
async fn output_is_complete_and_ordered() {
    let envd = Envd::start().await;
    let run = envd.run("seq 1 200000", json!({}), &[]).await;
    let want: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    assert_eq!(run.stdout_str(), want);
    assert_eq!(run.exit_code(), 0);
}

#[tokio::test]
async fn env_cwd_and_user() {
    let envd = Envd::start().await;
    let dir = scratch();
    let cwd = dir.path().to_str().unwrap();
    let run = envd
        .run(
            "echo $FOO:$HOME:$USER:$(pwd):$(id -u)",
            json!({"process": {"envs": {"FOO": "bar"}, "cwd": cwd}}),
            &[],
        )
        .await;
    assert_eq!(run.stdout_str(), format!("bar:/root:root:{cwd}:0\n"));

    let run = envd
        .run(
            "echo $HOME:$USER:$(id -un):$(pwd)",
            json!({}),
            &[("authorization", &basic("user"))],
        )
        .await;
    assert_eq!(run.stdout_str(), "/home/user:user:user:/home/user\n");

    // Relative cwd resolves under the user's home; ~ expands.
    let run = envd
        .run(
            "pwd",
            json!({"process": {"cwd": "~"}}),
            &[("authorization", &basic("user"))],
        )
        .await;
    assert_eq!(run.stdout_str(), "/home/user\n");
}

#[tokio::test]
async fn bad_start_requests_get_connect_errors() {
    let envd = Envd::start().await;
    let (_, end) = envd
        .stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/true", "cwd": "/does/not/exist"}}),
            &[],
        )
        .await;
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    assert!(end["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/does/not/exist"));

    let (_, end) = envd
        .stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/true"}}),
            &[("authorization", &basic("no-such-user"))],
        )
        .await;
    assert_eq!(end["error"]["code"], "unauthenticated", "{end}");

    let (_, end) = envd
        .stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/no/such/binary"}}),
            &[],
        )
        .await;
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");

    let (_, end) = envd.stream("/process.Process/Start", json!({}), &[]).await;
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");

    let (_, end) = envd
        .stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/true", "envs": {"A=B": "x"}}}),
            &[],
        )
        .await;
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
}

#[tokio::test]
async fn stdin_pipe_send_input_and_close() {
    let envd = Envd::start().await;
    let mut call = envd
        .open_stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/cat"}, "tag": "catter"}),
            &[],
        )
        .await;
    let start = call.next().await.unwrap();
    let pid = start["event"]["start"]["pid"].as_u64().unwrap();

    let (status, _) = envd
        .unary(
            "/process.Process/SendInput",
            json!({"process": {"pid": pid}, "input": {"stdin": b64(b"hello ")}}),
        )
        .await;
    assert_eq!(status, 200);
    // By tag too.
    let (status, _) = envd
        .unary(
            "/process.Process/SendInput",
            json!({"process": {"tag": "catter"}, "input": {"stdin": b64(b"world")}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = envd
        .unary(
            "/process.Process/CloseStdin",
            json!({"process": {"pid": pid}}),
        )
        .await;
    assert_eq!(status, 200);
    let mut msgs = vec![start];
    while let Some(m) = call.next().await {
        msgs.push(m);
    }
    let run = Run::from_messages(msgs, call.end.clone().unwrap());
    assert_eq!(run.stdout, b"hello world");
    assert_eq!(run.exit_code(), 0);
}

#[tokio::test]
async fn stdin_false_gives_dev_null() {
    let envd = Envd::start().await;
    let run = envd
        .run("cat; echo done", json!({"stdin": false}), &[])
        .await;
    assert_eq!(run.stdout_str(), "done\n");
}

#[tokio::test]
async fn stream_input_client_stream() {
    let envd = Envd::start().await;
    let mut call = envd
        .open_stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/cat"}}),
            &[],
        )
        .await;
    let pid = call.next().await.unwrap()["event"]["start"]["pid"]
        .as_u64()
        .unwrap();
    let mut body = Vec::new();
    body.extend(envelope(
        0,
        json!({"start": {"process": {"pid": pid}}})
            .to_string()
            .as_bytes(),
    ));
    for part in ["a", "b", "c"] {
        body.extend(envelope(
            0,
            json!({"data": {"input": {"stdin": b64(part.as_bytes())}}})
                .to_string()
                .as_bytes(),
        ));
    }
    body.extend(envelope(0, json!({"keepalive": {}}).to_string().as_bytes()));
    let resp = envd
        .client
        .post(envd.url("/process.Process/StreamInput"))
        .header("content-type", "application/connect+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    // Exactly one message ({}), then the end-stream frame.
    assert_eq!(
        &bytes[..],
        &[envelope(0, b"{}"), envelope(2, b"{}")].concat()[..]
    );
    envd.unary(
        "/process.Process/CloseStdin",
        json!({"process": {"pid": pid}}),
    )
    .await;
    let mut out = Vec::new();
    while let Some(m) = call.next().await {
        if let Some(s) = m["event"]["data"]["stdout"].as_str() {
            out.extend(unb64(s));
        }
    }
    assert_eq!(out, b"abc");
}

#[tokio::test]
async fn list_connect_signal_and_late_connect() {
    let envd = Envd::start().await;
    let mut call = envd
        .open_stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/bash", "args": ["-c", "echo first; sleep 30"]}, "tag": "sleeper", "stdin": false}),
            &[],
        )
        .await;
    let pid = call.next().await.unwrap()["event"]["start"]["pid"]
        .as_u64()
        .unwrap();
    // Wait for the first output so the replay has something.
    let first = call.next().await.unwrap();
    assert_eq!(
        unb64(first["event"]["data"]["stdout"].as_str().unwrap()),
        b"first\n"
    );
    drop(call); // detaching does not kill the process

    let (status, list) = envd.unary("/process.Process/List", json!({})).await;
    assert_eq!(status, 200);
    let procs = list["processes"].as_array().unwrap();
    let p = procs.iter().find(|p| p["pid"] == pid).expect("listed");
    assert_eq!(p["tag"], "sleeper");
    assert_eq!(p["config"]["cmd"], "/bin/bash");
    assert_eq!(p["config"]["args"][1], "echo first; sleep 30");

    // Reattach by tag: start{pid}, replayed output, then (after the kill) the end.
    let mut attached = envd
        .open_stream(
            "/process.Process/Connect",
            json!({"process": {"tag": "sleeper"}}),
            &[],
        )
        .await;
    let m = attached.next().await.unwrap();
    assert_eq!(m["event"]["start"]["pid"], pid);
    let m = attached.next().await.unwrap();
    assert_eq!(
        unb64(m["event"]["data"]["stdout"].as_str().unwrap()),
        b"first\n"
    );

    let (status, _) = envd
        .unary(
            "/process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!(status, 200);
    let mut end = None;
    while let Some(m) = attached.next().await {
        if let Some(e) = m["event"].get("end") {
            end = Some(e.clone());
        }
    }
    let end = end.expect("end event");
    assert_eq!(end["exitCode"], -1);
    assert_eq!(end["status"], "signal: killed");
    assert_eq!(attached.end, Some(json!({})));

    // Gone from List, signals now fail with not_found, a late Connect gets start then end.
    let (_, list) = envd.unary("/process.Process/List", json!({})).await;
    assert!(!list["processes"]
        .as_array()
        .map(|a| a.iter().any(|p| p["pid"] == pid))
        .unwrap_or(false));
    let (status, err) = envd
        .unary(
            "/process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGTERM"}),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")));
    let (msgs, _) = envd
        .stream(
            "/process.Process/Connect",
            json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert!(msgs.first().unwrap()["event"].get("start").is_some());
    assert!(msgs.last().unwrap()["event"].get("end").is_some());

    let (status, err) = envd
        .unary(
            "/process.Process/SendSignal",
            json!({"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")));
    let (_, end) = envd
        .stream(
            "/process.Process/Connect",
            json!({"process": {"pid": 999999}}),
            &[],
        )
        .await;
    assert_eq!(end["error"]["code"], "not_found");
}

#[tokio::test]
async fn sigterm_ends_with_terminated() {
    let envd = Envd::start().await;
    let mut call = envd
        .open_stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/sleep", "args": ["30"]}}),
            &[],
        )
        .await;
    let pid = call.next().await.unwrap()["event"]["start"]["pid"]
        .as_u64()
        .unwrap();
    envd.unary(
        "/process.Process/SendSignal",
        json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGTERM"}),
    )
    .await;
    let mut msgs = Vec::new();
    while let Some(m) = call.next().await {
        msgs.push(m);
    }
    let run = Run::from_messages(msgs, json!({}));
    assert_eq!(run.end["status"], "signal: terminated");
    let (status, _) = envd
        .unary(
            "/process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_UNSPECIFIED"}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn pty_input_resize_and_ctrl_d() {
    let envd = Envd::start().await;
    let mut call = envd
        .open_stream(
            "/process.Process/Start",
            json!({"process": {"cmd": "/bin/bash", "args": ["--norc", "--noprofile", "-i"], "envs": {"TERM": "xterm", "PS1": "$ "}}, "pty": {"size": {"cols": 80, "rows": 24}}}),
            &[],
        )
        .await;
    let pid = call.next().await.unwrap()["event"]["start"]["pid"]
        .as_u64()
        .unwrap();
    let (status, _) = envd
        .unary(
            "/process.Process/Update",
            json!({"process": {"pid": pid}, "pty": {"size": {"cols": 132, "rows": 43}}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = envd
        .unary(
            "/process.Process/SendInput",
            json!({"process": {"pid": pid}, "input": {"pty": b64(b"stty size; tty\n")}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, err) = envd
        .unary(
            "/process.Process/CloseStdin",
            json!({"process": {"pid": pid}}),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("failed_precondition"))
    );
    // Ctrl-D at the prompt ends the shell.
    let mut out = Vec::new();
    let mut sent_eof = false;
    let mut end = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // A Ctrl-D typed while bash is still between commands (the terminal in canonical mode)
    // can be lost when readline switches modes: it is typed again after a quiet second.
    let ctrl_d = || {
        envd.unary(
            "/process.Process/SendInput",
            json!({"process": {"pid": pid}, "input": {"pty": b64(b"\x04")}}),
        )
    };
    loop {
        let next = tokio::time::timeout(Duration::from_secs(1), call.next()).await;
        let m = match next {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) if tokio::time::Instant::now() >= deadline => break,
            Err(_) => {
                if sent_eof {
                    ctrl_d().await;
                }
                continue;
            }
        };
        if let Some(s) = m["event"]["data"]["pty"].as_str() {
            out.extend(unb64(s));
            let text = String::from_utf8_lossy(&out);
            if !sent_eof && text.contains("43 132") && text.contains("/dev/pts/") {
                sent_eof = true;
                ctrl_d().await;
            }
        }
        assert!(
            m["event"]["data"].get("stdout").is_none(),
            "PTY output comes as pty"
        );
        if let Some(e) = m["event"].get("end") {
            end = Some(e.clone());
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("43 132"), "stty size after resize: {text}");
    assert!(sent_eof, "{text}");
    let end = end.expect("shell ended on Ctrl-D");
    // proto3 JSON omits zero values: exitCode 0 is absent.
    assert_eq!(end["exitCode"].as_i64().unwrap_or(0), 0, "{end}");
    assert_eq!(end["exited"], true);
}

#[tokio::test]
async fn deadline_kills_and_keepalives_flow() {
    let envd = Envd::start().await;
    let run = envd
        .run(
            "echo start; sleep 30",
            json!({}),
            &[
                ("connect-timeout-ms", "2500"),
                ("keepalive-ping-interval", "1"),
            ],
        )
        .await;
    assert_eq!(run.stdout_str(), "start\n");
    assert_eq!(run.end["status"], "signal: killed");
    assert!(run.keepalives >= 1, "keepalives: {}", run.keepalives);
    let run = envd
        .run("exit 0", json!({}), &[("connect-timeout-ms", "nonsense")])
        .await;
    assert_eq!(run.stream_end["error"]["code"], "invalid_argument");
}

#[tokio::test]
async fn many_concurrent_processes() {
    let envd = std::sync::Arc::new(Envd::start().await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let envd = envd.clone();
        tasks.push(tokio::spawn(async move {
            let run = envd
                .run(
                    &format!("for j in 1 2 3; do echo {i}-$j; done; exit {}", i % 7),
                    json!({}),
                    &[],
                )
                .await;
            assert_eq!(run.stdout_str(), format!("{i}-1\n{i}-2\n{i}-3\n"));
            assert_eq!(run.exit_code(), (i % 7) as i64);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn zombie_children(ppid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.trim().to_string()) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] == "Z" && fields[1] == ppid.to_string() {
            out.push(stat);
        }
    }
    out
}

#[tokio::test]
async fn orphans_are_reaped() {
    let envd = Envd::start().await;
    // The background child outlives bash and becomes envd's (the subreaper's) child.
    let run = envd
        .run("(sleep 0.3 &) ; echo spawned", json!({}), &[])
        .await;
    assert_eq!(run.stdout_str(), "spawned\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let zombies = zombie_children(envd.pid());
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
}

#[tokio::test]
async fn binary_proto_codec_works() {
    use prost::Message;
    use wrenn_proto::process::{process_event::Event, ProcessConfig, StartRequest, StartResponse};
    let envd = Envd::start().await;
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/echo".into(),
            args: vec!["proto".into()],
            ..Default::default()
        }),
        stdin: Some(false),
        ..Default::default()
    };
    let resp = envd
        .client
        .post(envd.url("/process.Process/Start"))
        .header("content-type", "application/connect+proto")
        .body(envelope(0, &req.encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/connect+proto");
    let bytes = resp.bytes().await.unwrap();
    let mut rest = &bytes[..];
    let mut stdout = Vec::new();
    let mut saw_end = false;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let (flags, payload) = (rest[0], &rest[5..5 + len]);
        rest = &rest[5 + len..];
        if flags & 2 != 0 {
            assert_eq!(payload, b"{}");
            continue;
        }
        match StartResponse::decode(payload)
            .unwrap()
            .event
            .unwrap()
            .event
            .unwrap()
        {
            Event::Data(d) => {
                if let Some(wrenn_proto::process::process_event::data_event::Output::Stdout(b)) =
                    d.output
                {
                    stdout.extend(b);
                }
            }
            Event::End(e) => {
                saw_end = true;
                assert_eq!(e.exit_code, 0);
            }
            _ => {}
        }
    }
    assert!(saw_end);
    assert_eq!(stdout, b"proto\n");

    // Unary with the proto codec.
    let resp = envd
        .client
        .post(envd.url("/process.Process/List"))
        .header("content-type", "application/proto")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/proto");
}
