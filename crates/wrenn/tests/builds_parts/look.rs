//! What a test reads of templates and capsules through the API.

use super::Api;

/// The `type` of the team's template `name`.
pub(super) async fn template_type(api: &Api<'_>, name: &str) -> String {
    let list = api.get("/v1/snapshots").await;
    let t = list.as_array().unwrap().iter().find(|t| t["name"] == name);
    t.unwrap_or_else(|| panic!("no {name}: {list:#}"))["type"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How many processes of capsule `c` have a command line matching `pattern` (grep -E).
pub(super) async fn running(api: &Api<'_>, c: &str, pattern: &str) -> usize {
    let line = format!(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -cE '{pattern}' || true"
    );
    let out = api.exec(c, &line).await;
    out["stdout"].as_str().unwrap().trim().parse().unwrap()
}
