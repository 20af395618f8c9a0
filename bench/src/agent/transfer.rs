//! 2. A streamed file transfer: `WriteFileStream` / `ReadFileStream` through the agent against
//!    `POST` / `GET /files` straight to envd, each checked off the clock.

use std::{net::SocketAddr, time::Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use wrenn_proto::agent::v1::{
    agent_client::AgentClient, write_file_stream_request::Part, FileRequest, WriteFileStreamRequest,
};

use super::cpu::{Cpu, CpuMeter};
use super::{hex, within, Settings, CALL_TIMEOUT, TRANSFER_TIMEOUT, UPLOAD_CHUNK};

pub(super) struct Transfers {
    /// MB/s per run: `[agent, direct]`.
    pub(super) upload: [Vec<f64>; 2],
    pub(super) download: [Vec<f64>; 2],
    /// CPU seconds per run: `[agent, direct]`.
    pub(super) cpu_upload: [Vec<Cpu>; 2],
    pub(super) cpu_download: [Vec<Cpu>; 2],
    pub(super) sha256: Vec<u8>,
}

pub(super) async fn transfers(
    client: &mut AgentClient<Channel>,
    addr: SocketAddr,
    token: &str,
    id: &str,
    qemu_pid: u32,
    s: &Settings,
) -> Result<Transfers> {
    let meter = CpuMeter { qemu_pid };
    let source = Bytes::from(pseudo_random(s.file_bytes));
    let sha256 = Sha256::digest(&source).to_vec();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let direct = Direct {
        http: &http,
        url: format!("http://{addr}/files"),
        token,
        path: &s.guest_file,
    };
    let mut out = Transfers {
        upload: Default::default(),
        download: Default::default(),
        cpu_upload: Default::default(),
        cpu_download: Default::default(),
        sha256,
    };
    let file = FileRequest {
        capsule_id: id.into(),
        path: s.guest_file.clone(),
        user: String::new(),
    };
    // A file left by an earlier, failed run would not fit next to a new one.
    let _ = client.remove(file.clone()).await;
    // Run 0 is a warm-up (the first writes into a fresh capsule's tmpfs also fault in its
    // guest memory), checked but not counted.
    for run in 0..=s.transfer_runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        // One side at a time, and the file removed before the other side's upload: the
        // guest's /tmp holds one copy (plus the upload's temporary file), not two.
        for side in order {
            let name = ["agent", "direct"][side];
            let (up, down) = if side == 0 {
                let up = within(TRANSFER_TIMEOUT, "WriteFileStream", async {
                    agent_upload(client, &file, &source, &meter).await
                })
                .await;
                let down = within(TRANSFER_TIMEOUT, "ReadFileStream", async {
                    agent_download(client, &file, &meter).await
                })
                .await;
                (up, down)
            } else {
                let up = within(
                    TRANSFER_TIMEOUT,
                    "POST /files",
                    direct.upload(&source, &meter),
                )
                .await;
                let down = within(TRANSFER_TIMEOUT, "GET /files", direct.download(&meter)).await;
                (up, down)
            };
            let up = up.with_context(|| format!("{name} upload #{run}"))?;
            let down = down.with_context(|| format!("{name} download #{run}"))?;
            // Checks, off the clock: the guest's file after the upload, the bytes downloaded.
            let stat = within(CALL_TIMEOUT, "Stat", async {
                Ok(client.stat(file.clone()).await?.into_inner())
            })
            .await?;
            ensure!(
                stat.size as u64 == s.file_bytes && up.size == s.file_bytes,
                "{name} upload #{run}: the guest file has {} bytes (the upload answered {}), not {}",
                stat.size,
                up.size,
                s.file_bytes
            );
            let (got, digest) = length_and_sha256(&down.chunks);
            ensure!(
                got == s.file_bytes && digest == out.sha256,
                "{name} download #{run}: {got} bytes with sha256 {}, not {} bytes with sha256 {}",
                hex(&digest),
                s.file_bytes,
                hex(&out.sha256)
            );
            within(CALL_TIMEOUT, "Remove", async {
                client.remove(file.clone()).await?;
                Ok(())
            })
            .await?;
            if run == 0 {
                continue;
            }
            out.upload[side].push(mb_per_s(s.file_bytes, up.secs));
            out.download[side].push(mb_per_s(s.file_bytes, down.secs));
            out.cpu_upload[side].push(up.cpu);
            out.cpu_download[side].push(down.cpu);
        }
    }
    Ok(out)
}

