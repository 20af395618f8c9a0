//! Two `wrenn server` replicas on one PostgreSQL (a database of the test's own on
//! `WRENN_TEST_DATABASE_URL`) in front of one real `wrenn agent` (slots 3420–3439, mTLS):
//! a capsule made through one is seen, with its events, through the other; exec (REST and
//! WebSocket) and the port proxy work through the other; the reconciler runs on one replica,
//! and the other takes over when that one is killed. Needs root, QEMU and the `python` image;
//! run under the VM lock.

#[path = "common/mod.rs"]
mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::wait_up;
use serde_json::{json, Value};

const RECONCILE_LEASE: &str = "lease=\"reconcile\"";

fn random_hex() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// A database of the test's own on the test cluster: (admin URL, its URL, its name).
async fn database() -> (String, String, String) {
    let admin = std::env::var("WRENN_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("WRENN_TEST_DATABASE_URL (export it from scripts/install-postgres.sh)");
    let name = format!("wrenn_replicas_{}", random_hex());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    let (base, query) = admin
        .split_once('?')
        .map_or((&admin[..], None), |(b, q)| (b, Some(q)));
    let slash = base.rfind('/').expect("a database URL has a path");
    let mut url = format!("{}/{name}", &base[..slash]);
    if let Some(q) = query {
        url = format!("{url}?{q}");
    }
    (admin, url, name)
}

/// `line` without its terminal colours (`ESC [ … m`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `wrenn server` replica: its process, address, and the log lines it wrote.
struct Replica {
    child: Child,
    addr: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    fn start(data_dir: &std::path::Path, url: &str, agent: &str, pki: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wrenn"))
            .args(["server", "--listen", "127.0.0.1:0", "--agent", agent])
            .arg("--pki-dir")
            .arg(pki)
            .arg("--data-dir")
            .arg(data_dir)
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "wrenn_server=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let err = BufReader::new(child.stderr.take().unwrap());
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(plain(&line));
            }
        });
        let (addr, _) = wait_up(&mut child);
        Replica { child, addr, logs }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Whether it logged taking the reconciler's lease.
    fn reconciles(&self) -> bool {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("took the lease") && l.contains(RECONCILE_LEASE))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        common::interrupt(&mut self.child, 100);
    }
}

/// Waits (at most 60 s) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 60 s");
}

/// `GET url` with the API key `key`: the JSON answer.
async fn get_json(url: &str, key: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(url)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

/// The next `data:` event of an SSE response (at most 60 s).
async fn next_event(resp: &mut reqwest::Response, buf: &mut String) -> Value {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                    return serde_json::from_str(data.trim()).unwrap();
                }
                continue;
            }
            let chunk = resp.chunk().await.unwrap().expect("the stream ended");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("an event within 60 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_postgres_serve_the_same_capsules() {
    let (admin_url, url, name) = database().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let pki = dir.path().join("pki");
    let (mut agent, port) = common::mtls_agent(dir.path(), "3420-3439");

    let agent_addr = format!("localhost:{port}");
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = Replica::start(&dir_a, &url, &agent_addr, &pki);
    // The replicas share the admin's key file (a replica without it would make a new key).
    std::fs::create_dir_all(&dir_b).unwrap();
    std::fs::copy(dir_a.join("admin-api-key"), dir_b.join("admin-api-key")).unwrap();
    let b = Replica::start(&dir_b, &url, &agent_addr, &pki);
    let key = std::fs::read_to_string(dir_a.join("admin-api-key"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();

    // B's event stream, open before the create through A.
    let mut stream = http
        .get(b.url("/v1/events/stream"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut buf = String::new();
    assert_eq!(
        next_event(&mut stream, &mut buf).await["event"],
        "connected"
    );

    let made: Value = http
        .post(a.url("/v1/capsules"))
        .header("x-api-key", &key)
        .json(&json!({"template": "python"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_str().expect("a capsule").to_string();
    let e = next_event(&mut stream, &mut buf).await;
    assert_eq!(e["event"], "capsule.create", "{e}");
    assert_eq!(e["resource"]["id"], id.as_str());
    let seen = get_json(&b.url(&format!("/v1/capsules/{id}")), &key).await;
    assert_eq!(seen["status"], "running", "{seen}");

    // Exec through B: REST, then the WebSocket stream.
    let client = wrenn_client::Client::new(&format!("http://{}", b.addr), key.clone()).unwrap();
    let r = client
        .exec(
            &id,
            &wrenn_client::Exec::shell(
                "mkdir -p /tmp/www && echo replica > /tmp/www/hello.txt && cat /tmp/www/hello.txt",
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "replica\n",
        "exit {}, stderr {}",
        r.exit_code,
        String::from_utf8_lossy(&r.stderr)
    );
    let mut ws = client
        .exec_stream(&id, &wrenn_client::Exec::new("echo").args(["over", "ws"]))
        .await
        .unwrap();
    let mut stdout = String::new();
    let mut exit = None;
    while let Some(ev) = ws.next().await {
        match ev.unwrap() {
            wrenn_client::StreamEvent::Stdout(s) => stdout.push_str(&s),
            wrenn_client::StreamEvent::Exit { exit_code } => exit = Some(exit_code),
            _ => {}
        }
    }
    assert_eq!((stdout.as_str(), exit), ("over ws\n", Some(0)));

    // The port proxy through B.
    let started = http
        .post(b.url(&format!("/v1/capsules/{id}/exec")))
        .header("x-api-key", &key)
        .json(&json!({
            "cmd": "/usr/bin/python3",
            "args": ["-m", "http.server", "8080", "--directory", "/tmp/www"],
            "background": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let host = format!("8080-{id}.wrenn.localhost");
    let mut served = None;
    for _ in 0..150 {
        let r = http
            .get(b.url("/hello.txt"))
            .header("host", &host)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            served = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(served.as_deref(), Some("replica\n"), "the proxy through B");

    // The reconciler runs on one replica; kill it, and the other takes over.
    until("a replica reconciles", || a.reconciles() || b.reconciles()).await;
    assert!(
        !(a.reconciles() && b.reconciles()),
        "only one replica holds the reconciler's lease"
    );
    let (mut holder, other) = if a.reconciles() { (a, b) } else { (b, a) };
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    until("the other replica takes over the reconciler", || {
        other.reconciles()
    })
    .await;
    // The survivor still serves the capsule, and destroys it.
    let gone = http
        .delete(other.url(&format!("/v1/capsules/{id}")))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let after = get_json(&other.url(&format!("/v1/capsules/{id}")), &key).await;
    assert!(
        after["status"] == "stopped" || after["error"]["code"] == "not_found",
        "{after}"
    );

    drop(other);
    drop(holder);
    common::interrupt(&mut agent, 300);
    let pool = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await;
}
