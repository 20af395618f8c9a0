//! The Dockerfile subset: `FROM` (a Wrenn template or an OCI reference), `RUN`, `ENV`, `ARG`,
//! `WORKDIR`, `USER`, `COPY`/`ADD` (from the build's archive), `EXPOSE` (recorded),
//! `CMD`/`ENTRYPOINT` (started before the snapshot, like `START`), `HEALTHCHECK`. Anything else
//! is an error naming its line.

use std::collections::HashMap;

use super::{
    check_source, check_user,
    healthcheck::{command, parse_options},
    lines,
    upstream::split_keyword,
    words, Base, Command, Format, LineError, Port, Recipe, Step, StepKind, Word,
};
use crate::TemplateName;

/// What the parser knows while reading: the escape character, the values `ARG`/`ENV` gave
/// literally (for `FROM` and `EXPOSE`, which are read here), `CMD` and `ENTRYPOINT`.
struct Reader {
    lexer: words::Lexer,
    known: HashMap<String, String>,
    cmd: Option<(usize, Command)>,
    entrypoint: Option<(usize, Command)>,
}

pub(super) fn parse(text: &str) -> Result<Recipe, LineError> {
    let escape = lines::escape_directive(text)?;
    let mut r = Reader {
        lexer: words::Lexer {
            escape,
            split: true,
            quotes: true,
        },
        known: HashMap::new(),
        cmd: None,
        entrypoint: None,
    };
    let mut recipe = Recipe {
        format: Format::Dockerfile,
        from: None,
        steps: Vec::new(),
        expose: Vec::new(),
        healthcheck: None,
    };
    let mut last_line = 1;
    for l in lines::logical_lines(text, escape) {
        let line = l.line;
        last_line = line;
        let (kw, args) = split_keyword(&l.text);
        let kw = kw.to_ascii_uppercase();
        if args.starts_with("<<") && matches!(kw.as_str(), "RUN" | "COPY" | "ADD") {
            return Err((line, format!("{kw} with a heredoc (<<) is not supported")));
        }
        if recipe.from.is_none() && kw != "FROM" && kw != "ARG" {
            return Err((
                line,
                format!("{kw} before FROM (a Dockerfile starts with FROM)"),
            ));
        }
        let kind = match kw.as_str() {
            "FROM" => {
                if recipe.from.is_some() {
                    return Err((line, "a second FROM: multi-stage builds are not supported".into()));
                }
                recipe.from = Some(r.from(args, line)?);
                continue;
            }
            "RUN" => r.run(args, line)?,
            "ENV" => r.env(args, line)?,
            "ARG" => {
                let kind = r.arg(args, line)?;
                if recipe.from.is_none() {
                    // Before FROM an ARG only feeds FROM.
                    continue;
                }
                kind
            }
            "WORKDIR" => StepKind::Workdir {
                path: r.one_word(args, line, "WORKDIR")?,
            },
            "USER" => {
                let name = r.one_word(args, line, "USER")?;
                check_user(line, &name)?;
                StepKind::User { name }
            }
            "COPY" | "ADD" => r.copy(&kw, args, line)?,
            "EXPOSE" => {
                recipe.expose.extend(r.expose(args, line)?);
                continue;
            }
            "CMD" => {
                r.cmd = Some((line, command(args, line).map_err(|(l, e)| (l, format!("CMD {e}")))?));
                continue;
            }
            "ENTRYPOINT" => {
                let c = command(args, line).map_err(|(l, e)| (l, format!("ENTRYPOINT {e}")))?;
                r.entrypoint = Some((line, c));
                continue;
            }
            "HEALTHCHECK" => {
                recipe.healthcheck = if args.eq_ignore_ascii_case("NONE") {
                    None
                } else {
                    Some(parse_options(args, line, true).map_err(|(l, e)| (l, format!("HEALTHCHECK: {e}")))?)
                };
                continue;
            }
            "SHELL" | "VOLUME" | "STOPSIGNAL" | "ONBUILD" | "LABEL" | "MAINTAINER" => {
                return Err((line, format!("{kw} is not supported by Wrenn builds")))
            }
            _ => {
                return Err((
                    line,
                    format!("unknown instruction {kw:?} (supported: FROM, RUN, ENV, ARG, WORKDIR, USER, COPY, ADD, EXPOSE, CMD, ENTRYPOINT, HEALTHCHECK)"),
                ))
            }
        };
        recipe.steps.push(Step {
            line,
            text: l.text.clone(),
            kind,
        });
    }
    if recipe.from.is_none() {
        return Err((
            last_line,
            "no FROM: a Dockerfile names its base with FROM".into(),
        ));
    }
    if let Some(start) = r.start_step() {
        recipe.steps.push(start);
    }
    Ok(recipe)
}

impl Reader {
    fn words(&self, args: &str, line: usize) -> Result<Vec<Word>, LineError> {
        words::lex(args, self.lexer).map_err(|e| (line, e))
    }

