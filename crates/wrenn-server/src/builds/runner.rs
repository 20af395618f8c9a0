//! One build, start to end: a build capsule from the base template (placed like any
//! capsule, egress on), the archive unpacked in it, each step through the agent's exec path,
//! the healthcheck, then the template with the build's defaults: a snapshot template (memory
//! and running processes) when the build has a healthcheck or starts a process, else a base
//! template (its disk flattened and booted afresh); the build capsule destroyed. Every path
//! destroys the capsule.

use std::{collections::BTreeMap, time::Duration, time::Instant};

use axum::extract::{Path, State};
use tokio_stream::StreamExt;
use wrenn_proto::agent::v1::{
    exec_event::Event as Ev, write_file_stream_request::Part, ExecRequest, StartBackgroundRequest,
    WriteFileStreamRequest,
};
use wrenn_types::{
    api::builds::BuildStep,
    api::capsules::CreateCapsuleBody,
    recipe::{self, Command, Healthcheck, Recipe, StepKind},
};

use super::steps::{self, Context, ARCHIVE_PATH, FILES_DIR};
use crate::{
    db::{BuildProgress, BuildRow, Caller},
    error::ApiError,
    state::AppState,
};

/// A step's limit when the recipe gives none.
const STEP_TIMEOUT_MS: u32 = 30 * 60_000;
/// A healthcheck without a retry limit gives up after this long.
const HEALTHCHECK_LIMIT: Duration = Duration::from_secs(600);
/// Output kept per step (the end of it).
const KEEP_OUTPUT: usize = 64 << 10;

/// Why a build stopped early.
pub enum Stop {
    Failed(String),
    Cancelled,
    /// Every host is at its limit of builds (`builds::hosts`): back in the queue.
    Requeue,
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Stop {
        Stop::Failed(e.to_string())
    }
}

