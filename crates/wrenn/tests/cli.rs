//! The CLI as a user drives it, against a real `wrenn up` (control plane + host agent, real
//! microVMs): create, exec, cp both ways, an interactive shell fed from a pipe, pause/resume,
//! snapshot, a capsule from the snapshot, destroy, template delete, and the error lines.
//! Needs root, nftables, QEMU and built images (`WRENN_IMAGES`, default
//! `/var/tmp/wrenn/images`); uses network slots 2200–2299.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{images_dir, images_for};
use nix::{sys::signal, unistd::Pid};

const BIN: &str = env!("CARGO_BIN_EXE_wrenn");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `wrenn up` in a folder of its own; stopped with SIGINT and removed when dropped.
struct Server {
    child: Child,
    root: tempfile::TempDir,
    url: String,
    key: String,
}

impl Server {
    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("up.log")).unwrap_or_default()
    }

    fn start() -> Server {
        assert!(
            images_dir().join("minimal").is_dir(),
            "no guest images in {} (run `make images` or set WRENN_IMAGES)",
            images_dir().display()
        );
        let root = tempfile::Builder::new()
            .prefix("wrenn-cli-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let data = root.path().join("data");
        let images = images_for(&data);
        let log = std::fs::File::create(root.path().join("up.log")).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(BIN)
            .arg("up")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &addr, "--slots", "2200-2299"])
            .env("WRENN_IMAGES", &images)
            .env_remove("WRENN_TEMPLATES")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            root,
            url: format!("http://{addr}"),
            key: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        while !healthy(&addr) {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("wrenn up exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "wrenn up not healthy after 180 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server.key = std::fs::read_to_string(server.data().join("admin-api-key"))
            .unwrap()
            .trim()
            .to_string();
        server
    }

    /// SIGINT, then waits for a clean exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = signal::kill(pid, signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The CLI with this server's URL and key.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, &self.key, None)
    }

    fn cli_with(&self, args: &[&str], key: &str, stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .env("WRENN_BASE_URL", &self.url)
            .env("WRENN_API_KEY", key)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "$ wrenn {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(2000)
                .collect::<String>(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The CLI, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "wrenn {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// With `--json` after the verb (before any command to run).
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.insert(2.min(all.len()), "--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

impl Drop for Server {
    /// After a failure: destroy what is left (so no slot outlives the folder), then stop.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let listed = self.cli(&["capsule", "list", "--json"]);
        if let Ok(serde_json::Value::Array(all)) = serde_json::from_slice(&listed.stdout) {
            for c in all {
                if let Some(id) = c["id"].as_str() {
                    self.cli(&["capsule", "destroy", id]);
                }
            }
        }
        self.stop();
    }
}

fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// The error line of a failed run: exactly one line, `error: CODE: …`.
fn error_line(out: &Output, code: &str) {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    assert!(
        lines[0].starts_with(&format!("error: {code}: ")),
        "{stderr:?}"
    );
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(path, &data).unwrap();
    data
}

/// wrenn-client against the same server: processes, streamed exec, files, metrics, a PTY.
async fn client_calls(server: &Server, id: &str) {
    use wrenn_client::{Client, Exec, FileType, PtyEvent, PtyStart, StreamEvent};
    let client = Client::new(&server.url, &server.key).unwrap();
    client.ping_capsule(id).await.unwrap();
    assert!(client
        .get_capsule("cl-nope")
        .await
        .unwrap_err()
        .is_not_found());

    // Background processes: start, list, kill by tag.
    let bg = client
        .exec_background(id, &Exec::shell("sleep 300").tag("sleeper"))
        .await
        .unwrap();
    assert!(bg.pid > 0);
    assert_eq!(bg.tag, "sleeper");
    let procs = client.list_processes(id).await.unwrap();
    assert!(procs.iter().any(|p| p.tag == "sleeper"), "{procs:?}");
    client.kill_process(id, "sleeper").await.unwrap();

    // A streamed exec, event by event.
    let mut stream = client
        .exec_stream(id, &Exec::shell("echo a; echo b >&2; exit 2"))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(ev) = stream.next().await {
        events.push(ev.unwrap());
    }
    assert!(
        matches!(events.first(), Some(StreamEvent::Start { .. })),
        "{events:?}"
    );
    assert!(
        events.contains(&StreamEvent::Stdout("a\n".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&StreamEvent::Stderr("b\n".into())),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&StreamEvent::Exit { exit_code: 2 }));

    // Files.
    let dir = client.make_dir(id, "/tmp/api/sub").await.unwrap();
    assert_eq!(dir.kind, FileType::Directory);
    client
        .write_file_bytes(id, "/tmp/api/f.txt", &b"contents"[..])
        .await
        .unwrap();
    assert_eq!(
        client.read_file_bytes(id, "/tmp/api/f.txt").await.unwrap(),
        b"contents"
    );
    let mut names: Vec<String> = client
        .list_files(id, "/tmp/api", 1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["f.txt", "sub"]);
    client.remove_file(id, "/tmp/api").await.unwrap();
    let gone = client.list_files(id, "/tmp/api", 1).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone:?}");

    let m = client.metrics(id, Some("5m")).await.unwrap();
    assert_eq!(m.sandbox_id, id);

    // A PTY running a command to its end.
    let mut pty = client
        .pty_start(
            id,
            &PtyStart {
                cmd: Some("/bin/sh".into()),
                args: vec!["-c".into(), "echo pty-$((2*3)); exit 6".into()],
                ..PtyStart::default()
            },
        )
        .await
        .unwrap();
    assert!(pty.tag.starts_with("pty-"), "{}", pty.tag);
    let mut output = Vec::new();
    let code = loop {
        match pty.next().await {
            Some(Ok(PtyEvent::Output(b))) => output.extend_from_slice(&b),
            Some(Ok(PtyEvent::Exit { exit_code })) => break exit_code,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 6);
    assert!(String::from_utf8_lossy(&output).contains("pty-6"));
}

#[test]
fn cli_drives_a_real_wrenn_up() {
    let mut server = Server::start();
    let work = server.root.path().join("work");
    std::fs::create_dir(&work).unwrap();

    // Errors first: a bad key, an unknown capsule.
    let out = server.cli_with(&["capsule", "list"], "wrn_0000", None);
    error_line(&out, "unauthorized");
    error_line(
        &server.cli(&["capsule", "get", "cl-doesnotexist"]),
        "not_found",
    );
    error_line(
        &server.cli(&["capsule", "exec", "cl-doesnotexist", "--", "true"]),
        "not_found",
    );

    // Create; the id is the only output.
    let id = server
        .ok(&[
            "capsule",
            "create",
            "--template",
            "minimal",
            "--env",
            "GREETING=hello",
        ])
        .trim()
        .to_string();
    assert!(id.starts_with("cl-"), "{id:?}");
    let listed = server.ok(&["capsule", "list"]);
    let row = listed.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.contains("running") && row.contains("minimal"), "{row}");
    let all = server.json(&["capsule", "list"]);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == id.as_str()));
    assert_eq!(server.json(&["capsule", "get", &id])["status"], "running");

    // The client library's calls the verbs do not make.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(client_calls(&server, &id));

    // Exec: streams to ours, the exit code is ours.
    let out = server.cli(&[
        "capsule",
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; echo $GREETING; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\nhello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = server.ok(&[
        "capsule",
        "exec",
        &id,
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "--timeout",
        "30",
        "--",
        "sh",
        "-c",
        "echo $FOO; pwd",
    ]);
    assert_eq!(out, "bar\n/tmp\n");
    let v = server.json(&["capsule", "exec", &id, "--", "printf", "\\377"]);
    assert_eq!(v["encoding"], "base64");
    assert_eq!(v["stdout"], "/w==");

    // cp: 5 MiB in and out, byte for byte.
    let local = work.join("big.bin");
    let data = random_file(&local, 5 << 20);
    let remote = format!("{id}:/tmp/in/big.bin");
    server.ok(&["capsule", "cp", local.to_str().unwrap(), &remote]);
    let back = work.join("back.bin");
    server.ok(&["capsule", "cp", &remote, back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data, "the copy differs");
    // Into a folder keeps the name; a missing file is not_found and leaves nothing behind.
    let dir = work.join("dir");
    std::fs::create_dir(&dir).unwrap();
    server.ok(&["capsule", "cp", &remote, dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::metadata(dir.join("big.bin")).unwrap().len(),
        5 << 20
    );
    let missing = format!("{id}:/tmp/nope");
    error_line(
        &server.cli(&["capsule", "cp", &missing, dir.to_str().unwrap()]),
        "not_found",
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let size = server.ok(&[
        "capsule",
        "exec",
        &id,
        "--",
        "stat",
        "-c",
        "%s",
        "/tmp/in/big.bin",
    ]);
    assert_eq!(size.trim(), (5 << 20).to_string());

    // A shell fed from a pipe.
    let out = server.cli_with(
        &["capsule", "shell", &id],
        &server.key,
        Some(b"echo $((6*7)); exit 3\n"),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("42"));

    // The end of piped input ends the shell (as Ctrl-D), even mid-line.
    let out = server.cli_with(
        &["capsule", "shell", &id],
        &server.key,
        Some(b"echo piped-$((1+1))"),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("piped-2"));

    // Detach (SIGTERM) and reattach by tag: the shell kept its state.
    let mut first = Command::new(BIN)
        .args(["capsule", "shell", &id])
        .env("WRENN_BASE_URL", &server.url)
        .env("WRENN_API_KEY", &server.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = first.stdin.take().unwrap();
    input.write_all(b"export MARK=kept-$((2+3))\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    signal::kill(Pid::from_raw(first.id() as i32), signal::Signal::SIGTERM).unwrap();
    let out = first.wait_with_output().unwrap();
    drop(input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tag = stderr
        .split("--tag ")
        .nth(1)
        .and_then(|t| t.split('`').next())
        .unwrap_or_else(|| panic!("no reattach hint: {stderr:?}"))
        .to_string();
    let out = server.cli_with(
        &["capsule", "shell", &id, "--tag", &tag],
        &server.key,
        Some(b"echo $MARK; exit 4\n"),
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept-5"));

    // Pause and resume keep the files.
    assert!(server.ok(&["capsule", "pause", &id]).contains("paused"));
    error_line(
        &server.cli(&["capsule", "exec", &id, "--", "true"]),
        "invalid_state",
    );
    assert!(server.ok(&["capsule", "resume", &id]).contains("running"));

    // Snapshot → template → a capsule from it, with the file.
    let name = format!("cli-{}", &id[3..11]);
    let made = server.ok(&["snapshot", "create", &id, "--name", &name]);
    assert_eq!(made.trim(), name);
    let templates = server.ok(&["template", "list"]);
    let row = templates.lines().find(|l| l.starts_with(&name)).unwrap();
    assert!(row.contains("snapshot"), "{row}");
    assert!(templates.lines().any(|l| l.starts_with("minimal ")));
    let kinds = server.json(&["template", "list", "--type", "snapshot"]);
    assert!(kinds
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["type"] == "snapshot"));
    let id2 = server
        .ok(&["capsule", "create", "--template", &name])
        .trim()
        .to_string();
    let size = server.ok(&[
        "capsule",
        "exec",
        &id2,
        "--",
        "stat",
        "-c",
        "%s",
        "/tmp/in/big.bin",
    ]);
    assert_eq!(size.trim(), (5 << 20).to_string());

    // Destroy both; the template goes last.
    let out = server.ok(&["capsule", "destroy", &id, &id2]);
    assert_eq!(out, format!("{id} destroyed\n{id2} destroyed\n"));
    error_line(&server.cli(&["capsule", "get", &id]), "not_found");
    assert_eq!(
        server.ok(&["template", "delete", &name]).trim(),
        format!("{name} deleted")
    );
    assert!(!server.ok(&["template", "list"]).contains(&name));
    error_line(&server.cli(&["template", "delete", &name]), "not_found");

    let status = server.stop();
    assert!(status.success(), "wrenn up: {status}\n{}", server.log());
}
