//! Churn at capacity: `capacity - 1` workers each create a capsule, run a random series of
//! operations on it (write a file of random bytes, exec `sha256sum` of one, read one back,
//! pause + resume, snapshot → a capsule from the snapshot whose files are checked → template
//! deleted), check every file it was given, destroy it, and start again, until `churn_secs`
//! have passed; the last place of the capacity is for the snapshot capsules. Meanwhile a killer
//! sends SIGKILL to a random VMM of a capsule in use every `kill_every_secs` (on average). A
//! killed capsule must turn `error` and be destroyable; any other failure is an error. At the
//! end the surviving capsules' files are checked, everything is destroyed and the leftovers
//! are counted (`leaks.rs`), while `wrenn up` runs and again after it stopped.
//!
//! The run uses a private copy of the template's folder, so its snapshot templates never
//! touch the shared images.

use std::{
    collections::HashSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use wrenn_client::{CapsuleStatus, Client, CreateCapsule, Exec};

use super::{leaks, machine_line, Args, Rng, Up, UpConfig};

const KEEP_ERRORS: usize = 20;
/// Files a capsule holds at most (further writes replace one).
const MAX_FILES: usize = 16;
/// How long a killed capsule may take to show `error`.
const SETTLE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Counts {
    creates: u64,
    execs: u64,
    writes: u64,
    bytes_written: u64,
    file_checks: u64,
    pauses: u64,
    resumes: u64,
    snapshots: u64,
    snapshot_capsules: u64,
    templates_deleted: u64,
    destroys: u64,
    kills: u64,
    killed_error: u64,
    killed_destroyed: u64,
    /// Killed capsules that showed another state than `error` (and what).
    killed_other: Vec<String>,
    survivors: u64,
    survivor_files: u64,
    bad_files: u64,
    errors: Vec<String>,
}

struct Shared {
    client: Client,
    template: String,
    deadline: Instant,
    /// Capsules in use by a worker: the killer picks among their VMMs.
    live: Mutex<HashSet<String>>,
    killed: Mutex<HashSet<String>>,
    clone_gate: tokio::sync::Semaphore,
    counts: Mutex<Counts>,
    errors: AtomicU64,
}

#[derive(Clone)]
struct File {
    path: String,
    sha: [u8; 32],
}

struct Cap {
    id: String,
    files: Vec<File>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl Shared {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, what: String) {
        let n = self.errors.fetch_add(1, Relaxed);
        eprintln!("soak churn: error: {what}");
        if (n as usize) < KEEP_ERRORS {
            self.counts().errors.push(what);
        }
    }

    fn was_killed(&self, id: &str) -> bool {
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

    async fn create(&self, template: &str) -> Result<String> {
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

    async fn check_all(&self, id: &str, files: &[File]) -> Result<()> {
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

    async fn op(&self, w: usize, rng: &mut Rng, cap: &mut Cap, n: u64) -> Result<()> {
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
    async fn end(&self, id: &str, outcome: Result<()>) {
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

async fn worker(sh: Arc<Shared>, w: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ ((w as u64 + 1) << 32));
    let mut n = 0u64;
    // Spread the first creates out a little.
    tokio::time::sleep(Duration::from_millis(500 * w as u64)).await;
    while Instant::now() < sh.deadline {
        let id = match sh.create(&sh.template).await {
            Ok(id) => id,
            Err(e) => {
                sh.error(format!("worker {w}: create: {e:#}"));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut cap = Cap {
            id,
            files: Vec::new(),
        };
        let ops = 4 + rng.below(12);
        let mut outcome = Ok(());
        for _ in 0..ops {
            if Instant::now() >= sh.deadline || sh.was_killed(&cap.id) {
                break;
            }
            n += 1;
            if let Err(e) = sh.op(w, &mut rng, &mut cap, n).await {
                outcome = Err(e);
                break;
            }
        }
        if outcome.is_ok() && !sh.was_killed(&cap.id) {
            let survivor = Instant::now() >= sh.deadline;
            outcome = sh.check_all(&cap.id, &cap.files).await;
            if survivor {
                let mut k = sh.counts();
                k.survivors += 1;
                if outcome.is_ok() {
                    k.survivor_files += cap.files.len() as u64;
                }
            }
        }
        sh.end(&cap.id, outcome).await;
    }
}

/// The capsule id in a QEMU command line that names `<data>/capsules/<id>/…`.
fn capsule_of(cmd: &str, data: &Path) -> Option<String> {
    let marker = format!("{}/capsules/", data.display());
    let at = cmd.find(&marker)? + marker.len();
    let id: String = cmd[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!id.is_empty()).then_some(id)
}

async fn killer(sh: Arc<Shared>, data: PathBuf, mean: Duration, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x6b69_6c6c);
    loop {
        let wait = mean.mul_f64(0.5 + rng.below(1000) as f64 / 1000.0);
        tokio::time::sleep(wait).await;
        if Instant::now() >= sh.deadline {
            return;
        }
        let candidates: Vec<(u32, String)> = {
            let live = sh.live.lock().unwrap_or_else(|e| e.into_inner());
            let killed = sh.killed.lock().unwrap_or_else(|e| e.into_inner());
            wrenn_vmm::qemu::processes_under(&data)
                .into_iter()
                .filter_map(|(pid, cmd)| Some((pid, capsule_of(&cmd, &data)?)))
                .filter(|(_, id)| live.contains(id) && !killed.contains(id))
                .collect()
        };
        if candidates.is_empty() {
            continue;
        }
        let (pid, id) = &candidates[rng.below(candidates.len() as u64) as usize];
        sh.killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        // SAFETY: kill(2) of a QEMU whose command line names this run's own data folder.
        if unsafe { libc::kill(*pid as i32, libc::SIGKILL) } == 0 {
            sh.counts().kills += 1;
            eprintln!("soak churn: kill -9 {pid} (the VMM of {id})");
        }
    }
}

pub struct ChurnReport {
    secs: f64,
    churn_secs: u64,
    capacity: usize,
    kill_every_secs: u64,
    seed: u64,
    counts: Counts,
    error_count: u64,
    leaks: leaks::Leaks,
    leaks_after_stop: leaks::Leaks,
    machine: String,
    date: String,
}

impl ChurnReport {
    pub fn held(&self) -> bool {
        self.error_count == 0
            && self.counts.bad_files == 0
            && self.counts.killed_other.is_empty()
            && self.counts.killed_destroyed == self.counts.kills
            && self.leaks.clean()
            && self.leaks_after_stop.clean()
    }

    fn figures(&self) -> Vec<(String, String)> {
        let k = &self.counts;
        vec![
            (
                "operations".into(),
                format!(
                    "{} creates ({} from snapshots), {} execs, {} file writes ({:.1} MB), {} file \
                     checks, {} pauses, {} resumes, {} snapshots ({} templates deleted), {} \
                     destroys",
                    k.creates,
                    k.snapshot_capsules,
                    k.execs,
                    k.writes,
                    k.bytes_written as f64 / 1e6,
                    k.file_checks,
                    k.pauses,
                    k.resumes,
                    k.snapshots,
                    k.templates_deleted,
                    k.destroys
                ),
            ),
            (
                "VMMs killed (SIGKILL)".into(),
                format!(
                    "{}: {} showed `error`, {} destroyed, {} otherwise{}",
                    k.kills,
                    k.killed_error,
                    k.killed_destroyed,
                    k.killed_other.len(),
                    k.killed_other
                        .iter()
                        .map(|s| format!(" [{s}]"))
                        .collect::<String>()
                ),
            ),
            (
                "surviving capsules' files".into(),
                format!(
                    "{} capsules alive at the end, {} files intact (sha256); {} files differed \
                     in the whole run",
                    k.survivors, k.survivor_files, k.bad_files
                ),
            ),
            ("errors".into(), self.error_count.to_string()),
            ("left after destroy".into(), self.leaks.line()),
            (
                "left after `wrenn up` stopped".into(),
                self.leaks_after_stop.line(),
            ),
        ]
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "wrenn-bench soak churn ({}, seed {}): {}\n",
            self.machine,
            self.seed,
            if self.held() { "HELD" } else { "DID NOT HOLD" }
        );
        for (k, v) in self.figures() {
            let _ = writeln!(out, "  {k:28} {v}");
        }
        for e in &self.counts.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        out
    }

    pub fn row(&self) -> String {
        let k = &self.counts;
        let mut out = String::new();
        let leaks = self.leaks.total() + self.leaks_after_stop.total();
        let _ = writeln!(
            out,
            "| Churn at capacity ({} capsules): create / exec / write / pause / resume / \
             snapshot / destroy, random `kill -9` of VMMs | {:.0} s; {} creates, {} execs, {} \
             writes, {} pauses + resumes, {} snapshots, {} destroys; {} VMMs killed | {} \
             errors; killed → `error` {}/{}, destroyed {}/{}; {} files of the surviving \
             capsules intact, {} differed in the run; leaks: {} (QEMU, netns, veths/TAPs, cgroups, folders, rows) |",
            self.capacity,
            self.secs,
            k.creates,
            k.execs,
            k.writes,
            k.pauses,
            k.snapshots,
            k.destroys,
            k.kills,
            self.error_count,
            k.killed_error,
            k.kills,
            k.killed_destroyed,
            k.kills,
            k.survivor_files,
            k.bad_files,
            leaks
        );
        out
    }

    pub fn markdown(&self) -> String {
        let k = &self.counts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run {} on {}: `wrenn-bench soak --phase churn --churn-secs {} --capacity {} \
             --kill-every-secs {} --seed {}` — **{}**.",
            self.date,
            self.machine,
            self.churn_secs,
            self.capacity,
            self.kill_every_secs,
            self.seed,
            if self.held() { "held" } else { "did not hold" }
        );
        let _ = writeln!(
            out,
            "{} workers each run a capsule through 4–15 random operations (files of 1–64 KiB \
             of random bytes, checked by sha256 through `sha256sum` in the guest and by \
             reading them back), then check all its files and destroy it; the last place of \
             the capacity is for capsules made from the snapshots. A killer sends SIGKILL to \
             the QEMU of a random capsule in use, only QEMUs naming the run's own data folder.",
            self.capacity.saturating_sub(1).max(1)
        );
        let _ = writeln!(out);
        for (key, v) in self.figures() {
            let _ = writeln!(out, "- {key}: {v}");
        }
        for e in &k.errors {
            let _ = writeln!(out, "- error: `{}`", e.replace('`', "'"));
        }
        out
    }
}

/// A copy of the template's folder (without its shape snapshots) for this run alone.
fn private_images(shared: &Path, template: &str, to: &Path) -> Result<()> {
    let src = shared.join(template);
    let dst = to.join(template);
    std::fs::create_dir_all(&dst)?;
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        if entry.file_name() == "shapes" {
            continue;
        }
        let status = std::process::Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(entry.path())
            .arg(&dst)
            .status()
            .context("cp")?;
        if !status.success() {
            bail!("copying {} failed", entry.path().display());
        }
    }
    Ok(())
}

pub fn run(args: &Args, rt: &tokio::runtime::Runtime, stamp: &str) -> Result<ChurnReport> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let capacity = args.capacity.max(1);
    let dir = args.work_dir.join(format!("wrenn-soak-churn-{stamp}"));
    let log = args.work_dir.join(format!("wrenn-soak-churn-{stamp}.log"));
    let images = args
        .work_dir
        .join(format!("wrenn-soak-churn-{stamp}-images"));
    private_images(&args.images, &args.template, &images)?;
    let mut up = Up::start(
        &UpConfig {
            wrenn: &args.wrenn,
            images: &images,
            template: &args.template,
            slots: &args.slots,
            max_capsules: capacity,
        },
        dir.clone(),
        log.clone(),
    )?;
    eprintln!(
        "soak churn: wrenn up at {} (data {}, log {}), capacity {capacity}, {} s, a kill every \
         ~{} s, seed {seed}",
        up.base,
        dir.display(),
        log.display(),
        args.churn_secs,
        args.kill_every_secs
    );
    let began = Instant::now();
    let sh = Arc::new(Shared {
        client: up.client()?,
        template: args.template.clone(),
        deadline: began + Duration::from_secs(args.churn_secs),
        live: Mutex::new(HashSet::new()),
        killed: Mutex::new(HashSet::new()),
        clone_gate: tokio::sync::Semaphore::new(usize::from(capacity >= 2)),
        counts: Mutex::new(Counts::default()),
        errors: AtomicU64::new(0),
    });
    let workers = capacity.saturating_sub(1).max(1);
    let leaks = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            tasks.spawn(worker(sh.clone(), w, seed));
        }
        if args.kill_every_secs > 0 {
            tasks.spawn(killer(
                sh.clone(),
                dir.clone(),
                Duration::from_secs(args.kill_every_secs),
                seed,
            ));
        }
        let progress = {
            let sh = sh.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let k = sh.counts();
                    eprintln!(
                        "soak churn: {:>4.0} s: {} creates, {} execs, {} writes, {} pauses, {} \
                         snapshots, {} destroys, {} kills, {} errors",
                        began.elapsed().as_secs_f64(),
                        k.creates,
                        k.execs,
                        k.writes,
                        k.pauses,
                        k.snapshots,
                        k.destroys,
                        k.kills,
                        sh.errors.load(Relaxed)
                    );
                }
            })
        };
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                sh.error(format!("a churn task failed: {e}"));
            }
        }
        progress.abort();
        leaks::count(&up, &args.slots).await
    });
    let secs = began.elapsed().as_secs_f64();
    let stopped = up.stop();
    let mut leaks_after_stop = leaks::Leaks::default();
    leaks::host(&dir, &args.slots, &mut leaks_after_stop);
    if !stopped {
        leaks_after_stop
            .notes
            .push("wrenn up did not stop within a minute of SIGINT".into());
    }
    // Template folders the API no longer lists but that stayed on disk.
    let stray_templates = std::fs::read_dir(&images)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_str() != Some(args.template.as_str()))
                .count()
        })
        .unwrap_or(0);
    leaks_after_stop.templates = stray_templates;
    if leaks.clean() && leaks_after_stop.clean() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&images);
    let counts = std::mem::take(&mut *sh.counts());
    Ok(ChurnReport {
        secs,
        churn_secs: args.churn_secs,
        capacity,
        kill_every_secs: args.kill_every_secs,
        seed,
        counts,
        error_count: sh.errors.load(Relaxed),
        leaks,
        leaks_after_stop,
        machine: machine_line(),
        date: super::doc::now_utc(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capsule_id_is_read_from_a_qemu_command_line() {
        let data = Path::new("/var/tmp/wrenn-soak-churn-1");
        let cmd = "qemu-system-x86_64 -name x -drive file=/var/tmp/wrenn-soak-churn-1/capsules/\
                   cl-abc123/disk.qcow2,if=virtio";
        assert_eq!(capsule_of(cmd, data).as_deref(), Some("cl-abc123"));
        assert_eq!(
            capsule_of(
                "qemu-system-x86_64 -drive file=/other/capsules/cl-x/d",
                data
            ),
            None
        );
    }

    #[test]
    fn random_bytes_are_reproducible_by_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.bytes(100), b.bytes(100));
        assert_ne!(Rng::new(8).bytes(100), Rng::new(7).bytes(100));
    }
}
