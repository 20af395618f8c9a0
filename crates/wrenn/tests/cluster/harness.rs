//! The cluster the tests run: a `wrenn up` control plane (SQLite, short host timeout) and
//! registered `wrenn agent`s, with helpers to kill `-9` and restart an agent, wait for a host's
//! status, and read the SSE events stream.
//!
//! Slots: the `wrenn up`'s built-in host 3360–3365; agent `i` (0-based) 3366+8i–3373+8i at
//! 127.0.0.(2+i) (3390–3399 are the `restart` suite's).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use wrenn_client::{
    hosts::{CreateHost, Host, HostKind, HostStatus},
    Client,
};

use crate::common::{self, images_dir, Reap, Up};

/// The control plane marks a host `unreachable` after this many seconds without a heartbeat.
pub const HOST_TIMEOUT_SECS: u64 = 3;
/// Agents beat this often (seconds).
pub const HEARTBEAT_SECS: u64 = 1;
/// The most any wait for a state in these tests lasts.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Network slots of each agent.
const SLOTS_PER_AGENT: u32 = 8;

/// The first network slot of agent `i`.
fn agent_first_slot(i: usize) -> u32 {
    3366 + SLOTS_PER_AGENT * i as u32
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wrenn")
}

/// A free TCP port on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One registered agent process.
pub struct Agent {
    pub index: usize,
    pub host_id: String,
    /// `127.0.0.x:port`: where it listens and what its certificate names.
    pub address: String,
    pub data_dir: PathBuf,
    pub slots: String,
    /// Its guest images folder (`--images`).
    pub images: PathBuf,
    child: Option<Child>,
    /// What it printed on stdout after its "listening" line.
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// The agent's command without `--register`: its folder, images, slots, address and
    /// heartbeat interval.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--images")
            .arg(&self.images)
            .args(["--slots", &self.slots])
            .args(["--heartbeat-every", &HEARTBEAT_SECS.to_string()])
            .env_remove("WRENN_REGISTER")
            .env_remove("WRENN_CONTROL_PLANE")
            .env_remove("WRENN_ENVD")
            .env("RUST_LOG", "wrenn_agent=info,warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    /// Spawns `cmd` and waits for its "listening" line; later stdout lines are kept.
    pub fn spawn(&mut self, mut cmd: Command) {
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("agent {} exited before listening", self.index))
                .unwrap();
            if line.contains("listening on") {
                break;
            }
            self.stdout.lock().unwrap().push(line);
        }
        let out = self.stdout.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                out.lock().unwrap().push(l);
            }
        });
        self.child = Some(child);
    }

    /// Starts it again from its credentials file (no token, no control plane URL).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "agent {} still runs", self.index);
        let cmd = self.command();
        self.spawn(cmd);
    }

    /// SIGKILL, as a crash: its capsules' VMMs keep running.
    pub fn kill_9(&mut self) {
        let mut c = self.child.take().expect("the agent runs");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// Waits until the process ends by itself; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("the agent runs");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "agent {} did not stop",
                self.index
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn credentials_path(&self) -> PathBuf {
        self.data_dir.join("host-credentials.json")
    }

    /// Its credentials file as JSON.
    pub fn credentials(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.credentials_path()).unwrap()).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            common::interrupt(&mut c, 100);
        }
    }
}

/// A control plane and its registered agents (stopped, and their leftovers reaped, on drop).
pub struct Cluster {
    pub agents: Vec<Agent>,
    pub up: Up,
    pub admin: Client,
    pub dir: PathBuf,
    /// Whether each agent has an images folder of its own (else they share the control
    /// plane's, [`common::images_for`] its folder).
    pub own_images: bool,
    _reap: Vec<Reap>,
    _tmp: tempfile::TempDir,
    /// One cluster at a time in this process (they share the slots and addresses); dropped
    /// last, after every process of this one is gone.
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Held by the cluster that runs (the tests of this binary run on several threads).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    /// A `wrenn up` with templates `minimal` and a short host timeout, and `agents` registered
    /// agents (tags `h0`, `h1`, …: a create with `host_tags: ["h1"]` lands on agent 1).
    pub fn start(agents: usize) -> Cluster {
        Cluster::start_with(agents, &[])
    }

