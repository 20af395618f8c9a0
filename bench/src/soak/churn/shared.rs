//! What the workers and the killer share: the counts, the capsules in use with the files each
//! was given, and the operations run on a capsule (each checked).

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use wrenn_client::{CapsuleStatus, Client, CreateCapsule, Exec};

use super::{KEEP_ERRORS, MAX_FILES, SETTLE};
use crate::soak::Rng;

#[derive(Default)]
pub(super) struct Counts {
    pub(super) creates: u64,
    pub(super) execs: u64,
    pub(super) writes: u64,
    pub(super) bytes_written: u64,
    pub(super) file_checks: u64,
    pub(super) pauses: u64,
    pub(super) resumes: u64,
    pub(super) snapshots: u64,
    pub(super) snapshot_capsules: u64,
    pub(super) templates_deleted: u64,
    pub(super) destroys: u64,
    pub(super) kills: u64,
    pub(super) killed_error: u64,
    pub(super) killed_destroyed: u64,
    /// Killed capsules that showed another state than `error` (and what).
    pub(super) killed_other: Vec<String>,
    pub(super) survivors: u64,
    pub(super) survivor_files: u64,
    pub(super) bad_files: u64,
    pub(super) errors: Vec<String>,
}

pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) template: String,
    pub(super) deadline: Instant,
    /// Capsules in use by a worker: the killer picks among their VMMs.
    pub(super) live: Mutex<HashSet<String>>,
    pub(super) killed: Mutex<HashSet<String>>,
    pub(super) clone_gate: tokio::sync::Semaphore,
    pub(super) counts: Mutex<Counts>,
    pub(super) errors: AtomicU64,
}

#[derive(Clone)]
pub(super) struct File {
    path: String,
    sha: [u8; 32],
}

