//! Template builds end to end, against a real `wrenn up` (real microVMs; slots 4200–4299): a
//! recipe with ENV/USER/WORKDIR and COPY from an archive gives a base template (booted afresh,
//! its disk standing alone once its base is deleted) whose capsules show them; a
//! START'ed HTTP server with a healthcheck (a platform admin's build: a platform template)
//! answers at once in a new capsule; a failing RUN
//! names its step and line; cancel; archives reaching out refused; a control plane restarted
//! with a build under way never leaves it `running`; `FROM <OCI image>` from a registry the test
//! runs (`oci`). Needs root, QEMU and the `minimal` and
//! `python` images. Run one test at a time under the VM lock.

mod common;
#[path = "builds_parts/look.rs"]
mod look;
#[path = "builds_parts/oci.rs"]
mod oci;

use std::{
    io::Write,
    process::Command,
    time::{Duration, Instant},
};

use base64::Engine;
use common::{Reap, Up};
use look::{running, template_type};
use serde_json::{json, Value};

const SLOTS: &str = "4200-4299";

/// One `wrenn up` at a time in this binary: they share the slot range (each sweeps it at start
/// and on drop). Held for a test's whole life, dropped last.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Api<'a> {
    up: &'a Up,
    http: reqwest::Client,
}

impl<'a> Api<'a> {
    fn new(up: &'a Up) -> Api<'a> {
        Api {
            up,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.up.url(path))
            .header("X-API-Key", &self.up.key)
            .timeout(Duration::from_secs(300));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Polls the build until it is over; its last state.
    async fn wait(&self, id: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let b = self.get(&format!("/v1/builds/{id}")).await;
            let status = b["status"].as_str().unwrap().to_string();
            if ["success", "failed", "cancelled"].contains(&status.as_str()) {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "build {id} still {status}: {b:#}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn exec(&self, capsule: &str, line: &str) -> Value {
        let (s, v) = self
            .post(
                &format!("/v1/capsules/{capsule}/exec"),
                json!({"cmd": "/bin/sh", "args": ["-c", line]}),
            )
            .await;
        assert_eq!(s, 200, "exec {line}: {v}");
        v
    }

    async fn capsule(&self, template: &str) -> String {
        let (s, v) = self
            .post("/v1/capsules", json!({"template": template}))
            .await;
        assert_eq!(s, 201, "create from {template}: {v}");
        v["sandbox_id"]
            .as_str()
            .or(v["id"].as_str())
            .unwrap()
            .to_string()
    }

    async fn destroy(&self, capsule: &str) {
        let _ = self
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/capsules/{capsule}"),
                None,
            )
            .await;
    }
}

/// The `wrenn` binary: this build's, or `WRENN_BIN` (a copy, on a machine where other
/// worktrees share the target folder).
fn bin() -> String {
    std::env::var("WRENN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wrenn").to_string())
}

/// A `wrenn up` of its own (dropped in reverse: stopped, reaped, then its folder removed).
fn up(templates: &str) -> (tempfile::TempDir, Reap, Up) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let cmd = common::up_command(bin(), SLOTS, dir.path(), templates);
    let up = Up::spawn(cmd, dir.path(), 600);
    let reap = Reap {
        dir: up.data_dir.clone(),
        slots: 4200..=4299,
    };
    (dir, reap, up)
}

