//! The recipe and Dockerfile parsers: every instruction, the errors with their lines, and
//! properties in `recipe_props.rs`.

use std::collections::HashMap;

use wrenn_types::recipe::{
    detect, duration_ms, parse, Base, Command, Format, Healthcheck, Port, Recipe, StepKind, Word,
};
use wrenn_types::ParseError;

fn recipe(text: &str) -> Recipe {
    parse(text, Format::Recipe).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn docker(text: &str) -> Recipe {
    parse(text, Format::Dockerfile).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// The error's line and reason.
fn err(text: &str, format: Format) -> (usize, String) {
    match parse(text, format) {
        Err(ParseError::Recipe { line, reason }) => (line, reason),
        other => panic!("{text:?}: expected an error, got {other:?}"),
    }
}

fn expand(w: &Word, vars: &[(&str, &str)]) -> String {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    w.expand(&|n: &str| m.get(n).cloned())
}

#[test]
fn recipe_instructions() {
    let r = recipe(
        "run apt-get install -y curl\n\
         RUN --timeout=5m make all\n\
         ENV GREETING=hello $NAME ${NAME}$$\n\
         WORKDIR /srv/app\n\
         USER app-user\n\
         COPY a.txt dir/b dest/\n\
         START python3 -m http.server 8000\n",
    );
    assert_eq!(r.format, Format::Recipe);
    assert_eq!(r.steps.len(), 7);
    let lines: Vec<usize> = r.steps.iter().map(|s| s.line).collect();
    assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        r.steps[0].kind,
        StepKind::Run {
            cmd: Command::Shell("apt-get install -y curl".into()),
            timeout_ms: None
        }
    );
    assert_eq!(
        r.steps[1].kind,
        StepKind::Run {
            cmd: Command::Shell("make all".into()),
            timeout_ms: Some(300_000)
        }
    );
    let StepKind::Env { vars } = &r.steps[2].kind else {
        panic!("{:?}", r.steps[2])
    };
    assert_eq!(vars[0].0, "GREETING");
    assert_eq!(expand(&vars[0].1, &[("NAME", "x")]), "hello x x$");
    assert_eq!(expand(&vars[0].1, &[]), "hello  $");
    let StepKind::User { name } = &r.steps[4].kind else {
        panic!()
    };
    assert_eq!(name.as_literal().as_deref(), Some("app-user"));
    let StepKind::Copy { sources, dest, .. } = &r.steps[5].kind else {
        panic!()
    };
    assert_eq!(sources.len(), 2);
    assert_eq!(dest.as_literal().as_deref(), Some("dest/"));
    assert!(r.starts_process());
    assert_eq!(
        r.copy_sources().collect::<Vec<_>>(),
        [(6, "a.txt".to_string()), (6, "dir/b".to_string())]
    );
}

#[test]
fn recipe_keeps_quotes_and_comments_and_continuations() {
    let r = recipe("# set up\n\n  RUN echo 'a  b' \"c\" \\\n    && echo done\nENV X='quoted'\n");
    assert_eq!(r.steps.len(), 2);
    assert_eq!(r.steps[0].line, 3);
    assert_eq!(
        r.steps[0].kind,
        StepKind::Run {
            cmd: Command::Shell("echo 'a  b' \"c\"     && echo done".into()),
            timeout_ms: None
        }
    );
    let StepKind::Env { vars } = &r.steps[1].kind else {
        panic!()
    };
    // Upstream takes the value as written.
    assert_eq!(vars[0].1.as_literal().as_deref(), Some("'quoted'"));
}

#[test]
fn recipe_errors_name_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "RUN true\nFROBNICATE x\n",
            2,
            "unknown instruction \"FROBNICATE\"",
        ),
        ("RUN true\n\nUSER 0bad\n", 3, "not a user name"),
        ("USER root:root\n", 1, "not a user name"),
        ("COPY ../secret /x\n", 1, "inside the archive"),
        ("RUN true\nCOPY a/../../b /x\n", 2, "inside the archive"),
        ("COPY /etc/passwd /x\n", 1, "inside the archive"),
        ("COPY *.txt /x\n", 1, "wildcards"),
        ("COPY onlyone\n", 1, "COPY needs"),
        ("FROM minimal\n", 1, "Dockerfile syntax"),
        ("ENV NOVALUE\n", 1, "KEY=VALUE"),
        ("ENV 1X=2\n", 1, "not a variable name"),
        ("RUN\n", 1, "RUN needs a command"),
        ("RUN --timeout=soon true\n", 1, "not a duration"),
        ("RUN --user=x true\n", 1, "--timeout"),
        ("START\n", 1, "START needs"),
        ("WORKDIR a b\n", 1, "one word"),
        ("ENV A=${B\n", 1, "not closed"),
        ("ENV A=${B?x}\n", 1, "only ${NAME}"),
        ("", 1, "no instruction"),
        ("# only a comment\n", 1, "no instruction"),
    ];
    for (text, line, needle) in cases {
        let (l, reason) = err(text, Format::Recipe);
        assert_eq!(l, *line, "{text:?}: {reason}");
        assert!(
            reason.contains(needle),
            "{text:?}: {reason:?} lacks {needle:?}"
        );
    }
}

