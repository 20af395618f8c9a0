//! Physical lines into logical ones: comments, blank lines, continuations and a Dockerfile's
//! `# escape=` directive.

/// One instruction's text, with the number of its first physical line (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logical {
    pub line: usize,
    pub text: String,
}

/// The escape character a Dockerfile's leading `# escape=` directive names (`\` otherwise).
pub(crate) fn escape_directive(text: &str) -> Result<char, (usize, String)> {
    for (n, raw) in text.lines().enumerate() {
        let t = raw.trim();
        let Some(body) = t.strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = body.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.contains(char::is_whitespace) || key.is_empty() {
            break;
        }
        if key == "escape" {
            return match value.trim() {
                "\\" => Ok('\\'),
                "`" => Ok('`'),
                v => Err((
                    n + 1,
                    format!("escape directive must be \\ or `, not {v:?}"),
                )),
            };
        }
    }
    Ok('\\')
}

/// Joins continued lines (ending in `escape`), drops blank lines and `#` comment lines (also
/// inside a continued instruction, as Docker does).
pub(crate) fn logical_lines(text: &str, escape: char) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut cur: Option<Logical> = None;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = raw.trim_end();
        // Any trailing escape character continues the line (as Docker reads it).
        let (part, continues) = match body.strip_suffix(escape) {
            Some(p) => (p, true),
            None => (body, false),
        };
        match cur.as_mut() {
            Some(l) => l.text.push_str(part),
            None => {
                cur = Some(Logical {
                    line: n + 1,
                    text: part.trim_start().to_owned(),
                })
            }
        }
        if !continues {
            out.extend(cur.take());
        }
    }
    out.extend(cur);
    out
}
