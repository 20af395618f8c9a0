//! Wrenn's (upstream's) recipe syntax: one instruction a line, keywords in any case.
//! Besides upstream: blank lines, `#` comment lines and `\` continuations.
//!
//! - `RUN [--timeout=<duration>] <shell>`: must exit 0.
//! - `START <shell>`: started in the background, kept running into the snapshot.
//! - `ENV KEY=VALUE`: the rest of the line is the value (no quote removal); `$VAR`, `${VAR}`
//!   expand against the build's environment, `$$` is a `$`.
//! - `WORKDIR <path>`, `USER <name>`, `COPY <src>… <dst>` (paths inside the archive).

use super::{
    check_source, check_user, lines, words, Format, LineError, Recipe, Step, StepKind, Word,
};

const LEXER: words::Lexer = words::Lexer {
    escape: '\\',
    split: true,
    quotes: false,
};

pub(super) fn parse(text: &str) -> Result<Recipe, LineError> {
    let mut steps = Vec::new();
    for l in lines::logical_lines(text, '\\') {
        let (kw, args) = split_keyword(&l.text);
        let line = l.line;
        let kind = match kw.to_ascii_uppercase().as_str() {
            "RUN" => run(args, line)?,
            "START" => StepKind::Start {
                cmd: shell(args, line, "START")?,
            },
            "ENV" => env(args, line)?,
            "WORKDIR" => StepKind::Workdir {
                path: one_word(args, line, "WORKDIR", "a path")?,
            },
            "USER" => {
                let name = one_word(args, line, "USER", "a user name")?;
                check_user(line, &name)?;
                StepKind::User { name }
            }
            "COPY" => copy(args, line)?,
            "FROM" | "ARG" | "CMD" | "ENTRYPOINT" | "EXPOSE" | "HEALTHCHECK" | "ADD" => {
                return Err((
                    line,
                    format!("{kw} is Dockerfile syntax; a recipe knows RUN, START, ENV, WORKDIR, USER and COPY (send a Dockerfile as `dockerfile`)"),
                ))
            }
            _ => {
                return Err((
                    line,
                    format!("unknown instruction {kw:?} (a recipe knows RUN, START, ENV, WORKDIR, USER and COPY)"),
                ))
            }
        };
        steps.push(Step {
            line,
            text: l.text.clone(),
            kind,
        });
    }
    if steps.is_empty() {
        return Err((1, "the recipe has no instruction".into()));
    }
    Ok(Recipe {
        format: Format::Recipe,
        from: None,
        steps,
        expose: Vec::new(),
        healthcheck: None,
    })
}

/// The first word and the trimmed rest.
pub(super) fn split_keyword(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((k, rest)) => (k, rest.trim()),
        None => (text, ""),
    }
}

fn shell(args: &str, line: usize, kw: &str) -> Result<super::Command, LineError> {
    if args.is_empty() {
        return Err((line, format!("{kw} needs a command")));
    }
    // Recipes have no exec form: the text is the shell's.
    Ok(super::Command::Shell(args.to_owned()))
}

fn run(args: &str, line: usize) -> Result<StepKind, LineError> {
    let mut timeout_ms = None;
    let mut rest = args;
    if let Some(opt) = rest.strip_prefix("--timeout=") {
        let (value, tail) = split_keyword(opt);
        let ms = words::duration_ms(value)
            .filter(|&ms| ms > 0)
            .ok_or_else(|| {
                (
                    line,
                    format!("RUN --timeout={value}: not a duration (like 30s, 10m, 1h)"),
                )
            })?;
        timeout_ms = Some(ms);
        rest = tail;
    } else if rest.starts_with("--") {
        return Err((line, "RUN knows one option, --timeout=<duration>".into()));
    }
    Ok(StepKind::Run {
        cmd: shell(rest, line, "RUN")?,
        timeout_ms,
    })
}

fn env(args: &str, line: usize) -> Result<StepKind, LineError> {
    let Some((key, value)) = args.split_once('=') else {
        return Err((line, "ENV needs KEY=VALUE".into()));
    };
    let key = key.trim();
    if !words::is_var_name(key) {
        return Err((
            line,
            format!("ENV {key:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
        ));
    }
    let lx = words::Lexer {
        split: false,
        ..LEXER
    };
    let value = words::lex(value, lx)
        .map_err(|e| (line, e))?
        .into_iter()
        .next()
        .unwrap_or_default();
    Ok(StepKind::Env {
        vars: vec![(key.to_owned(), value)],
    })
}

fn one_word(args: &str, line: usize, kw: &str, what: &str) -> Result<Word, LineError> {
    let mut ws = words::lex(args, LEXER).map_err(|e| (line, e))?;
    match ws.len() {
        1 => Ok(ws.remove(0)),
        0 => Err((line, format!("{kw} needs {what}"))),
        _ => Err((line, format!("{kw} takes one word ({what})"))),
    }
}

fn copy(args: &str, line: usize) -> Result<StepKind, LineError> {
    let mut ws = words::lex(args, LEXER).map_err(|e| (line, e))?;
    if ws.len() < 2 {
        return Err((line, "COPY needs <source>… <destination>".into()));
    }
    let dest = ws.pop().unwrap_or_default();
    for s in &ws {
        check_source(line, s)?;
    }
    Ok(StepKind::Copy {
        sources: ws,
        dest,
        chown: None,
        chmod: None,
    })
}