#[test]
fn dockerfile_instructions() {
    let d = docker(
        "# syntax=docker/dockerfile:1\n\
         ARG BASE=python\n\
         FROM ${BASE}\n\
         ARG VERSION=1.2\n\
         ENV APP_HOME=/srv/app PATH=\"/opt/bin:$PATH\" LABEL='a b'\n\
         ENV OLD the rest   of it\n\
         WORKDIR $APP_HOME\n\
         RUN [\"/bin/echo\", \"v=$VERSION\", \"q\\\"\"]\n\
         RUN echo $VERSION > /v\n\
         USER builder\n\
         COPY --chown=builder:builder --chmod=0644 [\"a b.txt\", \"c\", \"/dst/\"]\n\
         ADD site/ /var/www/\n\
         EXPOSE 8000 53/udp\n\
         HEALTHCHECK --interval=1s --retries=5 CMD curl -sf http://127.0.0.1:8000/\n\
         CMD [\"python3\", \"-m\", \"http.server\", \"8000\"]\n",
    );
    assert_eq!(d.format, Format::Dockerfile);
    assert_eq!(d.from, Some(Base::Template("python".parse().unwrap())));
    let kinds: Vec<&StepKind> = d.steps.iter().map(|s| &s.kind).collect();
    assert!(
        matches!(kinds[0], StepKind::Arg { name, default: Some(w) } if name == "VERSION" && w.as_literal().as_deref() == Some("1.2"))
    );
    let StepKind::Env { vars } = kinds[1] else {
        panic!()
    };
    assert_eq!(vars.len(), 3);
    assert_eq!(
        expand(&vars[1].1, &[("PATH", "/usr/bin")]),
        "/opt/bin:/usr/bin"
    );
    assert_eq!(vars[2].1.as_literal().as_deref(), Some("a b"));
    let StepKind::Env { vars } = kinds[2] else {
        panic!()
    };
    assert_eq!(vars[0].0, "OLD");
    assert_eq!(vars[0].1.as_literal().as_deref(), Some("the rest   of it"));
    let StepKind::Workdir { path } = kinds[3] else {
        panic!()
    };
    assert_eq!(expand(path, &[("APP_HOME", "/srv/app")]), "/srv/app");
    // Exec form: JSON, no variable expansion; shell form left to the shell.
    assert_eq!(
        *kinds[4],
        StepKind::Run {
            cmd: Command::Exec(vec!["/bin/echo".into(), "v=$VERSION".into(), "q\"".into()]),
            timeout_ms: None
        }
    );
    assert_eq!(
        *kinds[5],
        StepKind::Run {
            cmd: Command::Shell("echo $VERSION > /v".into()),
            timeout_ms: None
        }
    );
    let StepKind::Copy {
        sources,
        dest,
        chown,
        chmod,
    } = kinds[7]
    else {
        panic!("{:?}", kinds[7])
    };
    assert_eq!(sources, &[Word::lit("a b.txt"), Word::lit("c")]);
    assert_eq!(dest, &Word::lit("/dst/"));
    assert_eq!(
        chown.as_ref().and_then(Word::as_literal).as_deref(),
        Some("builder:builder")
    );
    assert_eq!(*chmod, Some(0o644));
    assert!(matches!(kinds[8], StepKind::Copy { .. }), "ADD copies");
    assert_eq!(
        d.expose,
        [
            Port {
                number: 8000,
                udp: false
            },
            Port {
                number: 53,
                udp: true
            }
        ]
    );
    let hc = d.healthcheck.as_ref().unwrap();
    assert_eq!(
        (hc.interval_ms, hc.retries, hc.timeout_ms),
        (1000, 5, 10_000)
    );
    assert_eq!(
        hc.cmd,
        Command::Shell("curl -sf http://127.0.0.1:8000/".into())
    );
    let last = d.steps.last().unwrap();
    assert_eq!(last.line, 15);
    assert_eq!(
        last.kind,
        StepKind::Start {
            cmd: Command::Exec(vec![
                "python3".into(),
                "-m".into(),
                "http.server".into(),
                "8000".into()
            ])
        }
    );
}

