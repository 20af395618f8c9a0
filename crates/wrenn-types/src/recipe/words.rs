//! Words: quoting, escapes and `$VAR` references (kept as [`Word`]s and expanded when the
//! build runs, against the build's environment), JSON exec arrays and durations.

use std::fmt;

/// Text made of literal pieces and variable references, expanded by [`Word::expand`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Word(pub Vec<Piece>);

/// One piece of a [`Word`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    /// `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}`.
    Var {
        name: String,
        op: VarOp,
    },
}

/// What a reference does with its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarOp {
    /// The value, or nothing when unset.
    Plain,
    /// `:-`: the value, or the word when unset or empty.
    Default(Word),
    /// `:+`: the word when set and not empty, else nothing.
    Alt(Word),
}

impl Word {
    /// A word of literal text only.
    pub fn lit(s: impl Into<String>) -> Word {
        let s = s.into();
        if s.is_empty() {
            Word(Vec::new())
        } else {
            Word(vec![Piece::Lit(s)])
        }
    }

    /// The text when the word references no variable.
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var { .. } => return None,
            }
        }
        Some(out)
    }

    /// The word with each variable replaced by `lookup`'s value (unset: empty).
    pub fn expand(&self, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var { name, op } => {
                    let v = lookup(name);
                    match op {
                        VarOp::Plain => out.push_str(v.as_deref().unwrap_or("")),
                        VarOp::Default(w) => match v {
                            Some(v) if !v.is_empty() => out.push_str(&v),
                            _ => out.push_str(&w.expand(lookup)),
                        },
                        VarOp::Alt(w) => {
                            if v.is_some_and(|v| !v.is_empty()) {
                                out.push_str(&w.expand(lookup));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn push_char(&mut self, c: char) {
        match self.0.last_mut() {
            Some(Piece::Lit(s)) => s.push(c),
            _ => self.0.push(Piece::Lit(c.to_string())),
        }
    }

    /// Splits at the first `=` of the leading literal text: `(key, value)`.
    pub fn split_assignment(&self) -> Option<(String, Word)> {
        let Some(Piece::Lit(first)) = self.0.first() else {
            return None;
        };
        let at = first.find('=')?;
        let key = first[..at].to_owned();
        let mut rest = Word::lit(&first[at + 1..]);
        rest.0.extend(self.0[1..].iter().cloned());
        Some((key, rest))
    }
}

impl fmt::Display for Word {
    /// The word as it would be written unquoted, references as `${NAME}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match p {
                Piece::Lit(s) => f.write_str(s)?,
                Piece::Var { name, op } => match op {
                    VarOp::Plain => write!(f, "${{{name}}}")?,
                    VarOp::Default(w) => write!(f, "${{{name}:-{w}}}")?,
                    VarOp::Alt(w) => write!(f, "${{{name}:+{w}}}")?,
                },
            }
        }
        Ok(())
    }
}

/// How [`lex`] reads text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lexer {
    /// The escape character (`\` unless a Dockerfile's `# escape=` says `` ` ``).
    pub escape: char,
    /// Whitespace separates words (else the whole text is one word).
    pub split: bool,
    /// Quotes and escapes are syntax (Dockerfiles); upstream recipes take them literally and
    /// read `$$` as `$`.
    pub quotes: bool,
}

/// A variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_var_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads `text` into words; errors are the reason, without a line.
pub(crate) fn lex(text: &str, lx: Lexer) -> Result<Vec<Word>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut words = Vec::new();
    let mut cur: Option<Word> = None;
    while i < chars.len() {
        let c = chars[i];
        if lx.split && c.is_whitespace() {
            if let Some(w) = cur.take() {
                words.push(w);
            }
            i += 1;
            continue;
        }
        let w = cur.get_or_insert_with(Word::default);
        if lx.quotes && c == lx.escape {
            match chars.get(i + 1) {
                Some(&n) => w.push_char(n),
                None => w.push_char(c),
            }
            i += 2;
        } else if lx.quotes && c == '\'' {
            let end = find_from(&chars, i + 1, '\'').ok_or("a ' quote is not closed")?;
            for &q in &chars[i + 1..end] {
                w.push_char(q);
            }
            i = end + 1;
        } else if lx.quotes && c == '"' {
            i = double_quoted(&chars, i + 1, lx, w)?;
        } else if c == '$' {
            i = variable(&chars, i, lx, w)?;
        } else {
            w.push_char(c);
            i += 1;
        }
    }
    if let Some(w) = cur {
        words.push(w);
    }
    Ok(words)
}

fn find_from(chars: &[char], from: usize, c: char) -> Option<usize> {
    (from..chars.len()).find(|&j| chars[j] == c)
}

/// Reads a `"…"` body from `i` (after the opening quote); returns the index after the close.
fn double_quoted(chars: &[char], mut i: usize, lx: Lexer, w: &mut Word) -> Result<usize, String> {
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("a \" quote is not closed".into());
        };
        if c == '"' {
            return Ok(i + 1);
        }
        if c == lx.escape {
            match chars.get(i + 1) {
                Some(&n) if n == '"' || n == '$' || n == lx.escape => {
                    w.push_char(n);
                    i += 2;
                }
                _ => {
                    w.push_char(c);
                    i += 1;
                }
            }
        } else if c == '$' {
            i = variable(chars, i, lx, w)?;
        } else {
            w.push_char(c);
            i += 1;
        }
    }
}