    /// [`Cluster::start`] with `up_args` added to the `wrenn up` command line.
    pub fn start_with(agents: usize, up_args: &[&str]) -> Cluster {
        assert!(agents <= 3, "three agents at most (slots 3366-3389)");
        // A test that failed while holding it poisoned it; the next one still runs.
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
        let dir = tmp.path().to_path_buf();
        let up_dir = dir.join("up");
        let mut reap = vec![Reap {
            dir: up_dir.clone(),
            slots: 3360..=3365,
        }];
        let mut cmd = common::up_command(bin(), "3360-3365", &up_dir, "minimal");
        cmd.args(["--host-timeout", &HOST_TIMEOUT_SECS.to_string()])
            .args(up_args);
        let up = Up::spawn(cmd, &up_dir, 300);
        let admin = Client::new(&format!("http://{}", up.addr), up.key.clone()).unwrap();
        let mut cluster = Cluster {
            agents: Vec::new(),
            up,
            admin,
            dir,
            own_images: false,
            _reap: Vec::new(),
            _tmp: tmp,
            _serial: serial,
        };
        // Every agent's folder and slots, also those a test registers itself.
        for i in 0..3 {
            let first = agent_first_slot(i);
            reap.push(Reap {
                dir: cluster.agent_dir(i),
                slots: first..=first + SLOTS_PER_AGENT - 1,
            });
        }
        cluster._reap = reap;
        let rt = tokio::runtime::Handle::current();
        for i in 0..agents {
            let agent = tokio::task::block_in_place(|| rt.block_on(cluster.register(i)));
            cluster.agents.push(agent);
        }
        cluster
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.up.addr)
    }

    pub fn agent_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("agent{i}"))
    }

    /// [`Cluster::start`] with an images folder of each agent's own (`minimal`, its files
    /// hard-linked from [`images_dir`]): snapshot templates made on one agent are not seen by
    /// another until they are copied there.
    pub fn start_own_images(agents: usize) -> Cluster {
        let mut c = Cluster::start_with(0, &[]);
        c.own_images = true;
        let rt = tokio::runtime::Handle::current();
        for i in 0..agents {
            common::link_tree(
                &images_dir().join("minimal"),
                &c.images_of(i).join("minimal"),
                false,
            );
            let agent = tokio::task::block_in_place(|| rt.block_on(c.register(i)));
            c.agents.push(agent);
        }
        c
    }

    /// Agent `i`'s own images folder (with [`Cluster::start_own_images`]).
    pub fn images_of(&self, i: usize) -> PathBuf {
        self.dir.join(format!("images{i}"))
    }

    /// Makes host `i` (tag `h{i}`) through the API and a registration token for it.
    pub async fn create_host(&self, i: usize) -> (String, String) {
        let made = self
            .admin
            .create_host(&CreateHost {
                kind: Some(HostKind::Regular),
                tags: vec![format!("h{i}")],
                ..CreateHost::default()
            })
            .await
            .unwrap();
        assert_eq!(made.host.status, HostStatus::Pending);
        (made.host.id, made.registration_token)
    }

    /// The agent `i` before it is started: its folder, slots and address.
    pub fn agent(&self, i: usize, host_id: &str) -> Agent {
        let ip = format!("127.0.0.{}", 2 + i);
        let first = agent_first_slot(i);
        Agent {
            index: i,
            host_id: host_id.to_string(),
            address: format!("{ip}:{}", free_port(&ip)),
            data_dir: self.agent_dir(i),
            slots: format!("{first}-{}", first + SLOTS_PER_AGENT - 1),
            images: if self.own_images {
                self.images_of(i)
            } else {
                common::images_for(&self.up.data_dir)
            },
            child: None,
            stdout: Arc::default(),
        }
    }

    /// Makes host `i` and starts its agent with `--register TOKEN --control-plane URL
    /// --address`; waits until the host is `online`.
    pub async fn register(&self, i: usize) -> Agent {
        let (host_id, token) = self.create_host(i).await;
        self.register_as(i, &host_id, &token).await
    }

    /// Starts agent `i` registering as host `host_id` with `token`; waits until it is `online`.
    pub async fn register_as(&self, i: usize, host_id: &str, token: &str) -> Agent {
        let host_id = host_id.to_string();
        let mut agent = self.agent(i, &host_id);
        let mut cmd = agent.command();
        cmd.args(["--register", token])
            .args(["--control-plane", &self.base_url()])
            .args(["--address", &agent.address]);
        tokio::task::block_in_place(|| agent.spawn(cmd));
        self.wait_host(&host_id, HostStatus::Online).await;
        agent
    }

    /// Waits until host `id` has `status`; the host then.
    pub async fn wait_host(&self, id: &str, status: HostStatus) -> Host {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let h = self.admin.get_host(id).await.unwrap();
            if h.status == status {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "host {id} is {:?}, not {status:?}",
                h.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until capsule `id` has `status` (its status text).
    pub async fn wait_capsule(&self, id: &str, status: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let c = self.admin.get_capsule(id).await.unwrap();
            let now = serde_json::to_value(c.status).unwrap();
            if now == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "capsule {id} is {now}, not {status}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates a `minimal` capsule with `host_tags` `tags`; its id.
    pub async fn capsule_on(&self, tags: &[&str]) -> String {
        let body = serde_json::json!({ "template": "minimal", "host_tags": tags });
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/capsules", self.base_url()))
            .header("x-api-key", &self.up.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status.as_u16(), 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// A POST to the control plane with `headers`; status and JSON body (Null when empty).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", self.base_url()))
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The host a capsule's row names (the API does not show it), from the database.
    pub async fn capsule_host(&self, id: &str) -> String {
        let db = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            self.up.data_dir.join("wrenn.db").display()
        ))
        .await
        .unwrap();
        let host: Option<String> = sqlx::query_scalar("SELECT host_id FROM capsules WHERE id = ?")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
        db.close().await;
        host.unwrap_or_else(|| panic!("capsule {id} has no host"))
    }

    /// The host-side name of the team template `name` (its folder on a host), from the
    /// database.
    pub async fn template_folder_name(&self, name: &str) -> String {
        let db = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            self.up.data_dir.join("wrenn.db").display()
        ))
        .await
        .unwrap();
        let agent_name: String =
            sqlx::query_scalar("SELECT agent_name FROM templates WHERE name = ?")
                .bind(name)
                .fetch_one(&db)
                .await
                .unwrap();
        db.close().await;
        agent_name
    }

    /// `POST /v1/capsules` with `body` and `key`: status, JSON body, and how long it took.
    pub async fn create_as(&self, key: &str, body: &Value) -> (u16, Value, Duration) {
        let t = Instant::now();
        let (status, v) = self.post("/v1/capsules", &[("x-api-key", key)], body).await;
        (status, v, t.elapsed())
    }

    /// The events stream, read from now on.
    pub async fn events(&self) -> Events {
        Events::open(&self.base_url(), &self.up.key).await
    }
}