#[test]
fn dockerfile_from_kinds() {
    assert_eq!(
        docker("FROM minimal").from,
        Some(Base::Template("minimal".parse().unwrap()))
    );
    for image in [
        "python:3.12-slim",
        "ghcr.io/org/img@sha256:abc",
        "library/debian",
    ] {
        assert_eq!(
            docker(&format!("FROM {image}\n")).from,
            Some(Base::Image(image.into())),
            "{image}"
        );
    }
    assert_eq!(docker("FROM minimal AS build\n").steps.len(), 0);
}

#[test]
fn dockerfile_cmd_and_entrypoint_combine_as_docker_does() {
    let start = |text: &str| match &docker(text).steps.last().unwrap().kind {
        StepKind::Start { cmd } => cmd.clone(),
        k => panic!("{k:?}"),
    };
    assert_eq!(
        start("FROM m\nCMD serve --port 1\n"),
        Command::Shell("serve --port 1".into())
    );
    assert_eq!(
        start("FROM m\nENTRYPOINT [\"srv\"]\nCMD [\"--port\", \"1\"]\n"),
        Command::Exec(vec!["srv".into(), "--port".into(), "1".into()])
    );
    assert_eq!(
        start("FROM m\nENTRYPOINT [\"env\"]\nCMD echo hi\n"),
        Command::Exec(vec![
            "env".into(),
            "/bin/sh".into(),
            "-c".into(),
            "echo hi".into()
        ])
    );
    assert_eq!(
        start("FROM m\nENTRYPOINT srv\nCMD [\"x\"]\n"),
        Command::Shell("srv".into())
    );
    // The last CMD wins; HEALTHCHECK NONE drops the earlier one.
    assert_eq!(start("FROM m\nCMD a\nCMD b\n"), Command::Shell("b".into()));
    let d = docker("FROM m\nHEALTHCHECK CMD true\nHEALTHCHECK NONE\n");
    assert!(d.healthcheck.is_none() && !d.starts_process());
}

#[test]
fn dockerfile_continuations_comments_and_escape_directive() {
    let d = docker(
        "FROM minimal\nRUN apt-get update && \\\n# a comment inside\n\n    apt-get install -y \\\n      curl\nRUN echo one\n",
    );
    assert_eq!(d.steps.len(), 2);
    assert_eq!(d.steps[0].line, 2);
    assert_eq!(d.steps[1].line, 7);
    assert_eq!(
        d.steps[0].kind,
        StepKind::Run {
            cmd: Command::Shell("apt-get update &&     apt-get install -y       curl".into()),
            timeout_ms: None
        }
    );
    let d = docker("# escape=`\nFROM minimal\nRUN echo a `\n  b\nCOPY `$literal /x\n");
    assert_eq!(
        d.steps[0].kind,
        StepKind::Run {
            cmd: Command::Shell("echo a   b".into()),
            timeout_ms: None
        }
    );
    let StepKind::Copy { sources, .. } = &d.steps[1].kind else {
        panic!()
    };
    assert_eq!(sources[0].as_literal().as_deref(), Some("$literal"));
}

#[test]
fn dockerfile_quoting_and_variables() {
    let d = docker(
        "FROM m\nENV A=\"x \\\"y\\\" \\$z $B\" C='$B \"q\"' D=pre\\ post E=${B:-dflt} F=${B:+alt}\n",
    );
    let StepKind::Env { vars } = &d.steps[0].kind else {
        panic!()
    };
    let got: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.clone(), expand(v, &[("B", "b")])))
        .collect();
    let want = [
        ("A", "x \"y\" $z b"),
        ("C", "$B \"q\""),
        ("D", "pre post"),
        ("E", "b"),
        ("F", "alt"),
    ];
    assert_eq!(got.len(), want.len());
    for ((k, v), (wk, wv)) in got.iter().zip(want) {
        assert_eq!((k.as_str(), v.as_str()), (wk, wv));
    }
    assert_eq!(expand(&vars[3].1, &[]), "dflt");
    assert_eq!(expand(&vars[4].1, &[]), "");
}

