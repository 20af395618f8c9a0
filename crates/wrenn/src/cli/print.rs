//! How the verbs print what the API answers: tables and details, for people (`--json` prints
//! the API's JSON instead).

use wrenn_client::{Capsule, Template};

/// Left-aligned columns, two spaces apart.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

pub(super) fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `2026-05-02T10:00:00.123Z` → `2026-05-02 10:00:00`.
pub(super) fn when(ts: Option<&str>) -> String {
    let Some(ts) = ts else { return "-".into() };
    let short: String = ts.chars().take(19).collect();
    short.replace('T', " ")
}

pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub(super) fn capsule_details(c: &Capsule) -> String {
    let mut lines = vec![
        ("id", c.id.clone()),
        ("status", c.status.to_string()),
        ("template", opt(c.template.as_deref())),
        ("vcpus", opt(c.vcpus)),
        ("memory", opt(c.memory_mb.map(|m| format!("{m} MiB")))),
        ("disk", opt(c.disk_size_mb.map(|m| format!("{m} MiB")))),
        (
            "timeout",
            opt(c.timeout_sec.map(|t| match t {
                0 => "none".to_string(),
                t => format!("{t} s idle"),
            })),
        ),
        ("created", when(c.created_at.as_deref())),
        ("started", when(c.started_at.as_deref())),
        ("last active", when(c.last_active_at.as_deref())),
    ];
    if let Some(e) = &c.error {
        lines.push(("error", e.clone()));
    }
    for (k, v) in c.metadata.iter().flatten() {
        lines.push(("metadata", format!("{k}={v}")));
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{:<12} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn capsule_table(list: &[Capsule]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.status.to_string(),
                opt(c.template.as_deref()),
                opt(c.vcpus),
                opt(c.memory_mb.map(|m| format!("{m} MiB"))),
                when(c.created_at.as_deref()),
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "TEMPLATE", "VCPUS", "MEMORY", "CREATED"],
        &rows,
    )
}

pub(super) fn template_table(list: &[Template]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.kind.as_str().to_string(),
                opt(t.vcpus),
                opt(t.memory_mb.map(|m| format!("{m} MiB"))),
                opt(t.size_bytes.map(human_bytes)),
                when(t.created_at.as_deref()),
            ]
        })
        .collect();
    table(
        &["NAME", "TYPE", "VCPUS", "MEMORY", "SIZE", "CREATED"],
        &rows,
    )
}