/// The SSE events stream of one caller, collected in the background.
pub struct Events {
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Events {
    pub async fn open(base: &str, key: &str) -> Events {
        use futures_util::StreamExt;
        let resp = reqwest::Client::new()
            .get(format!("{base}/v1/events/stream"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let out = seen.clone();
        let task = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find('\n') {
                    let line: String = buf.drain(..=end).collect();
                    if let Some(data) = line.trim_end().strip_prefix("data:") {
                        if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                            out.lock().unwrap().push(v);
                        }
                    }
                }
            }
        });
        Events { seen, task }
    }

    /// Waits for an event named `event` about resource `id`; the event.
    pub async fn wait_for(&self, event: &str, id: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|e| e["event"] == event && e["resource"]["id"] == id)
                .cloned();
            if let Some(e) = found {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {event} event for {id}; seen: {:?}",
                self.seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the agent `cmd` to its end; its exit code and stderr.
pub fn run_to_end(mut cmd: Command) -> (Option<i32>, String) {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The state in a capsule's `capsule.json` on an agent.
pub fn recorded_state(data_dir: &Path, capsule_id: &str) -> String {
    let rec: Value = serde_json::from_slice(
        &std::fs::read(
            data_dir
                .join("capsules")
                .join(capsule_id)
                .join("capsule.json"),
        )
        .unwrap(),
    )
    .unwrap();
    rec["state"].as_str().unwrap_or_default().to_string()
}