#[test]
fn dockerfile_errors_name_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "FROM m\nRUN true\nVOLUME /data\n",
            3,
            "VOLUME is not supported",
        ),
        ("FROM m\n\nFOO bar\n", 3, "unknown instruction \"FOO\""),
        ("FROM m\nLABEL a=b\n", 2, "LABEL is not supported"),
        (
            "FROM m\nSHELL [\"bash\", \"-c\"]\n",
            2,
            "SHELL is not supported",
        ),
        ("FROM m\nUSER 1000\n", 2, "not a user name"),
        ("FROM m\nUSER app:staff\n", 2, "not a user name"),
        ("RUN true\nFROM m\n", 1, "before FROM"),
        ("ARG X=1\n", 1, "no FROM"),
        ("FROM a\nRUN x\nFROM b\n", 3, "multi-stage"),
        ("FROM m\nCOPY --from=build /a /b\n", 2, "multi-stage"),
        ("FROM m\nCOPY ../x /y\n", 2, "inside the archive"),
        (
            "FROM m\nCOPY [\"/etc/passwd\", \"/y\"]\n",
            2,
            "inside the archive",
        ),
        (
            "FROM m\nADD https://example.com/x /y\n",
            2,
            "URLs are not supported",
        ),
        ("FROM m\nADD data.tar.gz /y\n", 2, "unpacking archives"),
        ("FROM m\nRUN [\"unterminated\"\n", 2, "not a JSON array"),
        ("FROM m\nRUN []\n", 2, "needs a command"),
        (
            "FROM m\nRUN --mount=type=cache,target=/x true\n",
            2,
            "RUN --mount",
        ),
        ("FROM m\nRUN <<EOF\necho\nEOF\n", 2, "heredoc"),
        ("FROM m\nENV A=\"open\n", 2, "not closed"),
        ("FROM m\nENV ONLYKEY\n", 2, "needs a value"),
        ("FROM m\nEXPOSE 70000\n", 2, "not a port"),
        ("FROM m\nEXPOSE 80/sctp\n", 2, "protocol"),
        ("FROM m\nEXPOSE 8000-8010\n", 2, "not a port"),
        ("FROM m\nEXPOSE $PORT\n", 2, "$PORT has no value"),
        (
            "FROM m\nHEALTHCHECK --interval=x CMD true\n",
            2,
            "not a duration",
        ),
        ("FROM m\nHEALTHCHECK curl x\n", 2, "CMD <command>"),
        (
            "FROM m\nHEALTHCHECK --start-interval=1s CMD true\n",
            2,
            "unknown option",
        ),
        ("FROM m\nCMD\n", 2, "needs a command"),
        ("FROM scratch\n", 1, "scratch"),
        (
            "FROM --platform=linux/arm64 m\n",
            1,
            "options are not supported",
        ),
        ("# escape=x\nFROM m\n", 1, "escape directive"),
        ("FROM m\nARG a b\n", 2, "one NAME"),
        ("FROM m\nCOPY --chmod=999 a /b\n", 2, "octal"),
    ];
    for (text, line, needle) in cases {
        let (l, reason) = err(text, Format::Dockerfile);
        assert_eq!(l, *line, "{text:?}: {reason}");
        assert!(
            reason.contains(needle),
            "{text:?}: {reason:?} lacks {needle:?}"
        );
    }
}

#[test]
fn expose_from_an_arg_default() {
    let d = docker("FROM m\nARG PORT=8080\nEXPOSE $PORT/tcp\n");
    assert_eq!(
        d.expose,
        [Port {
            number: 8080,
            udp: false
        }]
    );
}

#[test]
fn api_healthcheck_syntax() {
    let hc = Healthcheck::parse(
        "--interval=5s --timeout=5s --start-period=60s --retries=5 curl -sf http://127.0.0.1:8888/api/status",
    )
    .unwrap();
    assert_eq!(
        (
            hc.interval_ms,
            hc.timeout_ms,
            hc.start_period_ms,
            hc.retries
        ),
        (5000, 5000, 60_000, 5)
    );
    assert_eq!(
        hc.cmd,
        Command::Shell("curl -sf http://127.0.0.1:8888/api/status".into())
    );
    assert_eq!(hc.deadline_ms(), Some(60_000 + 6 * 5000));
    let hc = Healthcheck::parse("CMD [\"true\"]").unwrap();
    assert_eq!(hc.cmd, Command::Exec(vec!["true".into()]));
    assert_eq!(
        (hc.interval_ms, hc.retries, hc.deadline_ms()),
        (3000, 0, None)
    );
    for bad in [
        "",
        "--interval=3s",
        "--retries=-1 true",
        "--interval true",
        "--bogus=1 true",
    ] {
        assert!(
            matches!(Healthcheck::parse(bad), Err(ParseError::Recipe { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn durations() {
    for (text, ms) in [
        ("0", 0),
        ("500ms", 500),
        ("30s", 30_000),
        ("1m30s", 90_000),
        ("1.5h", 5_400_000),
        ("2m", 120_000),
    ] {
        assert_eq!(duration_ms(text), Some(ms), "{text}");
    }
    for bad in ["", "5", "s", "1x", "-1s", "1e9h", ".s"] {
        assert_eq!(duration_ms(bad), None, "{bad}");
    }
}

#[test]
fn detects_the_format() {
    assert_eq!(detect("# c\n\nFROM minimal\n"), Format::Dockerfile);
    assert_eq!(detect("arg X\nFROM $X\n"), Format::Dockerfile);
    assert_eq!(detect("RUN true\n"), Format::Recipe);
    assert_eq!(detect(""), Format::Recipe);
}
