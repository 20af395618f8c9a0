//! Properties of the recipe and Dockerfile parsers: no panic on any text, errors on real
//! lines, continuations, quoting and exec arrays that read back.

use proptest::prelude::*;
use wrenn_types::recipe::{json_strings, parse, Command, Format, StepKind};
use wrenn_types::ParseError;

proptest! {
    #[test]
    fn never_panics_and_lines_are_real(text in "(?s).{0,400}") {
        for format in [Format::Recipe, Format::Dockerfile] {
            if let Err(ParseError::Recipe { line, .. }) = parse(&text, format) {
                prop_assert!(line >= 1 && line <= text.lines().count().max(1), "line {}", line);
            }
        }
    }

    #[test]
    fn instruction_like_text_never_panics(
        lines in prop::collection::vec(
            ("(RUN|ENV|ARG|COPY|ADD|USER|WORKDIR|EXPOSE|CMD|ENTRYPOINT|HEALTHCHECK|START|FROM|run) ",
             "[ -~]{0,40}"), 0..12)
    ) {
        let text: String = lines.iter().map(|(k, a)| format!("{k}{a}\n")).collect();
        let _ = parse(&text, Format::Recipe);
        let _ = parse(&format!("FROM minimal\n{text}"), Format::Dockerfile);
    }

    /// A command split over lines at any spaces reads back as the same instruction.
    #[test]
    fn continuations_join(
        parts in prop::collection::vec("[a-z0-9&|;=./-]{1,8}", 1..8),
        breaks in prop::collection::vec(any::<bool>(), 8),
    ) {
        let mut text = String::from("FROM minimal\nRUN");
        let mut want = String::new();
        for (i, p) in parts.iter().enumerate() {
            if breaks[i] {
                text.push_str(" \\\n");
            }
            text.push(' ');
            text.push_str(p);
            if i > 0 {
                want.push(' ');
            }
            want.push_str(p);
        }
        text.push('\n');
        let d = parse(&text, Format::Dockerfile).unwrap();
        let StepKind::Run { cmd: Command::Shell(got), .. } = &d.steps[0].kind else { panic!() };
        let collapsed: Vec<&str> = got.split_whitespace().collect();
        prop_assert_eq!(collapsed.join(" "), want);
        prop_assert_eq!(d.steps[0].line, 2);
    }

    /// Any value, double-quoted with `\"`, `\\` and `\$` escaped, reads back unchanged.
    #[test]
    fn double_quoting_round_trips(value in "[ -~]{0,40}") {
        let quoted: String = value.chars().flat_map(|c| match c {
            '"' | '\\' | '$' => vec!['\\', c],
            c => vec![c],
        }).collect();
        let d = parse(&format!("FROM m\nENV V=\"{quoted}\"\n"), Format::Dockerfile).unwrap();
        let StepKind::Env { vars } = &d.steps[0].kind else { panic!() };
        prop_assert_eq!(vars[0].1.as_literal(), Some(value));
    }

    /// Single quotes keep anything but a quote literally.
    #[test]
    fn single_quoting_is_literal(value in "[ -&(-~]{0,40}") {
        let d = parse(&format!("FROM m\nENV V='{value}'\n"), Format::Dockerfile).unwrap();
        let StepKind::Env { vars } = &d.steps[0].kind else { panic!() };
        prop_assert_eq!(vars[0].1.as_literal(), Some(value));
    }

    /// The exec form is JSON: whatever serde_json writes, it reads back.
    #[test]
    fn exec_form_round_trips(argv in prop::collection::vec("\\PC{0,12}", 1..6)) {
        let json = serde_json::to_string(&argv).unwrap();
        prop_assert_eq!(json_strings(&json), Some(argv.clone()));
        let d = parse(&format!("FROM m\nRUN {json}\n"), Format::Dockerfile);
        if argv[0].is_empty() {
            prop_assert!(d.is_err());
        } else {
            let d = d.unwrap();
            prop_assert_eq!(&d.steps[0].kind, &StepKind::Run { cmd: Command::Exec(argv), timeout_ms: None });
        }
    }

    /// An unknown instruction is refused on its own line, wherever it is.
    #[test]
    fn unknown_instruction_names_its_line(before in 0usize..20, blank in 0usize..3) {
        let mut text = String::from("FROM minimal\n");
        for i in 0..before {
            text.push_str(&format!("RUN echo {i}\n"));
            text.push_str(&"\n".repeat(blank));
        }
        text.push_str("BOGUS x\nRUN true\n");
        let want = 2 + before * (1 + blank);
        let docker_line = match parse(&text, Format::Dockerfile) { Err(ParseError::Recipe { line, .. }) => line, _ => 0 };
        prop_assert_eq!(docker_line, want);
        let recipe_text = text.replacen("FROM minimal\n", "RUN true\n", 1);
        let recipe_line = match parse(&recipe_text, Format::Recipe) { Err(ParseError::Recipe { line, .. }) => line, _ => 0 };
        prop_assert_eq!(recipe_line, want);
    }
}