    /// A word's value now, from what `ARG`/`ENV` set literally.
    fn now(&self, w: &Word, line: usize, what: &str) -> Result<String, LineError> {
        let unknown = std::cell::RefCell::new(None);
        let v = w.expand(&|name: &str| {
            let v = self.known.get(name).cloned();
            if v.is_none() {
                *unknown.borrow_mut() = Some(name.to_owned());
            }
            v
        });
        match unknown.into_inner() {
            Some(name) => Err((
                line,
                format!("{what}: ${name} has no value the Dockerfile gives"),
            )),
            None => Ok(v),
        }
    }

    fn one_word(&self, args: &str, line: usize, kw: &str) -> Result<Word, LineError> {
        let mut ws = self.words(args, line)?;
        match ws.len() {
            1 => Ok(ws.remove(0)),
            0 => Err((line, format!("{kw} needs a value"))),
            _ => Err((
                line,
                format!("{kw} takes one word (quote it if it has spaces)"),
            )),
        }
    }

    fn from(&self, args: &str, line: usize) -> Result<Base, LineError> {
        let ws = self.words(args, line)?;
        let first = ws
            .first()
            .ok_or((line, "FROM needs a template or image".to_owned()))?;
        if let Some(flag) = first.as_literal().filter(|s| s.starts_with("--")) {
            return Err((line, format!("FROM {flag}: options are not supported")));
        }
        match ws.len() {
            1 => {}
            3 if ws[1]
                .as_literal()
                .is_some_and(|s| s.eq_ignore_ascii_case("AS")) =>
            {
                // A stage name alone is harmless; other stages are refused at their FROM.
            }
            _ => {
                return Err((
                    line,
                    "FROM takes one template or image (FROM <name> [AS <stage>])".into(),
                ))
            }
        }
        let name = self.now(first, line, "FROM")?;
        if name == "scratch" {
            return Err((
                line,
                "FROM scratch is not supported (start from a template such as minimal)".into(),
            ));
        }
        Ok(match TemplateName::parse(&name) {
            Ok(t) => Base::Template(t),
            Err(_) if !name.is_empty() && !name.contains(char::is_whitespace) => Base::Image(name),
            Err(_) => {
                return Err((
                    line,
                    format!("FROM {name:?} is not a template or image reference"),
                ))
            }
        })
    }

    fn run(&self, args: &str, line: usize) -> Result<StepKind, LineError> {
        if let Some(flag) = args.strip_prefix("--") {
            let name = flag.split(['=', ' ']).next().unwrap_or("");
            return Err((line, format!("RUN --{name}: options are not supported")));
        }
        let cmd = command(args, line).map_err(|(l, e)| (l, format!("RUN {e}")))?;
        Ok(StepKind::Run {
            cmd,
            timeout_ms: None,
        })
    }