pub(super) struct Cap {
    pub(super) id: String,
    pub(super) files: Vec<File>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl Shared {
    pub(super) fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn error(&self, what: String) {
        let n = self.errors.fetch_add(1, Relaxed);
        eprintln!("soak churn: error: {what}");
        if (n as usize) < KEEP_ERRORS {
            self.counts().errors.push(what);
        }
    }

    pub(super) fn was_killed(&self, id: &str) -> bool {
        self.killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn set_live(&self, id: &str, live: bool) {
        let mut l = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live {
            l.insert(id.to_string());
        } else {
            l.remove(id);
        }
    }

    pub(super) async fn create(&self, template: &str) -> Result<String> {
        let c = self
            .client
            .create_capsule(&CreateCapsule {
                template: Some(template.to_string()),
                timeout_sec: Some(0),
                ..CreateCapsule::default()
            })
            .await?;
        if c.status != CapsuleStatus::Running {
            bail!("created {} is {}", c.id, c.status);
        }
        self.counts().creates += 1;
        self.set_live(&c.id, true);
        Ok(c.id)
    }

    /// Checks one file's content against its checksum.
    async fn check(&self, id: &str, f: &File) -> Result<()> {
        let data = self
            .client
            .read_file_bytes(id, &f.path)
            .await
            .with_context(|| format!("reading {}", f.path))?;
        self.counts().file_checks += 1;
        if sha(&data) != f.sha {
            self.counts().bad_files += 1;
            bail!(
                "{} in {id}: sha256 {} ({} bytes), written {}",
                f.path,
                hex(&sha(&data)),
                data.len(),
                hex(&f.sha)
            );
        }
        Ok(())
    }

    pub(super) async fn check_all(&self, id: &str, files: &[File]) -> Result<()> {
        for f in files {
            self.check(id, f).await?;
        }
        Ok(())
    }

    async fn check_one(&self, rng: &mut Rng, cap: &Cap) -> Result<()> {
        if cap.files.is_empty() {
            return Ok(());
        }
        let f = &cap.files[rng.below(cap.files.len() as u64) as usize];
        self.check(&cap.id, f).await
    }

    pub(super) async fn op(&self, w: usize, rng: &mut Rng, cap: &mut Cap, n: u64) -> Result<()> {
        let c = &self.client;
        match rng.below(100) {
            0..=29 => {
                let size = 1024 + rng.below(63 * 1024) as usize;
                let data = rng.bytes(size);
                let file = File {
                    path: format!("/home/user/soak/w{w}-{n}.bin"),
                    sha: sha(&data),
                };
                let len = data.len() as u64;
                c.write_file_bytes(&cap.id, &file.path, data)
                    .await
                    .with_context(|| format!("writing {}", file.path))?;
                {
                    let mut k = self.counts();
                    k.writes += 1;
                    k.bytes_written += len;
                }
                if cap.files.len() >= MAX_FILES {
                    let i = rng.below(cap.files.len() as u64) as usize;
                    let old = cap.files.swap_remove(i);
                    c.remove_file(&cap.id, &old.path)
                        .await
                        .with_context(|| format!("removing {}", old.path))?;
                }
                cap.files.push(file);
            }
            30..=49 => {
                // Some draws fall past the files there are: then a plain `echo`.
                if let Some(f) = cap.files.get(rng.below(MAX_FILES as u64) as usize) {
                    let r = c
                        .exec(&cap.id, &Exec::new("sha256sum").args([f.path.as_str()]))
                        .await
                        .context("exec sha256sum")?;
                    let out = String::from_utf8_lossy(&r.stdout);
                    if r.exit_code != 0 || !out.starts_with(&hex(&f.sha)) {
                        bail!(
                            "exec sha256sum {}: exit {}, {out:?}, expected {}",
                            f.path,
                            r.exit_code,
                            hex(&f.sha)
                        );
                    }
                } else {
                    let r = c
                        .exec(&cap.id, &Exec::new("echo").args([format!("soak-{n}")]))
                        .await
                        .context("exec echo")?;
                    if r.exit_code != 0 || r.stdout != format!("soak-{n}\n").as_bytes() {
                        bail!("exec echo: exit {}, {:?}", r.exit_code, r.stdout);
                    }
                }
                self.counts().execs += 1;
            }
            50..=64 => self.check_one(rng, cap).await?,
            65..=84 => {
                let p = c.pause_capsule(&cap.id).await.context("pause")?;
                if p.status != CapsuleStatus::Paused {
                    bail!("paused {} is {}", cap.id, p.status);
                }
                self.counts().pauses += 1;
                self.resume(cap).await?;
                self.check_one(rng, cap).await?;
            }
            _ => self.snapshot(w, rng, cap, n).await?,
        }
        Ok(())
    }

    async fn resume(&self, cap: &Cap) -> Result<()> {
        let r = self
            .client
            .resume_capsule(&cap.id)
            .await
            .context("resume")?;
        if r.status != CapsuleStatus::Running {
            bail!("resumed {} is {}", cap.id, r.status);
        }
        self.counts().resumes += 1;
        Ok(())
    }

    /// Snapshot (the capsule is left paused), maybe a capsule from it with the same files,
    /// the template deleted, the capsule resumed.
    async fn snapshot(&self, w: usize, rng: &mut Rng, cap: &Cap, n: u64) -> Result<()> {
        let name = format!("soak-w{w}-{n}");
        self.client
            .create_snapshot(&cap.id, Some(&name), false)
            .await
            .context("snapshot")?;
        self.counts().snapshots += 1;
        if let Ok(_permit) = self.clone_gate.try_acquire() {
            match self.create(&name).await {
                Ok(clone) => {
                    let checked = self.check_all(&clone, &cap.files).await;
                    self.counts().snapshot_capsules += 1;
                    self.end(
                        &clone,
                        checked.map_err(|e| e.context("the snapshot's capsule")),
                    )
                    .await;
                }
                Err(e) => self.error(format!("a capsule from snapshot {name}: {e:#}")),
            }
        }
        self.client
            .delete_template(&name)
            .await
            .with_context(|| format!("deleting template {name}"))?;
        self.counts().templates_deleted += 1;
        self.resume(cap).await?;
        self.check_one(rng, cap).await
    }

    /// The end of a capsule: a failure is an error unless its VMM was killed; a killed
    /// capsule must show `error`; then it is destroyed.
    pub(super) async fn end(&self, id: &str, outcome: Result<()>) {
        self.set_live(id, false);
        if let Err(e) = outcome {
            if !self.was_killed(id) {
                self.error(format!("{id}: {e:#}"));
            }
        }
        let killed = self.was_killed(id);
        if killed {
            let limit = Instant::now() + SETTLE;
            let last = loop {
                match self.client.get_capsule(id).await {
                    Ok(c) if c.status == CapsuleStatus::Error => break None,
                    Ok(c) if Instant::now() >= limit => break Some(c.status.to_string()),
                    Err(e) if Instant::now() >= limit => break Some(format!("get failed: {e}")),
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            };
            let mut k = self.counts();
            match last {
                None => k.killed_error += 1,
                Some(s) => k
                    .killed_other
                    .push(format!("{id}: {s} {SETTLE:?} after the kill")),
            }
        }
        match self.client.destroy_capsule(id).await {
            Ok(()) => {
                let mut k = self.counts();
                k.destroys += 1;
                if killed {
                    k.killed_destroyed += 1;
                }
            }
            Err(e) => self.error(format!(
                "destroying {id}{}: {e}",
                if killed { " (killed)" } else { "" }
            )),
        }
    }
}
