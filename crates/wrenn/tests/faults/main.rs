//! Faults, measured on the real binary: the host's disk full under the data folder, a guest
//! that fills its own disk, PostgreSQL restarted under load, the agent killed with `-9` under
//! load, and 100 pause/resume cycles. Each test prints what it measured as
//! `FIGURE faults.<name> key=value …` lines (docs/reliability.md cites them).
//! Needs root (loop mounts, netns), QEMU, PostgreSQL's binaries and `make images`.
//! Network slots 3600-3699.

#[path = "../common/mod.rs"]
mod common;

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use common::{ready, Reap};
use serde_json::{json, Value};

mod agent;
mod cycles;
mod disk;
mod load;
mod postgres;

/// The tests boot VMs on a small machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A request that takes longer than this has hung (the bound every request must meet, with
/// success or a clear error).
const HANG: Duration = Duration::from_secs(60);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wrenn")
}

fn figure(name: &str, values: &[(&str, String)]) {
    let kv: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("FIGURE faults.{name} {}", kv.join(" "));
}

/// A child process stopped with SIGINT (then SIGKILL) when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    fn kill_9(&mut self) {
        let mut c = self.0.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn stop(&mut self) {
        let Some(mut c) = self.0.take() else { return };
        common::interrupt(&mut c, 300);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `wrenn up` in `data`, owning `slots`, on SQLite or `database_url`.
fn start_up(data: &Path, slots: &str, database_url: Option<&str>) -> (Proc, Api) {
    let mut cmd = common::up_command(bin(), slots, data, "minimal");
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd.spawn().unwrap();
    let (addr, key) = ready(&mut child, data);
    (Proc(Some(child)), Api::new(addr, key))
}

/// What a request ended with.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Value,
    took: Duration,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    fn new(addr: String, key: String) -> Api {
        Api {
            http: reqwest::Client::builder().timeout(HANG).build().unwrap(),
            base: format!("http://{addr}"),
            key,
        }
    }

    /// A request; `Err` is a transport failure or a hang (no answer within [`HANG`]).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, String> {
        let start = Instant::now();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if path.ends_with("/exec") {
            // A command may run as long as its own timeout (600 s, e.g. a guest filling its
            // disk under TCG on a loaded host); `HANG` bounds the control requests.
            req = req.timeout(Duration::from_secs(660));
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e:?}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("{path}: {e:?}"))?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|_| format!("{path}: {status} with a body that is not JSON: {text}"))?
        };
        Ok(Answer {
            status,
            body,
            took: start.elapsed(),
        })
    }

    async fn create(&self, body: Value) -> Answer {
        self.call(reqwest::Method::POST, "/v1/capsules", Some(body))
            .await
            .unwrap()
    }

    /// Creates a `minimal` capsule; its id.
    async fn capsule(&self) -> String {
        let a = self.create(json!({ "template": "minimal" })).await;
        assert_eq!(a.status, 201, "{a:?}");
        a.body["id"].as_str().unwrap().to_string()
    }

    async fn exec(&self, id: &str, script: &str) -> Result<Answer, String> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/capsules/{id}/exec"),
            Some(json!({ "cmd": "/bin/bash", "args": ["-c", script], "timeout_sec": 600 })),
        )
        .await
    }

    /// Runs `script`; its stdout (the command must succeed).
    async fn sh(&self, id: &str, script: &str) -> String {
        let a = self.exec(id, script).await.unwrap();
        assert_eq!(a.status, 200, "{script}: {a:?}");
        assert_eq!(a.body["exit_code"], 0, "{script}: {a:?}");
        a.body["stdout"].as_str().unwrap().to_string()
    }

    async fn post(&self, path: &str) -> Answer {
        self.call(reqwest::Method::POST, path, None).await.unwrap()
    }

    async fn get(&self, path: &str) -> Result<Answer, String> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn delete(&self, id: &str) -> Answer {
        self.call(reqwest::Method::DELETE, &format!("/v1/capsules/{id}"), None)
            .await
            .unwrap()
    }
}