/// A tar.gz made by the real `tar` from `files` (path, contents).
fn targz(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(c.as_bytes())
            .unwrap();
    }
    let out = dir.path().join("a.tgz");
    let names: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(dir.path())
        .args(names)
        .status()
        .unwrap();
    assert!(ok.success());
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(out).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn recipe_with_archive_env_user_and_workdir() {
    let _serial = SERIAL.lock().await;
    let (_dir, _reap, up) = up("minimal");
    let api = Api::new(&up);
    let archive = targz(&[
        ("site/index.html", "<h1>from the archive</h1>"),
        ("conf/app.conf", "port=1"),
    ]);
    let (s, b) = api
        .post(
            "/v1/builds",
            json!({
                "name": "web-env",
                "recipe": [
                    "RUN echo built > /etc/built.txt",
                    "ENV GREETING=hello",
                    "ENV PATH=/opt/tools:$PATH",
                    "USER app",
                    "WORKDIR /home/app/work",
                    "COPY site conf/app.conf ./",
                    "RUN test -f index.html && test \"$(stat -c %U index.html)\" = app",
                    // Left running in the build capsule: a base template boots afresh without it.
                    "RUN (sleep 9999 >/dev/null 2>&1 &)",
                ],
                "archive": archive,
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], "pending");
    let id = b["id"].as_str().unwrap();
    let b = api.wait(id, 600).await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["default_user"], "app");
    assert_eq!(b["default_workdir"], "/home/app/work");
    assert_eq!(b["default_env"]["GREETING"], "hello");
    let logs = b["logs"].as_array().unwrap();
    assert!(logs.iter().all(|l| l["ok"] == true), "{b:#}");
    assert!(logs.iter().any(|l| l["line"] == 7 && l["exit"] == 0));
    // A capsule from it: the file, the environment, the user and the folder.
    let c = api.capsule("web-env").await;
    let out = api
        .exec(&c, "cat /etc/built.txt; echo $GREETING; id -un; pwd; cat index.html app.conf; echo; echo $PATH")
        .await;
    let stdout = out["stdout"].as_str().unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..4],
        ["built", "hello", "app", "/home/app/work"],
        "{out}"
    );
    assert!(
        stdout.contains("<h1>from the archive</h1>port=1"),
        "{stdout}"
    );
    assert!(lines.last().unwrap().starts_with("/opt/tools:"), "{stdout}");
    // No healthcheck, nothing started: a base template, booted afresh (the RUN's background
    // process is not in it).
    assert_eq!(b["template_type"], "base", "{b:#}");
    assert_eq!(template_type(&api, "web-env").await, "base");
    assert_eq!(running(&api, &c, "slee[p] 9999").await, 0);
    api.destroy(&c).await;
    // The build capsule is gone.
    let list = api.get("/v1/capsules").await;
    assert_eq!(list.as_array().unwrap().len(), 0, "{list:#}");
    // A base template built on it, then it deleted: the new one's disk stands alone.
    let (s, b) = api
        .post(
            "/v1/builds",
            // Steps run as root in `/` until USER/WORKDIR, whatever the base's defaults.
            json!({"name": "web-env2", "base_template": "web-env", "recipe": ["RUN echo two > /etc/two.txt"]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let b = api.wait(b["id"].as_str().unwrap(), 600).await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["template_type"], "base", "{b:#}");
    let (s, v) = api
        .call(reqwest::Method::DELETE, "/v1/snapshots/web-env", None)
        .await;
    assert_eq!(s, 204, "{v}");
    let c = api.capsule("web-env2").await;
    let out = api
        .exec(
            &c,
            "cat /etc/built.txt /etc/two.txt; id -un; echo $GREETING",
        )
        .await;
    assert_eq!(out["stdout"], "built\ntwo\napp\nhello\n", "{out}");
    api.destroy(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn started_server_answers_at_once_in_new_capsules() {
    let _serial = SERIAL.lock().await;
    let (_dir, _reap, up) = up("python");
    let api = Api::new(&up);
    // A platform admin's build (`wrenn up`'s key): a platform template (every team's; who may
    // build one and how teams see it: crates/wrenn-server/tests/platform_templates.rs).
    let (s, b) = api
        .post(
            "/v1/admin/builds",
            json!({
                "name": "web",
                "dockerfile": "FROM python\nRUN mkdir -p /srv && echo hi-from-build > /srv/index.html\nWORKDIR /srv\nEXPOSE 8000\nCMD [\"python3\", \"-m\", \"http.server\", \"8000\"]\n",
                "healthcheck": "--interval=1s --retries=60 curl -sf http://127.0.0.1:8000/index.html",
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let b = api.wait(b["id"].as_str().unwrap(), 900).await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["expose"], json!(["8000/tcp"]));
    assert_eq!(b["template_type"], "snapshot", "{b:#}");
    let list = api.get("/v1/snapshots").await;
    let web = list.as_array().unwrap().iter().find(|t| t["name"] == "web");
    assert_eq!(
        web.map(|t| (t["platform"].clone(), t["type"].clone())),
        Some((json!(true), json!("snapshot"))),
        "{list:#}"
    );
    let c = api.capsule("web").await;
    // No wait: the server came with the snapshot.
    let out = api
        .exec(&c, "curl -sf --max-time 5 http://127.0.0.1:8000/index.html")
        .await;
    assert_eq!(out["stdout"], "hi-from-build\n", "{out}");
    api.destroy(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_refusals_and_cancel() {
    let _serial = SERIAL.lock().await;
    let (_dir, _reap, up) = up("minimal");
    let api = Api::new(&up);
    // Refused before anything runs, with the line.
    let (s, e) = api
        .post(
            "/v1/builds",
            json!({"name": "x", "recipe": ["RUN true", "FROB x"]}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("line 2"),
        "{e}"
    );
    let (s, e) = api
        .post(
            "/v1/builds",
            json!({"name": "x", "dockerfile": "FROM minimal\nUSER 0bad\n"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("line 2"),
        "{e}"
    );
    let (s, e) = api
        .post(
            "/v1/builds",
            // An image's build is `oci.rs`'s (never a public registry from a test).
            json!({"name": "x", "dockerfile": "FROM python:3.12-slim\nRUN true\n", "base_template": "minimal"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("names its base with FROM"),
        "{e}"
    );
    let (s, e) = api
        .post(
            "/v1/builds",
            json!({"name": "x", "recipe": ["COPY missing.txt /x"], "archive": targz(&[("a.txt", "a")])}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1: COPY source \"missing.txt\" is not in the archive"),
        "{e}"
    );
    // An archive reaching out of itself (GNU tar keeps `..` with -P).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("evil"), "x").unwrap();
    let evil = dir.path().join("evil.tar");
    assert!(Command::new("tar")
        .args(["-cPf"])
        .arg(&evil)
        .arg("-C")
        .arg(dir.path().join("in"))
        .arg("../evil")
        .status()
        .unwrap()
        .success());
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&evil).unwrap());
    let (s, e) = api
        .post(
            "/v1/builds",
            json!({"name": "x", "recipe": ["RUN true"], "archive": b64}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reaches out of the archive"),
        "{e}"
    );
    // A failing RUN: failed, naming the step and the line.
    let (s, b) = api
        .post(
            "/v1/builds",
            json!({"name": "broken", "recipe": ["RUN echo fine", "RUN echo oops >&2; exit 3", "RUN echo never"]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let b = api.wait(b["id"].as_str().unwrap(), 600).await;
    assert_eq!(b["status"], "failed", "{b:#}");
    let err = b["error"].as_str().unwrap();
    assert!(
        err.contains("step 3 (line 2)") && err.contains("exit code 3") && err.contains("oops"),
        "{err}"
    );
    assert!(!b["logs"].to_string().contains("never"));
    // Cancel while a step runs: cancelled, its capsule destroyed.
    let (_, b) = api
        .post(
            "/v1/builds",
            json!({"name": "slow", "recipe": ["RUN sleep 600"]}),
        )
        .await;
    let id = b["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let b = api.get(&format!("/v1/builds/{id}")).await;
        if b["logs"].to_string().contains("sleep 600") {
            break;
        }
        assert!(Instant::now() < deadline, "the sleep never started: {b:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (s, b) = api
        .post(&format!("/v1/builds/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "cancelled");
    let (s, _) = api
        .post(&format!("/v1/builds/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, 409);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api.get("/v1/capsules").await.as_array().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cancelled build's capsule is still there"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Another team's view: a foreign build looks missing.
    let (s, _) = api
        .call(reqwest::Method::GET, "/v1/builds/bld-doesnotexist", None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_never_leaves_a_build_running() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let _reap = Reap {
        dir: dir.path().to_path_buf(),
        slots: 4200..=4299,
    };
    let start = |max_builds: &str| {
        let mut cmd = common::up_command(bin(), SLOTS, dir.path(), "minimal");
        cmd.args(["--max-builds", max_builds]);
        Up::spawn(cmd, dir.path(), 600)
    };
    // One build at a time (`--max-builds 1`): the first runs, the others wait in the queue.
    let mut first = start("1");
    let ids: Vec<String> = {
        let api = Api::new(&first);
        let mut ids = Vec::new();
        for n in 0..3 {
            let (s, b) = api
                .post(
                    "/v1/builds",
                    json!({"name": format!("r{n}"), "recipe": ["RUN sleep 5", "RUN echo done"]}),
                )
                .await;
            assert_eq!(s, 201, "{b}");
            ids.push(b["id"].as_str().unwrap().to_string());
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let status = |b: Value| b["status"].as_str().unwrap().to_string();
        assert_eq!(
            status(api.get(&format!("/v1/builds/{}", ids[0])).await),
            "running"
        );
        for id in &ids[1..] {
            assert_eq!(
                status(api.get(&format!("/v1/builds/{id}")).await),
                "pending"
            );
        }
        ids
    };
    first.stop();
    let second = start("2");
    let api = Api::new(&second);
    // Interrupted builds end (success, or failed cleanly); none stays `running`.
    for id in &ids {
        let b = api.wait(id, 900).await;
        let status = b["status"].as_str().unwrap();
        assert!(status == "success" || status == "failed", "{id}: {b:#}");
    }
    // The queued ones ran after the restart.
    for id in &ids[1..] {
        let b = api.get(&format!("/v1/builds/{id}")).await;
        assert_eq!(b["status"], "success", "{b:#}");
    }
    // No build capsule left behind.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !api
        .get("/v1/capsules")
        .await
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] != "running")
    {
        assert!(Instant::now() < deadline, "a build capsule is left running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_builds_lists_and_cancels() {
    let _serial = SERIAL.lock().await;
    let (_dir, _reap, up) = up("minimal");
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("site")).unwrap();
    std::fs::write(work.path().join("site/hello.txt"), "hi from a folder").unwrap();
    let recipe = work.path().join("Recipe");
    std::fs::write(
        &recipe,
        "COPY site /srv/site\nRUN cat /srv/site/hello.txt\n",
    )
    .unwrap();
    let wrenn = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .env("WRENN_BASE_URL", up.url(""))
            .env("WRENN_API_KEY", &up.key)
            .output()
            .unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!("$ wrenn {args:?} -> {:?}\n{o}{e}", out.status.code());
        (out.status.code(), o, e)
    };
    let (code, out, err) = wrenn(&[
        "template",
        "build",
        "--name",
        "cli-site",
        "-f",
        recipe.to_str().unwrap(),
        "--archive",
        work.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("template cli-site built"), "{out}");
    assert!(err.contains("[2/4] COPY site /srv/site (ok"), "{err}");
    // A failing build: exit 1, the step and line on one line.
    let bad = work.path().join("Bad");
    std::fs::write(&bad, "RUN true\nRUN echo nope >&2; exit 4\n").unwrap();
    let (code, _, err) = wrenn(&[
        "template",
        "build",
        "--name",
        "cli-bad",
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("error: build_failed: step 3 (line 2)") && err.contains("nope"),
        "{err}"
    );
    // Listed; a queued one cancelled.
    let slow = work.path().join("Slow");
    std::fs::write(&slow, "RUN sleep 300\n").unwrap();
    let (code, id, _) = wrenn(&[
        "template",
        "build",
        "--name",
        "cli-slow",
        "-f",
        slow.to_str().unwrap(),
        "--no-wait",
    ]);
    assert_eq!(code, Some(0));
    let id = id.trim().to_string();
    assert!(id.starts_with("bld-"), "{id}");
    let (code, out, _) = wrenn(&["template", "cancel", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("cancelled"));
    let (code, out, _) = wrenn(&["template", "builds"]);
    assert_eq!(code, Some(0));
    for want in [
        "cli-site",
        "success",
        "cli-bad",
        "failed",
        "cli-slow",
        "cancelled",
    ] {
        assert!(out.contains(want), "{want} not in:\n{out}");
    }
}
