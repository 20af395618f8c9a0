//! `wrenn-bench server`: the control plane's REST API against its host agent reached directly
//! (gRPC over the same Unix socket the server uses), in one run of a real `wrenn up`:
//!
//! 1. exec round trip (`true`): `POST /v1/capsules/{id}/exec` against the agent's `Exec`,
//!    interleaved;
//! 2. create → first exec: `POST /v1/capsules` + exec against `CreateCapsule` + `Exec`;
//! 3. N concurrent `POST /v1/capsules`: p99 against p50 of the same burst.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, CapsuleRef, CreateCapsuleRequest, ExecRequest,
};

use crate::{
    report::{percentile, Row, Target as Goal},
    rest::Rest,
};

const SLOTS: &str = "2300-2399";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `wrenn` binary to run (`wrenn up`).
    #[arg(long)]
    wrenn: PathBuf,
    /// Where `make images` put the templates.
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    /// Exec round trips per side [default: 200; quick 30].
    #[arg(long)]
    exec_runs: Option<usize>,
    /// Create → first exec rounds per side [default: 20; quick 3].
    #[arg(long)]
    create_runs: Option<usize>,
    /// Creates at once [default: 50; quick 8].
    #[arg(long)]
    concurrent: Option<usize>,
    /// A smoke run.
    #[arg(long)]
    quick: bool,
}

/// A running `wrenn up`, stopped (SIGINT, then SIGKILL) and cleaned up on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    pub(crate) key: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// `wrenn up` of `wrenn` with the templates in `images`, in network slots `slots`.
    pub(crate) fn start(wrenn: &Path, images: &Path, slots: &str) -> Result<Server> {
        let dir = tempfile::tempdir_in("/var/tmp").context("a data folder")?;
        let mut child = Command::new(wrenn)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--slots",
                slots,
                "--max-capsules",
                "80",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--images")
            .arg(images)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", wrenn.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let base = loop {
            let Some(line) = lines.next() else {
                bail!("wrenn up exited before it was ready");
            };
            if let Some(url) = line?.strip_prefix("Wrenn is up at ") {
                break url.trim().to_string();
            }
        };
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let key = std::fs::read_to_string(dir.path().join("admin-api-key"))?
            .trim()
            .to_string();
        Ok(Server {
            child,
            base,
            key,
            dir,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

async fn agent_exec(agent: &mut AgentClient<tonic::transport::Channel>, id: &str) -> Result<()> {
    let out = agent
        .exec(ExecRequest {
            capsule_id: id.into(),
            cmd: "true".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if out.exit_code != 0 {
        bail!("exec failed: {out:?}");
    }
    Ok(())
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(id: &'static str, label: &str, rest: f64, direct: f64, samples: usize) -> Row {
    let mut r = Row::new(id, label, "ms", rest, direct);
    r.subject = "rest";
    r.samples = samples;
    r
}

pub fn run(args: Args) -> Result<()> {
    let exec_runs = args.exec_runs.unwrap_or(if args.quick { 30 } else { 200 });
    let create_runs = args.create_runs.unwrap_or(if args.quick { 3 } else { 20 });
    let concurrent = args.concurrent.unwrap_or(if args.quick { 8 } else { 50 });
    let server = Server::start(&args.wrenn, &args.images, SLOTS)?;
    let rt = tokio::runtime::Runtime::new()?;
    let rows = rt.block_on(async {
        let rest = Rest::new(server.base.clone(), server.key.clone())?;
        let socket = server.dir.path().join("agent.sock");
        let mut agent =
            wrenn_rpc::client::connect(&wrenn_rpc::client::AgentEndpoint::Unix(socket), None)
                .await?;
        let mut rows = Vec::new();

        // 1. Exec round trip, interleaved (order flipped each round).
        let id = rest.create(json!({})).await?;
        for _ in 0..10 {
            rest.exec_true(&id).await?;
            agent_exec(&mut agent, &id).await?;
        }
        let (mut via_rest, mut direct) = (Vec::new(), Vec::new());
        for i in 0..exec_runs {
            for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                let t = Instant::now();
                if side == 0 {
                    rest.exec_true(&id).await?;
                    via_rest.push(ms(t.elapsed()));
                } else {
                    agent_exec(&mut agent, &id).await?;
                    direct.push(ms(t.elapsed()));
                }
            }
        }
        rest.destroy(&id).await?;
        let (r50, d50) = (percentile(&via_rest, 50.0), percentile(&direct, 50.0));
        let mut r = row("exec_p50", "exec `true` p50", r50, d50, exec_runs);
        r.note = format!("overhead {:+.2} ms", r50 - d50);
        r.target = Some(Goal {
            text: "REST overhead <= 2 ms per call".into(),
            met: r50 - d50 <= 2.0,
        });
        rows.push(r);
        rows.push(row(
            "exec_p99",
            "exec `true` p99",
            percentile(&via_rest, 99.0),
            percentile(&direct, 99.0),
            exec_runs,
        ));

        // 2. Create → first exec.
        let (mut via_rest, mut direct) = (Vec::new(), Vec::new());
        for i in 0..create_runs {
            for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    let t = Instant::now();
                    let id = rest.create(json!({})).await?;
                    rest.exec_true(&id).await?;
                    via_rest.push(ms(t.elapsed()));
                    rest.destroy(&id).await?;
                } else {
                    let t = Instant::now();
                    let c = agent
                        .create_capsule(CreateCapsuleRequest {
                            template: "minimal".into(),
                            // What the REST API asks for by default.
                            egress: true,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    agent_exec(&mut agent, &c.id).await?;
                    direct.push(ms(t.elapsed()));
                    agent.destroy_capsule(CapsuleRef { id: c.id }).await?;
                }
            }
        }
        let (r50, d50) = (percentile(&via_rest, 50.0), percentile(&direct, 50.0));
        let mut r = row(
            "create_exec_p50",
            "create → exec p50",
            r50,
            d50,
            create_runs,
        );
        r.note = format!("overhead {:+.2} ms over 2 calls", r50 - d50);
        r.target = Some(Goal {
            text: "REST overhead <= 2 ms per call".into(),
            met: (r50 - d50) / 2.0 <= 2.0,
        });
        rows.push(r);

        // 3. A burst of concurrent creates.
        let rest = std::sync::Arc::new(rest);
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(concurrent));
        let mut tasks = Vec::new();
        for _ in 0..concurrent {
            let (rest, start) = (rest.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let t = Instant::now();
                let id = rest.create(json!({})).await;
                (ms(t.elapsed()), id)
            }));
        }
        let mut times = Vec::new();
        let mut failures = Vec::new();
        let mut ids = Vec::new();
        for t in tasks {
            let (elapsed, id) = t.await?;
            match id {
                Ok(id) => {
                    times.push(elapsed);
                    ids.push(id);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        for id in &ids {
            let _ = rest.destroy(id).await;
        }
        if !failures.is_empty() {
            bail!(
                "{} of {concurrent} creates failed: {:?}",
                failures.len(),
                failures.first()
            );
        }
        let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
        let mut r = row(
            "burst_p99",
            &format!("{concurrent} creates p99/p50"),
            p99,
            p50,
            concurrent,
        );
        r.subject = "p99";
        r.note = "baseline = p50 of the same burst".into();
        r.target = Some(Goal {
            text: "p99 <= 3x p50".into(),
            met: p99 <= 3.0 * p50,
        });
        rows.push(r);
        anyhow::Ok(rows)
    })?;
    drop(server);
    println!("wrenn-bench server: REST (wrenn up) against the host agent reached directly");
    for r in &rows {
        println!("{}", r.line());
    }
    Ok(())
}
