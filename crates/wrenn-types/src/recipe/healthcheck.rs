//! Healthchecks: `[--interval=3s] [--timeout=10s] [--start-period=0s] [--retries=0] <command>`
//! (upstream's), also written as a Dockerfile's `HEALTHCHECK [options] CMD <command>`.

use super::{words, Command, LineError};
use crate::ParseError;

/// A command run until it exits 0 before the template's snapshot is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub cmd: Command,
    pub interval_ms: u64,
    /// Each run's limit.
    pub timeout_ms: u64,
    /// Failures in this first period do not count.
    pub start_period_ms: u64,
    /// Failures allowed after the start period; 0 = no limit (the build's own limit holds).
    pub retries: u32,
}

impl Healthcheck {
    /// Upstream's defaults: every 3 s, 10 s each, no start period, no retry limit.
    pub const DEFAULT_INTERVAL_MS: u64 = 3_000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

    /// Parses the API's healthcheck text (upstream syntax; a leading `CMD` is allowed).
    pub fn parse(text: &str) -> Result<Healthcheck, ParseError> {
        parse_options(text, 1, false).map_err(|(line, reason)| ParseError::Recipe {
            line,
            reason: format!("healthcheck: {reason}"),
        })
    }

    /// Longest the healthcheck may take to pass when it has a retry limit.
    pub fn deadline_ms(&self) -> Option<u64> {
        (self.retries > 0).then(|| {
            self.start_period_ms
                .saturating_add(u64::from(self.retries + 1).saturating_mul(self.interval_ms))
        })
    }
}

/// Reads options then the command. `docker`: the command must follow `CMD`.
pub(crate) fn parse_options(
    text: &str,
    line: usize,
    docker: bool,
) -> Result<Healthcheck, LineError> {
    let mut hc = Healthcheck {
        cmd: Command::Shell(String::new()),
        interval_ms: Healthcheck::DEFAULT_INTERVAL_MS,
        timeout_ms: Healthcheck::DEFAULT_TIMEOUT_MS,
        start_period_ms: 0,
        retries: 0,
    };
    let mut rest = text.trim_start();
    while let Some(opt) = rest.strip_prefix("--") {
        let end = opt.find(char::is_whitespace).unwrap_or(opt.len());
        let (flag, tail) = opt.split_at(end);
        rest = tail.trim_start();
        let Some((key, value)) = flag.split_once('=') else {
            return Err((line, format!("option --{flag} needs a value (--{flag}=…)")));
        };
        let dur = || {
            words::duration_ms(value).ok_or_else(|| {
                (
                    line,
                    format!("--{key}={value}: not a duration (like 3s, 1m30s, 500ms)"),
                )
            })
        };
        match key {
            "interval" => hc.interval_ms = dur()?.max(1),
            "timeout" => hc.timeout_ms = dur()?.max(1),
            "start-period" => hc.start_period_ms = dur()?,
            "retries" => {
                hc.retries = value
                    .parse()
                    .map_err(|_| (line, format!("--retries={value}: not a whole number")))?
            }
            _ => {
                return Err((
                    line,
                    format!("unknown option --{key} (known: --interval, --timeout, --start-period, --retries)"),
                ))
            }
        }
    }
    let cmd_text = match rest.split_once(char::is_whitespace) {
        Some((w, tail)) if w.eq_ignore_ascii_case("CMD") => tail.trim_start(),
        None if rest.eq_ignore_ascii_case("CMD") => "",
        _ if docker => return Err((line, "HEALTHCHECK needs CMD <command> (or NONE)".into())),
        _ => rest,
    };
    hc.cmd = command(cmd_text, line)?;
    Ok(hc)
}

/// A command in exec form (a JSON array) or shell form; never empty.
pub(crate) fn command(text: &str, line: usize) -> Result<Command, LineError> {
    let text = text.trim();
    if text.starts_with('[') {
        return match words::json_strings(text) {
            Some(v) if !v.is_empty() && !v[0].is_empty() => Ok(Command::Exec(v)),
            Some(_) => Err((
                line,
                "the exec form needs a command: [\"cmd\", \"arg\", …]".into(),
            )),
            None => Err((
                line,
                "starts with [ but is not a JSON array of strings (exec form: [\"cmd\", \"arg\"])"
                    .into(),
            )),
        };
    }
    if text.is_empty() {
        return Err((line, "needs a command".into()));
    }
    Ok(Command::Shell(text.to_owned()))
}
