//! `wrenn-bench oci`: unpacking OCI layers with `wrenn_oci::unpack` (whiteouts, path safety,
//! modes, owners) against GNU `tar -x` of the same layer into an empty folder, for a plain,
//! a gzip and a zstd layer of a generated tree (many small files, some large, links). Runs
//! alternate between the two sides, each timed from a flushed page cache to its own data
//! flushed (`sync`); each figure is the median of `--runs` against the baseline's median.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::report::{percentile, Row};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files in the generated tree.
    #[arg(long, default_value_t = 20_000)]
    files: usize,
    /// Runs per side (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the tree, layers and unpacked copies go.
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A tree of `files` files (90% up to 8 KiB, the rest up to 512 KiB) in 100 folders, with a
/// symbolic and a hard link per folder.
fn generate(dir: &Path, files: usize) -> Result<u64> {
    let mut bytes = 0u64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for d in 0..100 {
        let sub = dir.join(format!("usr/lib/pkg{d:03}"));
        std::fs::create_dir_all(&sub)?;
        for f in 0..files / 100 {
            let size = if next() % 10 == 0 {
                next() % (512 << 10)
            } else {
                next() % (8 << 10)
            };
            // Compressible but not trivially: repeated words with a counter.
            let text: Vec<u8> = format!("line {f} of folder {d} holds some text\n")
                .into_bytes()
                .into_iter()
                .cycle()
                .take(size as usize)
                .collect();
            std::fs::write(sub.join(format!("f{f}.py")), &text)?;
            bytes += size;
        }
        std::os::unix::fs::symlink("f0.py", sub.join("link.py"))?;
        std::fs::hard_link(sub.join("f1.py"), sub.join("hard.py"))?;
    }
    Ok(bytes)
}

fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Times `one` into a fresh folder; pending writeback is flushed first (and the folder's
/// removal is not timed), so one side's writes do not slow the other's clock.
fn timed(scratch: &Path, one: &mut dyn FnMut(&Path) -> Result<()>) -> Result<f64> {
    let dest = scratch.join("run");
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::create_dir(&dest)?;
    let started = Instant::now();
    one(&dest)?;
    // The data written is part of the cost: flushed inside the clock for both sides.
    // SAFETY: as above.
    unsafe { libc::sync() };
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dest)?;
    Ok(secs)
}

pub fn run(args: Args) -> Result<()> {
    ensure!(
        args.files >= 100 && args.runs > 0,
        "--files at least 100, --runs at least 1"
    );
    let work = tempfile::Builder::new()
        .prefix("wrenn-bench-oci-")
        .tempdir_in(&args.tmp_dir)?;
    let w = work.path();
    let tree = w.join("tree");
    let bytes = generate(&tree, args.files)?;
    let layer = w.join("layer.tar");
    sh(Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    sh(Command::new("sh").arg("-c").arg(format!(
        "gzip -1 -c {l} > {l}.gz && zstd -q -3 -c {l} > {l}.zst",
        l = layer.display()
    )))?;
    println!(
        "oci: {} files, {} MiB of content; median of {} runs per side",
        args.files,
        bytes >> 20,
        args.runs
    );
    let mut rows = Vec::new();
    for (id, label, file, tar_flag) in [
        ("oci_unpack_tar", "unpack plain tar", layer.clone(), None),
        (
            "oci_unpack_gzip",
            "unpack tar+gzip",
            w.join("layer.tar.gz"),
            Some("-z"),
        ),
        (
            "oci_unpack_zstd",
            "unpack tar+zstd",
            w.join("layer.tar.zst"),
            Some("--zstd"),
        ),
    ] {
        let mut ours_runs = Vec::new();
        let mut base_runs = Vec::new();
        // Interleaved, so both sides see the same machine.
        for _ in 0..args.runs {
            ours_runs.push(timed(w, &mut |dest| {
                wrenn_oci::unpack::apply_blob(dest, &file, id)?;
                Ok(())
            })?);
            base_runs.push(timed(w, &mut |dest| {
                let mut c = Command::new("tar");
                c.arg("-C").arg(dest).arg("-xf").arg(&file);
                if let Some(f) = tar_flag {
                    c.arg(f);
                }
                sh(&mut c)
            })?);
        }
        let ours = percentile(&ours_runs, 50.0);
        let base = percentile(&base_runs, 50.0);
        let mut row = Row::new(
            id,
            label,
            "MB/s",
            bytes as f64 / ours / 1e6,
            bytes as f64 / base / 1e6,
        );
        row.subject = "wrenn-oci";
        row.samples = args.runs;
        row.note = "baseline: GNU tar -x".into();
        println!("{}", row.line());
        rows.push(row);
    }
    if let Some(path) = args.json {
        let doc: Value =
            json!({"bench": "oci", "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>()});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(())
}