/// An upload: how long it took and the size the receiver reported (or the bytes sent, when
/// it reports none).
struct Upload {
    secs: f64,
    size: u64,
    cpu: Cpu,
}

/// A download: how long it took and what arrived, checked afterwards.
struct Download {
    secs: f64,
    chunks: Vec<Bytes>,
    cpu: Cpu,
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// `size` bytes of incompressible pseudo-random data (xorshift64*).
fn pseudo_random(size: u64) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64 ^ size;
    let mut data = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    for word in data.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
    data
}

fn length_and_sha256(chunks: &[Bytes]) -> (u64, Vec<u8>) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    for c in chunks {
        h.update(c);
        n += c.len() as u64;
    }
    (n, h.finalize().to_vec())
}

async fn agent_upload(
    client: &mut AgentClient<Channel>,
    file: &FileRequest,
    source: &Bytes,
    meter: &CpuMeter,
) -> Result<Upload> {
    // The messages are built before the clock starts.
    let mut parts = Vec::with_capacity(source.len() / UPLOAD_CHUNK + 2);
    parts.push(WriteFileStreamRequest {
        part: Some(Part::Start(
            wrenn_proto::agent::v1::write_file_stream_request::Start {
                capsule_id: file.capsule_id.clone(),
                path: file.path.clone(),
                user: file.user.clone(),
            },
        )),
    });
    parts.extend(source.chunks(UPLOAD_CHUNK).map(|c| WriteFileStreamRequest {
        part: Some(Part::Data(c.to_vec())),
    }));
    let cpu = meter.read();
    let t = Instant::now();
    let entry = client
        .write_file_stream(tokio_stream::iter(parts))
        .await?
        .into_inner();
    let secs = t.elapsed().as_secs_f64();
    Ok(Upload {
        secs,
        size: entry.size as u64,
        cpu: meter.since(cpu),
    })
}

async fn agent_download(
    client: &mut AgentClient<Channel>,
    file: &FileRequest,
    meter: &CpuMeter,
) -> Result<Download> {
    let cpu = meter.read();
    let t = Instant::now();
    let mut stream = client.read_file_stream(file.clone()).await?.into_inner();
    let mut chunks = Vec::new();
    while let Some(c) = stream.message().await? {
        chunks.push(Bytes::from(c.data));
    }
    Ok(Download {
        secs: t.elapsed().as_secs_f64(),
        chunks,
        cpu: meter.since(cpu),
    })
}

/// envd's `/files`, straight (no agent in between).
struct Direct<'a> {
    http: &'a reqwest::Client,
    url: String,
    token: &'a str,
    path: &'a str,
}

impl Direct<'_> {
    async fn upload(&self, source: &Bytes, meter: &CpuMeter) -> Result<Upload> {
        let cpu = meter.read();
        let t = Instant::now();
        let resp = self
            .http
            .post(&self.url)
            .query(&[("path", self.path)])
            .header("x-access-token", self.token)
            .header("content-type", "application/octet-stream")
            .body(source.clone())
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let secs = t.elapsed().as_secs_f64();
        ensure!(
            status.is_success(),
            "envd answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(Upload {
            secs,
            size: source.len() as u64,
            cpu: meter.since(cpu),
        })
    }

    async fn download(&self, meter: &CpuMeter) -> Result<Download> {
        let cpu = meter.read();
        let t = Instant::now();
        let mut resp = self
            .http
            .get(&self.url)
            .query(&[("path", self.path)])
            .header("x-access-token", self.token)
            .send()
            .await?;
        let status = resp.status();
        ensure!(status.is_success(), "envd answered {status}");
        let mut chunks = Vec::new();
        while let Some(c) = resp.chunk().await? {
            chunks.push(c);
        }
        Ok(Download {
            secs: t.elapsed().as_secs_f64(),
            chunks,
            cpu: meter.since(cpu),
        })
    }
}