/// A running build's record, written to the database after each step.
pub struct Run {
    pub state: AppState,
    pub row: BuildRow,
    pub caller: Caller,
    pub logs: Vec<BuildStep>,
    pub total: u32,
    pub capsule: Option<String>,
    pub ctx: Context,
    /// Builds at once per host (`--max-builds`).
    pub limit: usize,
    /// Held while a build is placed, so this control plane places one at a time.
    pub placing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

fn tail(bytes: &[u8]) -> String {
    let from = bytes.len().saturating_sub(KEEP_OUTPUT);
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

impl Run {
    /// Writes the record; `Stop::Cancelled` when the build was cancelled meanwhile.
    pub async fn save(&self) -> std::result::Result<(), Stop> {
        let logs = serde_json::to_string(&self.logs).unwrap_or_else(|_| "[]".into());
        let env = serde_json::to_string(&self.ctx.set_env).unwrap_or_else(|_| "{}".into());
        let still = self
            .state
            .db
            .build_progress(
                &self.row.id,
                &BuildProgress {
                    current_step: self.logs.iter().filter(|l| l.ok).count() as i64,
                    total_steps: i64::from(self.total),
                    logs: &logs,
                    capsule_id: self.capsule.as_deref(),
                    default_user: self.ctx.default_user(),
                    default_workdir: self.ctx.default_workdir(),
                    default_env: &env,
                },
            )
            .await?;
        if still {
            Ok(())
        } else {
            Err(Stop::Cancelled)
        }
    }

    pub(super) fn begin(&mut self, phase: &str, line: usize, cmd: &str) -> usize {
        self.logs.push(BuildStep {
            step: self.logs.len() as u32 + 1,
            phase: phase.into(),
            line: line as u32,
            cmd: cmd.into(),
            stdout: String::new(),
            stderr: String::new(),
            exit: None,
            ok: false,
            elapsed_ms: 0,
        });
        self.logs.len() - 1
    }

    /// Runs `argv` in the build capsule, streaming its output into log entry `at` (saved
    /// every second); the exit code.
    pub(super) async fn exec(
        &mut self,
        at: usize,
        argv: Vec<String>,
        user: &str,
        timeout_ms: u32,
    ) -> std::result::Result<i32, Stop> {
        let capsule = self.capsule.clone().unwrap_or_default();
        let mut agent = self.agent().await?;
        let started = Instant::now();
        let mut stream = agent
            .exec_stream(ExecRequest {
                capsule_id: capsule,
                cmd: argv[0].clone(),
                args: argv[1..].to_vec(),
                env: self.ctx.step_env().into_iter().collect(),
                cwd: self.ctx.workdir.clone(),
                user: user.to_owned(),
                timeout_ms,
            })
            .await
            .map_err(|s| Stop::Failed(format!("starting the command: {}", s.message())))?
            .into_inner();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut exit = None;
        let mut last_save = Instant::now();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
            match next {
                Ok(Some(Ok(ev))) => match ev.event {
                    Some(Ev::Stdout(b)) | Some(Ev::Pty(b)) => out.extend_from_slice(&b),
                    Some(Ev::Stderr(b)) => err.extend_from_slice(&b),
                    Some(Ev::End(e)) => {
                        if !e.error.is_empty() {
                            err.extend_from_slice(format!("\n[{}]", e.error).as_bytes());
                        }
                        exit = Some(e.exit_code);
                        break;
                    }
                    _ => {}
                },
                Ok(Some(Err(s))) => {
                    return Err(Stop::Failed(format!(
                        "the command's stream: {}",
                        s.message()
                    )))
                }
                Ok(None) => break,
                Err(_) => {} // a second without output: save and check for a cancel
            }
            if out.len() > 4 * KEEP_OUTPUT {
                out.drain(..out.len() - KEEP_OUTPUT);
            }
            if err.len() > 4 * KEEP_OUTPUT {
                err.drain(..err.len() - KEEP_OUTPUT);
            }
            if last_save.elapsed() >= Duration::from_secs(1) {
                self.logs[at].stdout = tail(&out);
                self.logs[at].stderr = tail(&err);
                self.logs[at].elapsed_ms = started.elapsed().as_millis() as u64;
                self.save().await?;
                last_save = Instant::now();
            }
        }
        let entry = &mut self.logs[at];
        entry.stdout = tail(&out);
        entry.stderr = tail(&err);
        entry.exit = exit;
        entry.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(exit.unwrap_or(-1))
    }

    pub(super) async fn agent(
        &self,
    ) -> std::result::Result<
        wrenn_proto::agent::v1::agent_client::AgentClient<tonic::transport::Channel>,
        Stop,
    > {
        let id = self.capsule.as_deref().unwrap_or_default();
        let row = self.state.db.capsule(&self.caller.team_id, id).await?;
        Ok(self.state.agent_for(&row).await?)
    }

    /// A step's failure text: the step, its line and what went wrong.
    pub(super) fn failure(&self, at: usize, what: &str) -> Stop {
        let l = &self.logs[at];
        let detail = l.stderr.trim();
        let detail = if detail.is_empty() {
            l.stdout.trim()
        } else {
            detail
        };
        let tail: String = detail
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let line = if l.line > 0 {
            format!(" (line {})", l.line)
        } else {
            String::new()
        };
        let mut msg = format!("step {}{line} `{}` failed: {what}", l.step, l.cmd);
        if !tail.is_empty() {
            msg.push_str(&format!(": {tail}"));
        }
        Stop::Failed(msg)
    }

    /// Runs a shell script as root that must succeed.
    pub(super) async fn must(
        &mut self,
        at: usize,
        script: String,
    ) -> std::result::Result<(), Stop> {
        let code = self
            .exec(
                at,
                vec!["/bin/sh".into(), "-c".into(), script],
                "root",
                120_000,
            )
            .await?;
        if code != 0 {
            return Err(self.failure(at, &format!("exit code {code}")));
        }
        Ok(())
    }

    pub(super) fn done(&mut self, at: usize, started: Instant) {
        self.logs[at].ok = true;
        self.logs[at].elapsed_ms = started.elapsed().as_millis() as u64;
    }

    /// The whole build; the template's name when it succeeded.
    pub async fn build(
        &mut self,
        recipe: &Recipe,
        hc: Option<&Healthcheck>,
    ) -> std::result::Result<(), Stop> {
        // Setup: the build capsule.
        let started = Instant::now();
        let image = match &recipe.from {
            Some(recipe::Base::Image(r)) => Some(r.clone()),
            _ => None,
        };
        let at = match &image {
            Some(r) => self.begin(
                "setup",
                steps::from_line(&self.row.source),
                &format!("FROM {r}"),
            ),
            None => self.begin(
                "setup",
                0,
                &format!("capsule from {}", self.row.base_template),
            ),
        };
        self.save().await?;
        // A host below its limit of builds, chosen one build at a time.
        let mut placing = Some(self.placing.clone().lock_owned().await);
        let busy = self.busy_hosts().await?;
        let (template, host, defaults) = match &image {
            Some(r) => {
                let (t, h, d) = self.import_image(at, r, &busy, &mut placing).await?;
                (t, Some(h), Some(d))
            }
            None => (self.row.base_template.clone(), None, None),
        };
        let mut metadata = BTreeMap::new();
        metadata.insert("wrenn.build".to_string(), self.row.id.clone());
        let body = CreateCapsuleBody {
            template: Some(template),
            host_id: host,
            vcpus: u32::try_from(self.row.vcpus).ok().filter(|&v| v > 0),
            memory_mb: u32::try_from(self.row.memory_mb).ok().filter(|&v| v > 0),
            disk_size_mb: u32::try_from(self.row.disk_mb).ok().filter(|&v| v > 0),
            egress: Some(true),
            timeout_sec: Some(0),
            metadata: Some(metadata),
            ..CreateCapsuleBody::default()
        };
        // What the import said, kept ahead of the setup's summary.
        let pulled = std::mem::take(&mut self.logs[at].stdout);
        let made = crate::capsules::create::create_for_build(
            self.state.clone(),
            self.caller.clone(),
            body,
            if placing.is_some() {
                busy.as_slice()
            } else {
                &[]
            },
        )
        .await
        .map_err(|e| Stop::Failed(format!("the build capsule: {e}")))?;
        self.capsule = Some(made.1 .0.capsule.id.clone());
        self.save().await?;
        if placing.take().is_some() {
            self.record_host().await?;
        }
        // Its user, folder and environment.
        let probe = "id -un; pwd; env -0".to_string();
        let code = self
            .exec(at, vec!["/bin/sh".into(), "-c".into(), probe], "", 30_000)
            .await?;
        if code != 0 {
            return Err(self.failure(at, "reading the base's environment"));
        }
        let out = std::mem::take(&mut self.logs[at].stdout);
        let mut parts = out.splitn(3, '\n');
        let (user, dir, env) = (
            parts.next().unwrap_or("root").trim().to_owned(),
            parts.next().unwrap_or("/").trim().to_owned(),
            parts.next().unwrap_or(""),
        );
        self.ctx = Context::from_base(env, &user, &dir);
        if let Some(d) = defaults {
            d.apply(&mut self.ctx);
            // An image's `WorkingDir` need not exist in it (Docker makes it): made, as root.
            if self.ctx.workdir_set {
                let wd = std::mem::replace(&mut self.ctx.workdir, "/".into());
                self.must(at, steps::workdir_script(&wd, &self.ctx.user))
                    .await?;
                self.ctx.workdir = wd;
            }
        }
        let summary = format!("{pulled}base user {user}, folder {dir}");
        // The archive, when there is one.
        if self.row.has_archive != 0 {
            let tar = self
                .state
                .db
                .build_archive(&self.row.id)
                .await?
                .ok_or_else(|| Stop::Failed("the build's archive is gone".into()))?;
            self.upload(tar).await?;
            self.must(
                at,
                format!(
                    "mkdir -p {FILES_DIR} && tar -xf {ARCHIVE_PATH} -C {FILES_DIR} --no-same-owner && rm -f {ARCHIVE_PATH}"
                ),
            )
            .await?;
        }
        self.logs[at].stdout = summary;
        self.done(at, started);
        self.save().await?;
        // The recipe.
        for step in &recipe.steps {
            self.step(step).await?;
            self.save().await?;
        }
        if let Some(hc) = hc {
            self.healthcheck(hc).await?;
            self.save().await?;
        }
        self.finish(recipe, hc.is_some()).await
    }

    async fn step(&mut self, step: &recipe::Step) -> std::result::Result<(), Stop> {
        let started = Instant::now();
        let at = self.begin("recipe", step.line, &step.text);
        self.save().await?;
        match &step.kind {
            StepKind::Run { cmd, timeout_ms } => {
                let limit =
                    timeout_ms.map_or(STEP_TIMEOUT_MS, |t| t.min(u64::from(u32::MAX)) as u32);
                let user = self.ctx.user.clone();
                let code = self.exec(at, cmd.argv(), &user, limit).await?;
                if code != 0 {
                    return Err(self.failure(at, &format!("exit code {code}")));
                }
            }
            StepKind::Start { cmd } => {
                let argv = cmd.argv();
                let mut agent = self.agent().await?;
                let r = agent
                    .start_background(StartBackgroundRequest {
                        capsule_id: self.capsule.clone().unwrap_or_default(),
                        cmd: argv[0].clone(),
                        args: argv[1..].to_vec(),
                        env: self.ctx.step_env().into_iter().collect(),
                        cwd: self.ctx.workdir.clone(),
                        user: self.ctx.user.clone(),
                        tag: format!("build-start-{}", step.line),
                    })
                    .await;
                match r {
                    Ok(r) => self.logs[at].stdout = format!("started, pid {}", r.into_inner().pid),
                    Err(s) => {
                        self.logs[at].stderr = s.message().to_owned();
                        return Err(self.failure(at, "it did not start"));
                    }
                }
            }
            StepKind::Env { vars } => {
                for (k, v) in vars {
                    let value = self.ctx.expand(v);
                    self.ctx.set(k, value);
                }
            }
            StepKind::Arg { name, default } => {
                if !self.ctx.args.contains_key(name) {
                    let v = default
                        .as_ref()
                        .map(|d| self.ctx.expand(d))
                        .unwrap_or_default();
                    self.ctx.args.insert(name.clone(), v);
                }
            }
            StepKind::Workdir { path } => {
                let dir = self.ctx.resolve(&self.ctx.expand(path));
                let script = steps::workdir_script(&dir, &self.ctx.user);
                self.must(at, script).await?;
                self.ctx.workdir = dir;
                self.ctx.workdir_set = true;
            }
            StepKind::User { name } => {
                let name = self.ctx.expand(name);
                let script = steps::user_script(&name).map_err(|e| {
                    self.logs[at].stderr = e;
                    self.failure(at, "bad user")
                })?;
                self.must(at, script).await?;
                self.ctx.user = name;
                self.ctx.user_set = true;
            }
            StepKind::Copy {
                sources,
                dest,
                chown,
                chmod,
            } => {
                if self.row.has_archive == 0 {
                    self.logs[at].stderr = "the build has no archive to copy from".into();
                    return Err(self.failure(at, "no archive"));
                }
                let srcs: Vec<String> = sources.iter().map(|s| self.ctx.expand(s)).collect();
                let raw_dest = self.ctx.expand(dest);
                let dest_path = self.ctx.resolve(&raw_dest);
                // Recipes give copies to the current user (upstream); Dockerfiles to root
                // unless --chown (Docker).
                let owner = match (chown, recipe_format(&self.row)) {
                    (Some(o), _) => Some(self.ctx.expand(o)),
                    (None, true) if self.ctx.user != "root" => Some(self.ctx.user.clone()),
                    _ => None,
                };
                let script = steps::copy_script(
                    &srcs,
                    &dest_path,
                    raw_dest.ends_with('/'),
                    owner.as_deref(),
                    *chmod,
                )
                .map_err(|e| {
                    self.logs[at].stderr = e;
                    self.failure(at, "bad source")
                })?;
                self.must(at, script).await?;
            }
        }
        self.done(at, started);
        Ok(())
    }

    async fn upload(&mut self, tar: Vec<u8>) -> std::result::Result<(), Stop> {
        let mut agent = self.agent().await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteFileStreamRequest>(4);
        let capsule = self.capsule.clone().unwrap_or_default();
        let feed = tokio::spawn(async move {
            let start = WriteFileStreamRequest {
                part: Some(Part::Start(
                    wrenn_proto::agent::v1::write_file_stream_request::Start {
                        capsule_id: capsule,
                        path: ARCHIVE_PATH.into(),
                        user: "root".into(),
                    },
                )),
            };
            if tx.send(start).await.is_err() {
                return;
            }
            for chunk in tar.chunks(1 << 20) {
                let part = WriteFileStreamRequest {
                    part: Some(Part::Data(chunk.to_vec())),
                };
                if tx.send(part).await.is_err() {
                    return;
                }
            }
        });
        let r = agent
            .write_file_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        feed.abort();
        r.map_err(|s| Stop::Failed(format!("uploading the archive: {}", s.message())))?;
        Ok(())
    }

    async fn healthcheck(&mut self, hc: &Healthcheck) -> std::result::Result<(), Stop> {
        let started = Instant::now();
        let text = match &hc.cmd {
            Command::Shell(s) => s.clone(),
            Command::Exec(v) => format!("{v:?}"),
        };
        let at = self.begin("healthcheck", 0, &text);
        self.save().await?;
        let deadline = hc
            .deadline_ms()
            .map_or(HEALTHCHECK_LIMIT, Duration::from_millis);
        let mut failures = 0u32;
        loop {
            let user = self.ctx.user.clone();
            let limit = u32::try_from(hc.timeout_ms).unwrap_or(u32::MAX);
            let code = self.exec(at, hc.cmd.argv(), &user, limit).await?;
            if code == 0 {
                break;
            }
            if started.elapsed().as_millis() as u64 >= hc.start_period_ms {
                failures += 1;
            }
            if (hc.retries > 0 && failures > hc.retries) || started.elapsed() >= deadline {
                return Err(self.failure(
                    at,
                    &format!("not healthy after {failures} tries (last exit code {code})"),
                ));
            }
            self.save().await?;
            tokio::time::sleep(Duration::from_millis(hc.interval_ms)).await;
        }
        self.done(at, started);
        Ok(())
    }

    /// Destroys the build capsule (on every path); true when it is gone.
    pub async fn cleanup(&mut self) -> bool {
        let Some(id) = self.capsule.clone() else {
            return true;
        };
        let r = crate::capsules::lifecycle::destroy(
            State(self.state.clone()),
            self.caller.clone(),
            Path(id.clone()),
        )
        .await;
        match r {
            Ok(_) | Err(ApiError::NotFound(_)) => {
                self.capsule = None;
                let _ = self.state.db.clear_build_capsule(&self.row.id).await;
                true
            }
            Err(e) => {
                tracing::warn!(build = %self.row.id, capsule = %id, "destroying the build capsule (tried again later): {e}");
                false
            }
        }
    }
}

fn recipe_format(row: &BuildRow) -> bool {
    row.format == "recipe"
}
