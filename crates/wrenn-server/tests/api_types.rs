//! The OpenAPI document is the API's contract with clients we did not write: it changes only on
//! purpose. The document as served must equal `tests/openapi.json`; after a deliberate change to
//! the API, write the new one with `WRENN_BLESS=1 cargo test -p wrenn-server --test api_types`
//! and review the diff.

use utoipa::OpenApi;
use wrenn_server::api_docs::ApiDoc;

#[test]
fn the_document_is_the_reviewed_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi.json");
    let now = ApiDoc::openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("WRENN_BLESS").is_some() {
        std::fs::write(path, &now).unwrap();
    }
    let reviewed = std::fs::read_to_string(path).unwrap();
    if now != reviewed {
        let line = now
            .lines()
            .zip(reviewed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(now.lines().count().min(reviewed.lines().count()));
        panic!(
            "/openapi.json differs from tests/openapi.json from line {}: {:?} (served) vs {:?} \
             (reviewed)",
            line + 1,
            now.lines().nth(line),
            reviewed.lines().nth(line)
        );
    }
}
