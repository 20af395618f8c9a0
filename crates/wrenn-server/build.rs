//! Embeds the web console's built files (`dashboard/build`, made by `npm run build` there, or
//! the folder `WRENN_DASHBOARD_DIR` names) into the server: `$OUT_DIR/console_assets.rs` lists
//! each file with its gzip and brotli copies. Without a built console the list is empty and
//! the server answers `/` with a page that says how to build it.

use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WRENN_DASHBOARD_DIR");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dashboard = manifest.join("../../dashboard");
    let dir = match env::var_os("WRENN_DASHBOARD_DIR") {
        Some(d) => PathBuf::from(d),
        None => dashboard.join("build"),
    };
    let mut files = Vec::new();
    if dir.join("index.html").is_file() {
        println!("cargo:rerun-if-changed={}", dir.display());
        walk(&dir, &dir, &mut files);
    } else if dashboard.is_dir() {
        // Rerun when the build folder appears (the folder's own entries change then).
        println!("cargo:rerun-if-changed={}", dashboard.display());
    }
    files.sort();
    let mut out = String::from("&[\n");
    for rel in &files {
        let path = dir.join(rel);
        let sibling = |ext: &str| {
            let p = PathBuf::from(format!("{}.{ext}", path.display()));
            if p.is_file() {
                format!("Some(include_bytes!({:?}))", p.display().to_string())
            } else {
                "None".to_string()
            }
        };
        let url = format!("/{}", rel.replace('\\', "/"));
        writeln!(
            out,
            "    Asset {{ path: {url:?}, body: include_bytes!({:?}), gzip: {}, br: {} }},",
            path.display().to_string(),
            sibling("gz"),
            sibling("br")
        )
        .expect("writing to a String");
    }
    out.push(']');
    let target =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("console_assets.rs");
    fs::write(target, out).expect("writing the console's asset list");
}

/// Every file under `dir` (relative to `root`), leaving out the compressed copies.
fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // the build's own stamps
        }
        if path.is_dir() {
            walk(root, &path, files);
        } else if !matches!(path.extension().and_then(|e| e.to_str()), Some("gz" | "br")) {
            if let Ok(rel) = path.strip_prefix(root) {
                files.push(rel.to_string_lossy().into_owned());
            }
        }
    }
}
