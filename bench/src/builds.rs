//! `wrenn-bench builds`: templates built through the API, in one run of a real `wrenn up`:
//!
//! 1. create → first exec from a built snapshot template (a recipe with a `START`) against the
//!    same from `minimal`, interleaved;
//! 2. the same from a built base template (a recipe of `RUN`s only: its disk booted afresh);
//! 3. the base template's build against the snapshot template's (the same steps, plus the
//!    fresh boot against the snapshot of the build capsule);
//! 4. with `--python-envd`: the `python` template built from a recipe (`FROM minimal` and
//!    Debian's packages through `apt-get` in the build capsule) against the built-in builder
//!    (`wrenn template build python` into a folder of its own: debootstrap, kernel, snapshot).
//!    Both fetch their packages from the machine's Debian mirror.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    report::{percentile, Row},
    rest::Rest,
    server::{ms, Server},
};

/// Network slots of this bench's `wrenn up`.
const SLOTS: &str = "6500-6599";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `wrenn` binary to run (`wrenn up`).
    #[arg(long)]
    wrenn: PathBuf,
    /// Where `make images` put the templates.
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    /// Create → first exec rounds per template [default: 10; quick 3].
    #[arg(long)]
    create_runs: Option<usize>,
    /// The static envd images get: also time the `python` template from a recipe against
    /// the built-in builder (minutes each; needs the Debian mirror).
    #[arg(long)]
    python_envd: Option<PathBuf>,
    /// A smoke run.
    #[arg(long)]
    quick: bool,
}

/// `python`'s packages over `minimal`'s (images/templates/python.packages), as a recipe.
const PYTHON: &[&str] = &[
    "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-pip python3-venv python3-numpy python3-requests && apt-get clean && rm -rf /var/lib/apt/lists/*",
];

/// The built-in builder making `python` in a folder of its own; how long it took.
fn builtin_python(wrenn: &std::path::Path, envd: &std::path::Path) -> Result<Duration> {
    let dir = tempfile::tempdir_in("/var/tmp").context("an images folder")?;
    let t = Instant::now();
    let out = std::process::Command::new(wrenn)
        .args(["template", "build", "python", "--images"])
        .arg(dir.path())
        .arg("--envd")
        .arg(envd)
        .output()?;
    if !out.status.success() {
        bail!(
            "wrenn template build python: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t.elapsed())
}

/// The steps both built templates share.
const STEPS: &[&str] = &[
    "RUN mkdir -p /srv && echo built > /srv/index.html",
    "ENV GREETING=hello",
    "WORKDIR /srv",
];

/// Builds template `name` from `recipe`; how long the build took (queued to done).
async fn build(rest: &Rest, name: &str, recipe: &[&str], want: &str) -> Result<Duration> {
    let t = Instant::now();
    let b = rest
        .call(
            reqwest::Method::POST,
            "/v1/builds",
            Some(json!({ "name": name, "recipe": recipe })),
        )
        .await?;
    let id = b["id"].as_str().context("no build id")?.to_string();
    loop {
        let b: Value = rest
            .call(reqwest::Method::GET, &format!("/v1/builds/{id}"), None)
            .await?;
        match b["status"].as_str() {
            Some("success") => {
                if b["template_type"] != want {
                    bail!("build {name} made a {} template", b["template_type"]);
                }
                return Ok(t.elapsed());
            }
            Some("failed" | "cancelled") => bail!("build {name}: {}", b["error"]),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Create → first exec from `template`, then destroyed; milliseconds.
async fn create_exec(rest: &Rest, template: &str) -> Result<f64> {
    let t = Instant::now();
    let id = rest.create(json!({ "template": template })).await?;
    rest.exec_true(&id).await?;
    let took = ms(t.elapsed());
    rest.destroy(&id).await?;
    Ok(took)
}

fn row(id: &'static str, label: &str, value: f64, baseline: f64, samples: usize) -> Row {
    let mut r = Row::new(id, label, "ms", value, baseline);
    r.subject = "built";
    r.samples = samples;
    r
}

pub fn run(args: Args) -> Result<()> {
    let runs = args.create_runs.unwrap_or(if args.quick { 3 } else { 10 });
    let server = Server::start(&args.wrenn, &args.images, SLOTS)?;
    let rt = tokio::runtime::Runtime::new()?;
    let rows = rt.block_on(async {
        let rest = Rest::new(server.base.clone(), server.key.clone())?;
        let mut snap: Vec<&str> = STEPS.to_vec();
        snap.push("START sleep 1000000");
        let snap_build = build(&rest, "bench-snap", &snap, "snapshot").await?;
        let base_build = build(&rest, "bench-base", STEPS, "base").await?;
        // Warm each once (the first create of a template may copy or map it).
        for t in ["minimal", "bench-snap", "bench-base"] {
            create_exec(&rest, t).await?;
        }
        let (mut minimal, mut snap, mut base) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let mut order = [0, 1, 2];
            order.rotate_left(i % 3);
            for side in order {
                match side {
                    0 => minimal.push(create_exec(&rest, "minimal").await?),
                    1 => snap.push(create_exec(&rest, "bench-snap").await?),
                    _ => base.push(create_exec(&rest, "bench-base").await?),
                }
            }
        }
        let m50 = percentile(&minimal, 50.0);
        let mut rows = vec![
            row(
                "create_snapshot_p50",
                "create → exec p50, built snapshot template vs minimal",
                percentile(&snap, 50.0),
                m50,
                runs,
            ),
            row(
                "create_base_p50",
                "create → exec p50, built base template vs minimal",
                percentile(&base, 50.0),
                m50,
                runs,
            ),
        ];
        let mut r = row(
            "build_base",
            "build: base template vs snapshot template",
            ms(base_build),
            ms(snap_build),
            1,
        );
        r.note = "same steps; a fresh boot against a snapshot".into();
        rows.push(r);
        if let Some(envd) = &args.python_envd {
            let recipe = build(&rest, "bench-python", PYTHON, "base").await?;
            let (wrenn, envd) = (args.wrenn.clone(), envd.clone());
            let builtin =
                tokio::task::spawn_blocking(move || builtin_python(&wrenn, &envd)).await??;
            let mut r = row(
                "python_recipe",
                "python: from a recipe vs the built-in builder",
                ms(recipe),
                ms(builtin),
                1,
            );
            r.note = "recipe: FROM minimal + apt-get; built-in: debootstrap + snapshot".into();
            rows.push(r);
        }
        anyhow::Ok(rows)
    })?;
    drop(server);
    println!("wrenn-bench builds: templates built through the API (wrenn up)");
    for r in &rows {
        println!("{}", r.line());
    }
    Ok(())
}
