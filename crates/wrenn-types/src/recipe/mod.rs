//! Build recipes: Wrenn's (upstream's `RUN` / `START` / `ENV` / `WORKDIR` / `USER` / `COPY`)
//! and the Dockerfile subset, parsed into one [`Recipe`] of [`Step`]s that a build runs in
//! order. Pure: no I/O. Every error names its line ([`ParseError::Recipe`]); an instruction
//! this parser does not know is an error, never skipped.
//!
//! Variable references (`$VAR`, `${VAR}`, `${VAR:-x}`, `${VAR:+x}`) stay [`Word`]s: the build
//! expands them against its environment (the base template's, then `ARG`/`ENV`), which only
//! the running build capsule knows.

mod dockerfile;
mod healthcheck;
mod lines;
mod upstream;
mod words;

pub use healthcheck::Healthcheck;
pub use words::{duration_ms, is_var_name, json_strings, Piece, VarOp, Word};

use crate::{ParseError, TemplateName};

/// Which syntax a text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Wrenn's (upstream's) recipe: one instruction a line, the base named beside it.
    Recipe,
    /// The Dockerfile subset.
    Dockerfile,
}

/// The most instructions a recipe may have.
pub const MAX_STEPS: usize = 1000;

/// A parsed recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub format: Format,
    /// A Dockerfile's `FROM` (recipes name their base beside the text).
    pub from: Option<Base>,
    /// Every step in order; a Dockerfile's `CMD`/`ENTRYPOINT` is the last, a [`StepKind::Start`].
    pub steps: Vec<Step>,
    /// `EXPOSE`d ports (recorded, not acted on).
    pub expose: Vec<Port>,
    /// A Dockerfile's `HEALTHCHECK`.
    pub healthcheck: Option<Healthcheck>,
}

impl Recipe {
    /// Whether the build ends with a started process (a snapshot template keeps it running).
    pub fn starts_process(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.kind, StepKind::Start { .. }))
    }

    /// The archive paths `COPY` reads (literal ones; references are checked when they run).
    pub fn copy_sources(&self) -> impl Iterator<Item = (usize, String)> + '_ {
        self.steps.iter().flat_map(|s| match &s.kind {
            StepKind::Copy { sources, .. } => sources
                .iter()
                .filter_map(|w| w.as_literal().map(|l| (s.line, l)))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
    }
}

/// What a Dockerfile builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A name that can be a Wrenn template's (`minimal`, `python`, a team's own).
    Template(TemplateName),
    /// A reference only an OCI registry can hold (`python:3.12-slim`, `ghcr.io/a/b@sha256:…`).
    Image(String),
}

/// One instruction: the line it starts on, its text and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    /// The instruction as written (continuations joined).
    pub text: String,
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Runs a command that must exit 0 (`timeout_ms`: the recipe's `--timeout=`).
    Run {
        cmd: Command,
        timeout_ms: Option<u64>,
    },
    /// Starts a process in the background, kept running into the template's snapshot.
    Start { cmd: Command },
    /// Sets environment variables for later steps and for the template's capsules.
    Env { vars: Vec<(String, Word)> },
    /// A build-time variable (a Dockerfile's `ARG`): seen by later steps, not recorded.
    Arg { name: String, default: Option<Word> },
    /// Makes the folder and runs later steps in it (relative: against the current one).
    Workdir { path: Word },
    /// Runs later steps as this user (made when missing).
    User { name: Word },
    /// Copies paths of the build's archive into the capsule.
    Copy {
        sources: Vec<Word>,
        dest: Word,
        chown: Option<Word>,
        chmod: Option<u32>,
    },
}

/// A command in shell form (`/bin/sh -c`) or exec form (an argument vector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

impl Command {
    /// The argument vector to start: a shell form runs under `/bin/sh -c`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            Command::Exec(v) => v.clone(),
        }
    }
}

/// A port `EXPOSE` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub number: u16,
    pub udp: bool,
}

/// A user name `USER` accepts: `[A-Za-z_][A-Za-z0-9_-]*`, at most 32 characters.
pub fn is_user_name(s: &str) -> bool {
    let mut cs = s.chars();
    s.len() <= 32
        && matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether a `COPY` source stays inside the archive: relative, no `..`, not empty.
pub fn is_archive_path(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('/') && !s.contains('\0') && s.split('/').all(|c| c != "..")
}

/// Parses `text` written in `format`.
pub fn parse(text: &str, format: Format) -> Result<Recipe, ParseError> {
    let recipe = match format {
        Format::Recipe => upstream::parse(text),
        Format::Dockerfile => dockerfile::parse(text),
    }
    .map_err(|(line, reason)| ParseError::Recipe { line, reason })?;
    if recipe.steps.len() > MAX_STEPS {
        return Err(ParseError::Recipe {
            line: recipe.steps[MAX_STEPS].line,
            reason: format!("more than {MAX_STEPS} instructions"),
        });
    }
    Ok(recipe)
}

/// `Format::Dockerfile` when the first instruction is `FROM` or `ARG` (recipes have neither),
/// else `Format::Recipe`.
pub fn detect(text: &str) -> Format {
    let first = lines::logical_lines(text, '\\').into_iter().next();
    match first.and_then(|l| {
        l.text
            .split_whitespace()
            .next()
            .map(str::to_ascii_uppercase)
    }) {
        Some(w) if w == "FROM" || w == "ARG" => Format::Dockerfile,
        _ => Format::Recipe,
    }
}

/// A `(line, reason)` error of the format parsers.
pub(crate) type LineError = (usize, String);

/// Checks a `COPY` source written literally (references are checked when they are expanded).
pub(crate) fn check_source(line: usize, w: &Word) -> Result<(), LineError> {
    match w.as_literal() {
        Some(s) if !is_archive_path(&s) => Err((
            line,
            format!("COPY source {s:?} must be a relative path inside the archive (no \"..\", not absolute)"),
        )),
        Some(s) if s.contains(['*', '?', '[']) => Err((
            line,
            format!("COPY source {s:?}: wildcards are not supported; name the paths"),
        )),
        _ => Ok(()),
    }
}

/// Checks a `USER` written literally.
pub(crate) fn check_user(line: usize, w: &Word) -> Result<(), LineError> {
    match w.as_literal() {
        Some(s) if !is_user_name(&s) => Err((
            line,
            format!("USER {s:?} is not a user name ([A-Za-z_][A-Za-z0-9_-]*, at most 32 characters; no uid or group)"),
        )),
        _ => Ok(()),
    }
}
