//! `wrenn-bench envd`: envd's figures, each against a baseline measured in the same run.
//!
//! 1. Exec round trip of `/bin/true` through `process.Process/Start` (Connect server stream,
//!    JSON codec, one kept-alive HTTP/1.1 connection) against spawning `/bin/true` directly.
//! 2. Upload and download throughput of a large file with the real `curl`, against the same
//!    `curl` commands on a plain loopback static file server (`wrenn-bench static-server`).
//! 3. Idle RSS of a fresh envd after a few requests, with that server's for scale (and both
//!    again after the load of 1 and 2).
//! 4. Start-to-ready: spawn, then poll `GET /health` until it answers.

use std::{
    ffi::OsString,
    fs,
    io::{Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::{
    http1::{self, Conn, COMPRESSED, END_STREAM},
    procs::{self, Running, Target, WorkDir},
    report::{percentile, Row, Target as Goal},
    static_server,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The envd binary to measure (use the release build).
    #[arg(long)]
    envd: PathBuf,
    /// Also write the results as JSON to this path.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exec round trips per side (after 10 warm-up ones).
    #[arg(long, default_value_t = 200)]
    exec_runs: usize,
    /// Size of the transferred file, in MiB.
    #[arg(long, default_value_t = 100)]
    file_mib: u64,
    /// Uploads and downloads per side; the best one counts.
    #[arg(long, default_value_t = 3)]
    transfer_runs: usize,
    /// Starts per side for start-to-ready.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Parent of the scratch directory (it needs about 3x the file size free).
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,
    /// The curl binary.
    #[arg(long, default_value = "curl")]
    curl: PathBuf,
}

/// The `process.Process/Start` request, as the brief of this bench fixes it.
const START_REQUEST: &[u8] = br#"{"process":{"cmd":"/bin/true"}}"#;
const EXEC_WARMUP: usize = 10;
const EXEC_TARGET_MS: f64 = 2.0;
const THROUGHPUT_TARGET: f64 = 0.5;
const RSS_TARGET_MIB: f64 = 10.0;
const IDLE: Duration = Duration::from_secs(2);

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    ensure!(
        args.exec_runs > 0 && args.transfer_runs > 0 && args.starts > 0 && args.file_mib > 0,
        "run counts and the file size must be positive"
    );
    let envd_bin = fs::canonicalize(&args.envd)
        .with_context(|| format!("envd binary {}", args.envd.display()))?;
    let curl_version = curl_version(&args.curl)?;
    let file_bytes = args.file_mib << 20;
    if let Some(free) = procs::free_bytes(&args.tmp_dir) {
        let need = 3 * file_bytes + (64 << 20);
        ensure!(
            free >= need,
            "{} has {} MiB free; this bench needs about {} MiB (see --tmp-dir)",
            args.tmp_dir.display(),
            free >> 20,
            need >> 20
        );
    }
    let work = WorkDir::create(&args.tmp_dir)?;
    let dir = work.path();
    let envd = Target::new("envd", envd_bin.clone(), Vec::new(), "envd listening on ");
    let baseline = Target::new(
        "baseline server",
        std::env::current_exe().context("locating wrenn-bench itself")?,
        vec![
            OsString::from("static-server"),
            OsString::from("--root"),
            dir.as_os_str().to_owned(),
        ],
        static_server::READY_PREFIX,
    );
    eprintln!(
        "wrenn-bench envd: {} (scratch {})",
        envd_bin.display(),
        dir.display()
    );

    let envd_srv = envd.start(&dir.join("envd.log"))?;
    let base_srv = baseline.start(&dir.join("baseline.log"))?;
    let mut rows = Vec::new();

    eprintln!("[1/4] exec round trip: {} runs per side", args.exec_runs);
    rows.extend(exec_round_trip(envd_srv.addr, args.exec_runs)?);

    eprintln!(
        "[2/4] {} MiB upload/download with curl: best of {}",
        args.file_mib, args.transfer_runs
    );
    rows.extend(transfers(&args, dir, &envd_srv, &base_srv)?);

    eprintln!("[3/4] idle RSS ({} s idle)", IDLE.as_secs());
    rows.extend(idle_rss(&envd, &baseline, dir, &envd_srv, &base_srv)?);
    drop(envd_srv);
    drop(base_srv);

    eprintln!("[4/4] start-to-ready: {} starts per side", args.starts);
    rows.push(start_to_ready(&envd, &baseline, args.starts)?);
    drop(work);
    let elapsed = started.elapsed();

    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!("wrenn-bench envd: {}", envd_bin.display());
    println!("{cpus} CPUs, {curl_version}; ratio = envd / baseline (MB/s: higher is better; ms and MiB: lower is better)");
    println!();
    for row in &rows {
        println!("{}", row.line());
    }
    println!();
    println!(
        "baselines: exec = std::process::Command spawn + wait of /bin/true (stdout/stderr piped);"
    );
    println!("           files, RSS, start = `wrenn-bench static-server`, a raw-Tokio HTTP/1.1 file server, same curl commands");
    println!("finished in {:.1} s", elapsed.as_secs_f64());

    if let Some(path) = &args.json {
        let doc = json!({
            "bench": "envd",
            "envd_binary": envd_bin,
            "cpus": cpus,
            "curl": curl_version,
            "elapsed_s": elapsed.as_secs_f64(),
            "results": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_string_pretty(&doc)?;
        text.push('\n');
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn curl_version(curl: &Path) -> Result<String> {
    let out = Command::new(curl)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version (is curl installed?)", curl.display()))?;
    ensure!(out.status.success(), "{} --version failed", curl.display());
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

// ---- 1. exec round trip ----

fn exec_round_trip(addr: SocketAddr, runs: usize) -> Result<Vec<Row>> {
    let mut conn = Conn::open(addr)?;
    let request = http1::envelope(0, START_REQUEST);
    let mut envd_ms = Vec::with_capacity(runs);
    let mut base_ms = Vec::with_capacity(runs);
    // Interleaved, so that both sides see the same machine noise.
    for i in 0..EXEC_WARMUP + runs {
        let e = exec_envd(&mut conn, &request).with_context(|| format!("envd exec #{i}"))?;
        let b = spawn_true()?;
        if i >= EXEC_WARMUP {
            envd_ms.push(ms(e));
            base_ms.push(ms(b));
        }
    }
    let (e50, b50) = (percentile(&envd_ms, 50.0), percentile(&base_ms, 50.0));
    let mut p50 = Row::new("exec_true_p50", "exec true p50", "ms", e50, b50);
    p50.samples = runs;
    p50.note = format!("overhead {:+.2} ms", e50 - b50);
    p50.extra.insert("overhead_ms".into(), json!(e50 - b50));
    p50.target = Some(Goal {
        text: format!("p50 <= {EXEC_TARGET_MS} ms"),
        met: e50 <= EXEC_TARGET_MS,
    });
    let (e99, b99) = (percentile(&envd_ms, 99.0), percentile(&base_ms, 99.0));
    let mut p99 = Row::new("exec_true_p99", "exec true p99", "ms", e99, b99);
    p99.samples = runs;
    p99.note = format!("overhead {:+.2} ms", e99 - b99);
    p99.extra.insert("overhead_ms".into(), json!(e99 - b99));
    Ok(vec![p50, p99])
}

/// One `process.Process/Start` of `/bin/true`: the time from sending the request to reading
/// the end-stream frame. The stream is checked afterwards, off the clock.
fn exec_envd(conn: &mut Conn, request: &[u8]) -> Result<Duration> {
    let start = Instant::now();
    conn.send(
        "POST",
        "/process.Process/Start",
        &[
            ("content-type", "application/connect+json"),
            ("connect-protocol-version", "1"),
        ],
        request,
    )?;
    let head = conn.read_head()?;
    if head.status != 200 {
        let mut text = String::new();
        let _ = conn.body(&head, "POST")?.read_to_string(&mut text);
        bail!("Start answered HTTP {}: {text}", head.status);
    }
    let mut body = conn.body(&head, "POST")?;
    let mut messages = Vec::new();
    let end = loop {
        let (flags, message) = http1::read_envelope(&mut body)?;
        ensure!(flags & COMPRESSED == 0, "envd sent a compressed envelope");
        if flags & END_STREAM != 0 {
            break message;
        }
        messages.push(message);
    };
    let elapsed = start.elapsed();
    body.drain()
        .context("reading the end of the Start response")?;
    let content_type = head.header("content-type").unwrap_or_default();
    ensure!(
        content_type == "application/connect+json",
        "Start answered content-type {content_type:?}"
    );
    ensure!(
        !head.closes(),
        "envd closes the connection after Start: no keep-alive"
    );
    check_start_stream(&messages, &end)?;
    Ok(elapsed)
}

fn check_start_stream(messages: &[Vec<u8>], end: &[u8]) -> Result<()> {
    let parse = |m: &[u8]| -> Result<Value> {
        serde_json::from_slice(m).with_context(|| {
            format!(
                "Start message is not JSON: {:?}",
                String::from_utf8_lossy(m)
            )
        })
    };
    let first = parse(
        messages
            .first()
            .context("the Start stream had no messages")?,
    )?;
    ensure!(
        first.pointer("/event/start/pid").is_some(),
        "the first Start message is not a start event: {first}"
    );
    let last = parse(
        messages
            .last()
            .context("the Start stream had no messages")?,
    )?;
    let end_event = last
        .pointer("/event/end")
        .with_context(|| format!("the last Start message is not an end event: {last}"))?;
    let code = end_event
        .get("exitCode")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    ensure!(code == 0, "/bin/true ended with {end_event}");
    let trailer = parse(end)?;
    ensure!(
        trailer.get("error").is_none(),
        "the Start stream ended with an error: {trailer}"
    );
    Ok(())
}

fn spawn_true() -> Result<Duration> {
    let start = Instant::now();
    let out = Command::new("/bin/true")
        .stdin(Stdio::null())
        .output()
        .context("spawning /bin/true")?;
    let elapsed = start.elapsed();
    ensure!(out.status.success(), "/bin/true exited with {}", out.status);
    Ok(elapsed)
}

// ---- 2. upload and download throughput ----

fn transfers(args: &Args, dir: &Path, envd: &Running, base: &Running) -> Result<Vec<Row>> {
    let size = args.file_mib << 20;
    let source = dir.join("source.bin");
    write_source(&source, size)?;
    let sides = [("envd", envd.addr), ("baseline", base.addr)];
    let mut up: [Vec<f64>; 2] = Default::default();
    let mut down: [Vec<f64>; 2] = Default::default();
    for run in 0..args.transfer_runs {
        // Alternate who goes first, so that neither side always follows the other's writes.
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (name, addr) = sides[i];
            let dest = dir.join(format!("upload-{name}.bin"));
            let mbps = curl_upload(&args.curl, addr, &source, &dest, size)
                .with_context(|| format!("uploading to {name}"))?;
            // Deleted at once: the dirty pages never reach the disk to slow the next run.
            fs::remove_file(&dest)?;
            up[i].push(mbps);
        }
        for i in order {
            let (name, addr) = sides[i];
            let mbps = curl_download(&args.curl, addr, &source, size)
                .with_context(|| format!("downloading from {name}"))?;
            down[i].push(mbps);
        }
    }
    fs::remove_file(&source)?;
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let row = |id, what: &str, runs: &[Vec<f64>; 2]| {
        let mut row = Row::new(
            id,
            &format!("{what} {} MiB", args.file_mib),
            "MB/s",
            best(&runs[0]),
            best(&runs[1]),
        );
        row.samples = args.transfer_runs;
        row.note = format!("envd at {:.0} % of baseline", row.ratio() * 100.0);
        row.target = Some(Goal {
            text: format!(">= {:.0} % of baseline", THROUGHPUT_TARGET * 100.0),
            met: row.ratio() >= THROUGHPUT_TARGET,
        });
        row.extra.insert("runs_envd".into(), json!(runs[0]));
        row.extra.insert("runs_baseline".into(), json!(runs[1]));
        row.extra.insert("bytes".into(), json!(size));
        row
    };
    Ok(vec![
        row("upload_mb_s", "upload", &up),
        row("download_mb_s", "download", &down),
    ])
}

/// `size` bytes of incompressible pseudo-random data, synced to disk.
fn write_source(path: &Path, size: u64) -> Result<()> {
    let mut file =
        fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}

fn files_url(addr: SocketAddr, path: &Path) -> String {
    format!(
        "http://{addr}/files?path={}",
        http1::percent_encode(&path.to_string_lossy())
    )
}

/// Runs curl with `args` after the common ones; returns (seconds, bytes up, bytes down) as
/// curl itself measured them (`time_total` excludes curl's start-up and file loading).
fn curl(curl: &Path, args: &[OsString]) -> Result<(f64, u64, u64)> {
    let out = Command::new(curl)
        .args(["-s", "-S", "-o", "/dev/null", "-w"])
        .arg("%{http_code} %{time_total} %{size_upload} %{size_download}")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", curl.display()))?;
    ensure!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [code, secs, up, down] = fields[..] else {
        bail!("unexpected curl -w output {text:?}");
    };
    ensure!(code.starts_with('2'), "HTTP {code}");
    Ok((secs.parse()?, up.parse()?, down.parse()?))
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn curl_upload(
    curl_bin: &Path,
    addr: SocketAddr,
    source: &Path,
    dest: &Path,
    size: u64,
) -> Result<f64> {
    let mut data = OsString::from("@");
    data.push(source);
    let args = [
        OsString::from("-X"),
        OsString::from("POST"),
        OsString::from("-H"),
        OsString::from("content-type: application/octet-stream"),
        OsString::from("--data-binary"),
        data,
        OsString::from(files_url(addr, dest)),
    ];
    let (secs, up, _) = curl(curl_bin, &args)?;
    ensure!(up == size, "curl sent {up} bytes, not {size}");
    let written = fs::metadata(dest)
        .with_context(|| format!("the uploaded file {}", dest.display()))?
        .len();
    ensure!(
        written == size,
        "the uploaded file has {written} bytes, not {size}"
    );
    Ok(mb_per_s(size, secs))
}

fn curl_download(curl_bin: &Path, addr: SocketAddr, source: &Path, size: u64) -> Result<f64> {
    let (secs, _, down) = curl(curl_bin, &[OsString::from(files_url(addr, source))])?;
    ensure!(down == size, "curl received {down} bytes, not {size}");
    Ok(mb_per_s(size, secs))
}

// ---- 3. idle RSS ----

fn idle_rss(
    envd: &Target,
    baseline: &Target,
    dir: &Path,
    loaded_envd: &Running,
    loaded_base: &Running,
) -> Result<Vec<Row>> {
    let fresh_envd = envd.start(&dir.join("envd-idle.log"))?;
    let fresh_base = baseline.start(&dir.join("baseline-idle.log"))?;
    few_requests(fresh_envd.addr, dir, "envd", true).context("requests to a fresh envd")?;
    few_requests(fresh_base.addr, dir, "baseline", false)
        .context("requests to a fresh baseline server")?;
    thread::sleep(IDLE);
    let mib = |r: &Running| r.rss_kib().map(|kib| kib as f64 / 1024.0);
    let mut idle = Row::new(
        "idle_rss",
        "idle RSS",
        "MiB",
        mib(&fresh_envd)?,
        mib(&fresh_base)?,
    );
    idle.note = "fresh, a few requests, 2 s idle".into();
    idle.target = Some(Goal {
        text: format!("<= {RSS_TARGET_MIB} MiB"),
        met: idle.value <= RSS_TARGET_MIB,
    });
    let mut loaded = Row::new(
        "rss_after_load",
        "RSS after load",
        "MiB",
        mib(loaded_envd)?,
        mib(loaded_base)?,
    );
    loaded.note = "after the runs above, 2 s idle".into();
    Ok(vec![idle, loaded])
}

/// `/health`, a 4 KiB upload and its download, and (for envd) one exec.
fn few_requests(addr: SocketAddr, dir: &Path, name: &str, exec: bool) -> Result<()> {
    let mut conn = Conn::open(addr)?;
    let (head, _) = conn.request("GET", "/health", &[], b"")?;
    ensure!(head.status / 100 == 2, "/health answered {}", head.status);
    let path = dir.join(format!("rss-{name}.bin"));
    let target = format!(
        "/files?path={}",
        http1::percent_encode(&path.to_string_lossy())
    );
    let data = vec![b'x'; 4096];
    let (head, _) = conn.request(
        "POST",
        &target,
        &[("content-type", "application/octet-stream")],
        &data,
    )?;
    ensure!(head.status / 100 == 2, "upload answered {}", head.status);
    let (head, body) = conn.request("GET", &target, &[], b"")?;
    ensure!(head.status / 100 == 2, "download answered {}", head.status);
    ensure!(body == data, "download returned other bytes than uploaded");
    if exec {
        exec_envd(&mut conn, &http1::envelope(0, START_REQUEST))?;
    }
    Ok(())
}

// ---- 4. start-to-ready ----

fn start_to_ready(envd: &Target, baseline: &Target, starts: usize) -> Result<Row> {
    let mut e = Vec::with_capacity(starts);
    let mut b = Vec::with_capacity(starts);
    for _ in 0..starts {
        e.push(ms(envd.time_to_ready()?));
        b.push(ms(baseline.time_to_ready()?));
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mut row = Row::new(
        "start_to_ready_p50",
        "start-to-ready p50",
        "ms",
        percentile(&e, 50.0),
        percentile(&b, 50.0),
    );
    row.samples = starts;
    row.note = format!("max envd {:.2} ms, baseline {:.2} ms", max(&e), max(&b));
    row.extra.insert("runs_envd_ms".into(), json!(e));
    row.extra.insert("runs_baseline_ms".into(), json!(b));
    Ok(row)
}
