//! docs/reliability.md: the soak run rewrites only its own blocks, between
//! `<!-- soak:NAME:begin -->` and `<!-- soak:NAME:end -->`; the rest of the file (the other
//! sections, filled by hand from other runs) is left as it is. A missing block is appended.

use std::path::Path;

use anyhow::{Context, Result};

/// Replaces the summary table's row that starts with `| {key}` (the first cell) with `row`;
/// a missing row goes at the end of the first table whose header starts with `| What`.
pub fn update_row(doc: &Path, key: &str, row: &str) -> Result<()> {
    let old = std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    write(doc, &replace_row(&old, key, row))
}

fn replace_row(old: &str, key: &str, row: &str) -> String {
    let prefix = format!("| {key}");
    let row = row.trim_end();
    let mut lines: Vec<String> = old.lines().map(str::to_string).collect();
    if let Some(l) = lines.iter_mut().find(|l| l.starts_with(&prefix)) {
        *l = row.to_string();
    } else if let Some(h) = lines.iter().position(|l| l.starts_with("| What")) {
        let mut end = h + 1;
        while end < lines.len() && lines[end].starts_with('|') {
            end += 1;
        }
        lines.insert(end, row.to_string());
    } else {
        lines.push(String::new());
        lines.push("| What was tried | How much | What held |".into());
        lines.push("|---|---|---|".into());
        lines.push(row.to_string());
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn write(doc: &Path, text: &str) -> Result<()> {
    let tmp = doc.with_extension("md.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, doc).with_context(|| format!("writing {}", doc.display()))?;
    Ok(())
}

/// Replaces the text of block `name` in `doc` with `body`.
pub fn update(doc: &Path, name: &str, body: &str) -> Result<()> {
    let old = match std::fs::read_to_string(doc) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", doc.display())),
    };
    write(doc, &replace_block(&old, name, body))
}

fn replace_block(old: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- soak:{name}:begin -->");
    let end = format!("<!-- soak:{name}:end -->");
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &old[..b], &old[e + end.len()..])
        }
        _ => {
            let mut s = old.trim_end().to_string();
            if !s.is_empty() {
                s.push_str("\n\n");
            }
            s.push_str(&block);
            s.push('\n');
            s
        }
    }
}

/// The date and time now, UTC (`2026-12-04 13:45 UTC`), from the civil-from-days algorithm.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_replaced_in_place_and_the_rest_kept() {
        let old =
            "# T\n\n<!-- soak:load:begin -->\nold\n<!-- soak:load:end -->\n\n## Other\nkeep\n";
        let new = replace_block(old, "load", "new figures\n");
        assert_eq!(
            new,
            "# T\n\n<!-- soak:load:begin -->\nnew figures\n<!-- soak:load:end -->\n\n## Other\nkeep\n"
        );
        // Idempotent shape: a second update replaces the first.
        assert_eq!(
            replace_block(&new, "load", "again"),
            new.replace("new figures", "again")
        );
    }

    #[test]
    fn a_row_is_replaced_by_its_first_cell_or_added_to_the_table() {
        let old = "# T\n\n| What was tried | How much | What held |\n|---|---|---|\n\
                   | Load held: x | 1 | no |\n| Fuzzing | (to fill) | |\n\nafter\n";
        let new = replace_row(old, "Load held", "| Load held: y | 2 | yes |");
        assert!(new.contains("| Load held: y | 2 | yes |\n| Fuzzing"));
        assert!(!new.contains("Load held: x"));
        let added = replace_row(&new, "Churn", "| Churn | 3 | yes |");
        assert!(added.contains("| Fuzzing | (to fill) | |\n| Churn | 3 | yes |\n\nafter"));
    }

    #[test]
    fn a_missing_block_is_appended() {
        let new = replace_block("# T\n", "churn", "x");
        assert_eq!(
            new,
            "# T\n\n<!-- soak:churn:begin -->\nx\n<!-- soak:churn:end -->\n"
        );
    }

    #[test]
    fn dates_are_civil_utc() {
        let s = now_utc();
        assert_eq!(s.len(), "2026-12-04 13:45 UTC".len());
        assert!(s.starts_with("20"));
    }
}
