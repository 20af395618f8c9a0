//! `wrenn-bench transfer` (and [`transfer_figures`] for `wrenn-bench cluster`): a snapshot
//! template travelling from one host agent to another — `ExportTemplate` on agent A piped
//! into `ImportTemplate` on agent B over loopback gRPC, as the control plane relays it (sparse
//! chunks, SHA-256 per file, written aside and renamed) — against `cp -r --sparse=always` of
//! the same files on the same disk, measured in the same run, interleaved. MB/s counts the
//! bytes of data the files hold (holes excluded), the same for both.
//!
//! The template is made without a VM: the base template's ready snapshot (kernel, initrd,
//! memory, device state, disk) hard-linked into a scratch images folder with a
//! `template.json`, which is exactly a snapshot template's layout.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{ensure, Context, Result};
use tokio_stream::StreamExt;
use wrenn_proto::agent::v1::{DeleteTemplateRequest, ExportTemplateRequest};

use super::test_agent::TestAgent;
use crate::report::Row;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where `make images` put the templates (with their snapshots).
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/tmp/wrenn/images")]
    images: PathBuf,
    /// The base template whose snapshot travels.
    #[arg(long, default_value = "minimal")]
    template: String,
    /// Scratch space (the same file system as `--images`, for the hard links).
    #[arg(long, default_value = "/var/tmp")]
    tmp_dir: PathBuf,
    /// Transfers per side, interleaved; the best counts.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The figures: MB/s of the best run per side, and the bytes moved.
#[derive(Debug, Clone)]
pub struct TransferFigures {
    pub relay_mb_s: f64,
    pub copy_mb_s: f64,
    pub data_bytes: u64,
}

impl TransferFigures {
    pub fn rows(&self) -> Vec<Row> {
        let mut r = Row::new(
            "template_transfer",
            "template transfer",
            "MB/s",
            self.relay_mb_s,
            self.copy_mb_s,
        );
        r.subject = "relay";
        vec![r]
    }
}

/// A base template's files that a snapshot template also has (plus its `template.json`).
const FILES: &[&str] = &[
    "vmlinuz",
    "initrd.img",
    "snapshot/vm.json",
    "snapshot/state",
    "snapshot/memory",
    "snapshot/disk.img",
];

/// Bytes of data (allocated blocks) under `dir`.
fn data_bytes(dir: &Path) -> u64 {
    FILES
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

fn make_template(images: &Path, base: &str, into: &Path, name: &str) -> Result<PathBuf> {
    let dir = into.join(name);
    std::fs::create_dir_all(dir.join("snapshot"))?;
    let src = images.join(base);
    for f in FILES {
        let from = src.join(f);
        std::fs::hard_link(&from, dir.join(f))
            .with_context(|| format!("linking {}", from.display()))?;
    }
    std::fs::write(
        dir.join("template.json"),
        serde_json::json!({"base": base, "from_capsule": "cl-bench", "created_at_unix": 0, "envd_token": ""})
            .to_string(),
    )?;
    Ok(dir)
}

/// Measures `runs` relays and `runs` copies of a template made from `base`'s snapshot.
pub async fn transfer_figures(
    images: &Path,
    base: &str,
    tmp: &Path,
    runs: usize,
) -> Result<TransferFigures> {
    let scratch = tempfile::tempdir_in(tmp)?;
    let (images_a, images_b) = (
        scratch.path().join("a-images"),
        scratch.path().join("b-images"),
    );
    std::fs::create_dir_all(&images_b)?;
    let name = "bench-transfer";
    let src = make_template(images, base, &images_a, name)?;
    let bytes = data_bytes(&src) + 4096;
    let (data_a, data_b) = (scratch.path().join("a"), scratch.path().join("b"));
    let a = TestAgent::start(&data_a, &images_a, 1).await?;
    let b = TestAgent::start(&data_b, &images_b, 1).await?;
    let (mut relay, mut copy) = (Vec::new(), Vec::new());
    let measured = async {
        for i in 0..runs.max(1) {
            let (mut ca, mut cb) = (a.client.clone(), b.client.clone());
            let t = Instant::now();
            let export = ca
                .export_template(ExportTemplateRequest { name: name.into() })
                .await?
                .into_inner()
                .map_while(|c| c.ok());
            let got = cb.import_template(export).await?.into_inner();
            relay.push(t.elapsed().as_secs_f64());
            ensure!(got.name == name, "imported {}", got.name);
            cb.delete_template(DeleteTemplateRequest { name: name.into() })
                .await?;

            let to = scratch.path().join(format!("cp-{i}"));
            let t = Instant::now();
            let ok = std::process::Command::new("cp")
                .args(["-r", "--sparse=always"])
                .arg(&src)
                .arg(&to)
                .status()?
                .success();
            copy.push(t.elapsed().as_secs_f64());
            ensure!(ok, "cp failed");
            std::fs::remove_dir_all(&to)?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = a.shutdown(&data_a).await;
    let _ = b.shutdown(&data_b).await;
    measured?;
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mb = bytes as f64 / 1e6;
    Ok(TransferFigures {
        relay_mb_s: mb / best(&relay),
        copy_mb_s: mb / best(&copy),
        data_bytes: bytes,
    })
}

pub fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let f = rt.block_on(transfer_figures(
        &args.images,
        &args.template,
        &args.tmp_dir,
        args.runs,
    ))?;
    println!(
        "wrenn-bench transfer: template {} ({} MB of data), best of {}",
        args.template,
        f.data_bytes / 1_000_000,
        args.runs
    );
    for r in f.rows() {
        println!("{}", r.line());
    }
    Ok(())
}