/// Reads a reference at `i` (a `$`); returns the index after it. A `$` not followed by a name
/// is literal (upstream recipes: `$$` is one `$`).
fn variable(chars: &[char], i: usize, lx: Lexer, w: &mut Word) -> Result<usize, String> {
    let next = chars.get(i + 1).copied();
    if !lx.quotes && next == Some('$') {
        w.push_char('$');
        return Ok(i + 2);
    }
    if next == Some('{') {
        return braced(chars, i + 2, lx, w);
    }
    let start = i + 1;
    let mut j = start;
    while j < chars.len()
        && (chars[j].is_ascii_alphanumeric() || chars[j] == '_')
        && !(j == start && chars[j].is_ascii_digit())
    {
        j += 1;
    }
    if j == start {
        w.push_char('$');
        return Ok(i + 1);
    }
    w.0.push(Piece::Var {
        name: chars[start..j].iter().collect(),
        op: VarOp::Plain,
    });
    Ok(j)
}

/// Reads `NAME}`, `NAME:-word}` or `NAME:+word}` from `i`.
fn braced(chars: &[char], i: usize, lx: Lexer, w: &mut Word) -> Result<usize, String> {
    let mut j = i;
    while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    let name: String = chars[i..j].iter().collect();
    if !is_var_name(&name) {
        return Err(format!(
            "${{…}} needs a variable name ([A-Za-z_][A-Za-z0-9_]*), not {name:?}"
        ));
    }
    match (chars.get(j), chars.get(j + 1)) {
        (Some('}'), _) => {
            w.0.push(Piece::Var {
                name,
                op: VarOp::Plain,
            });
            Ok(j + 1)
        }
        (Some(':'), Some(&m)) if m == '-' || m == '+' => {
            let close = closing_brace(chars, j + 2)
                .ok_or_else(|| format!("${{{name}{}…}} is not closed", m))?;
            let inner: String = chars[j + 2..close].iter().collect();
            let sub = Lexer { split: false, ..lx };
            let word = lex(&inner, sub)?.into_iter().next().unwrap_or_default();
            let op = if m == '-' {
                VarOp::Default(word)
            } else {
                VarOp::Alt(word)
            };
            w.0.push(Piece::Var { name, op });
            Ok(close + 1)
        }
        (None, _) => Err(format!("${{{name} is not closed")),
        _ => Err(format!(
            "${{{name}…}}: only ${{NAME}}, ${{NAME:-default}} and ${{NAME:+alternative}} are supported"
        )),
    }
}

/// The `}` that closes a `${` whose body starts at `from` (nested `${…}` counted).
fn closing_brace(chars: &[char], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = from;
    while j < chars.len() {
        match chars[j] {
            '$' if chars.get(j + 1) == Some(&'{') => {
                depth += 1;
                j += 1;
            }
            '}' if depth == 0 => return Some(j),
            '}' => depth -= 1,
            _ => {}
        }
        j += 1;
    }
    None
}

/// A JSON array of strings (a Dockerfile's exec form); `None` when `text` is not one.
pub fn json_strings(text: &str) -> Option<Vec<String>> {
    let mut cs = text.trim().chars().peekable();
    let mut out = Vec::new();
    if cs.next()? != '[' {
        return None;
    }
    let skip_ws = |cs: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while cs.peek().is_some_and(|c| c.is_whitespace()) {
            cs.next();
        }
    };
    skip_ws(&mut cs);
    if cs.peek() == Some(&']') {
        cs.next();
        return cs.next().is_none().then_some(out);
    }
    loop {
        skip_ws(&mut cs);
        if cs.next()? != '"' {
            return None;
        }
        let mut s = String::new();
        loop {
            match cs.next()? {
                '"' => break,
                '\\' => match cs.next()? {
                    '"' => s.push('"'),
                    '\\' => s.push('\\'),
                    '/' => s.push('/'),
                    'b' => s.push('\u{8}'),
                    'f' => s.push('\u{c}'),
                    'n' => s.push('\n'),
                    'r' => s.push('\r'),
                    't' => s.push('\t'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| cs.next()).collect();
                        let code = u32::from_str_radix(&hex, 16).ok()?;
                        s.push(char::from_u32(code)?);
                    }
                    _ => return None,
                },
                c if (c as u32) < 0x20 => return None,
                c => s.push(c),
            }
        }
        out.push(s);
        skip_ws(&mut cs);
        match cs.next()? {
            ',' => continue,
            ']' => break,
            _ => return None,
        }
    }
    skip_ws(&mut cs);
    cs.next().is_none().then_some(out)
}

/// A duration as Go writes it (`500ms`, `30s`, `1m30s`, `1.5h`), in milliseconds.
pub fn duration_ms(text: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num.starts_with('.') && num.len() == 1 {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        total += n * scale;
        rest = next;
    }
    (total.is_finite() && total <= 1e15).then_some(total.round() as u64)
}