    fn env(&mut self, args: &str, line: usize) -> Result<StepKind, LineError> {
        let ws = self.words(args, line)?;
        let first = ws.first().ok_or((line, "ENV needs KEY=VALUE".to_owned()))?;
        let vars = if first.split_assignment().is_none() {
            // The old form: `ENV KEY the rest of the line`.
            let (key, rest) = split_keyword(args);
            let lx = words::Lexer {
                split: false,
                ..self.lexer
            };
            let value = words::lex(rest, lx)
                .map_err(|e| (line, e))?
                .into_iter()
                .next()
                .unwrap_or_default();
            if rest.is_empty() {
                return Err((line, format!("ENV {key} needs a value (ENV KEY=VALUE)")));
            }
            vec![(key.to_owned(), value)]
        } else {
            let mut vars = Vec::new();
            for w in &ws {
                let (k, v) = w
                    .split_assignment()
                    .ok_or_else(|| (line, format!("ENV {w}: expected KEY=VALUE")))?;
                vars.push((k, v));
            }
            vars
        };
        for (k, v) in &vars {
            if !words::is_var_name(k) {
                return Err((
                    line,
                    format!("ENV {k:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
                ));
            }
            self.learn(k, v);
        }
        Ok(StepKind::Env { vars })
    }

    fn learn(&mut self, k: &str, v: &Word) {
        let known = &self.known;
        let complete = std::cell::Cell::new(true);
        let value = v.expand(&|n: &str| {
            let got = known.get(n).cloned();
            complete.set(complete.get() && got.is_some());
            got
        });
        if complete.get() {
            self.known.insert(k.to_owned(), value);
        } else {
            self.known.remove(k);
        }
    }

    fn arg(&mut self, args: &str, line: usize) -> Result<StepKind, LineError> {
        let ws = self.words(args, line)?;
        if ws.len() != 1 {
            return Err((line, "ARG takes one NAME or NAME=default".into()));
        }
        let (name, default) = match ws[0].split_assignment() {
            Some((k, v)) => (k, Some(v)),
            None => (ws[0].as_literal().unwrap_or_default(), None),
        };
        if !words::is_var_name(&name) {
            return Err((
                line,
                format!("ARG {name:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            ));
        }
        if let Some(d) = &default {
            self.learn(&name, d);
        }
        Ok(StepKind::Arg { name, default })
    }

    fn copy(&self, kw: &str, args: &str, line: usize) -> Result<StepKind, LineError> {
        let mut ws = self.words(args, line)?;
        let mut chown = None;
        let mut chmod = None;
        while let Some(flag) = ws
            .first()
            .and_then(Word::as_literal)
            .filter(|s| s.starts_with("--"))
        {
            let w = ws.remove(0);
            let (k, v) = w
                .split_assignment()
                .unwrap_or((flag.clone(), Word::default()));
            match k.as_str() {
                "--chown" => {
                    check_user(
                        line,
                        &Word::lit(
                            v.as_literal()
                                .unwrap_or_default()
                                .split(':')
                                .next()
                                .unwrap_or(""),
                        ),
                    )
                    .map_err(|(l, e)| (l, format!("{kw} --chown: {e}")))?;
                    chown = Some(v);
                }
                "--chmod" => {
                    let text = v.as_literal().unwrap_or_default();
                    chmod = Some(
                        u32::from_str_radix(&text, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| {
                                (line, format!("{kw} --chmod={text}: not an octal mode"))
                            })?,
                    );
                }
                "--from" => {
                    return Err((
                        line,
                        format!("{kw} --from: multi-stage builds are not supported"),
                    ))
                }
                _ => {
                    return Err((
                        line,
                        format!("{kw} {flag}: option not supported (--chown, --chmod)"),
                    ))
                }
            }
        }
        let json_form = args.trim_start_matches(|c: char| c != '[').trim();
        if !ws.is_empty() && ws[0].as_literal().is_some_and(|s| s.starts_with('[')) {
            let v = words::json_strings(json_form)
                .ok_or_else(|| (line, format!("{kw} [..]: not a JSON array of strings")))?;
            ws = v.into_iter().map(Word::lit).collect();
        }
        if ws.len() < 2 {
            return Err((line, format!("{kw} needs <source>… <destination>")));
        }
        let dest = ws.pop().unwrap_or_default();
        for s in &ws {
            if kw == "ADD" {
                let lit = s.as_literal().unwrap_or_default();
                if lit.contains("://") || lit.starts_with("git@") {
                    return Err((
                        line,
                        format!("ADD {lit}: URLs are not supported (builds copy from the archive)"),
                    ));
                }
                if [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst"]
                    .iter()
                    .any(|e| lit.ends_with(e))
                {
                    return Err((
                        line,
                        format!(
                            "ADD {lit}: unpacking archives is not supported; use COPY and RUN tar"
                        ),
                    ));
                }
            }
            check_source(line, s).map_err(|(l, e)| (l, e.replacen("COPY", kw, 1)))?;
        }
        Ok(StepKind::Copy {
            sources: ws,
            dest,
            chown,
            chmod,
        })
    }

    fn expose(&self, args: &str, line: usize) -> Result<Vec<Port>, LineError> {
        let ws = self.words(args, line)?;
        if ws.is_empty() {
            return Err((line, "EXPOSE needs a port".into()));
        }
        let mut ports = Vec::new();
        for w in &ws {
            let text = self.now(w, line, "EXPOSE")?;
            let (num, proto) = text.split_once('/').unwrap_or((&text, "tcp"));
            let udp = match proto.to_ascii_lowercase().as_str() {
                "tcp" => false,
                "udp" => true,
                p => {
                    return Err((
                        line,
                        format!("EXPOSE {text}: protocol {p:?} is not tcp or udp"),
                    ))
                }
            };
            let number = num.parse::<u16>().ok().filter(|&n| n > 0).ok_or_else(|| {
                (
                    line,
                    format!("EXPOSE {text}: not a port (1–65535; ranges are not supported)"),
                )
            })?;
            ports.push(Port { number, udp });
        }
        Ok(ports)
    }

    /// `ENTRYPOINT` and `CMD` as Docker combines them: an exec-form entrypoint takes an
    /// exec-form `CMD` as its arguments; a shell-form entrypoint ignores `CMD`.
    fn start_step(&self) -> Option<Step> {
        let (line, cmd) = match (&self.entrypoint, &self.cmd) {
            (Some((l, Command::Exec(e))), Some((_, Command::Exec(c)))) => {
                (*l, Command::Exec(e.iter().chain(c).cloned().collect()))
            }
            (Some((l, Command::Exec(e))), Some((_, Command::Shell(c)))) => {
                let mut v = e.clone();
                v.extend(["/bin/sh".into(), "-c".into(), c.clone()]);
                (*l, Command::Exec(v))
            }
            (Some((l, e)), _) => (*l, e.clone()),
            (None, Some((l, c))) => (*l, c.clone()),
            (None, None) => return None,
        };
        let text = match &cmd {
            Command::Shell(s) => format!("START {s}"),
            Command::Exec(v) => format!("START {v:?}"),
        };
        Some(Step {
            line,
            text,
            kind: StepKind::Start { cmd },
        })
    }
}
