//! The API describes itself: an OpenAPI 3.1 document generated from the handlers'
//! `#[utoipa::path]` attributes and the bodies' `ToSchema` derives (`GET /openapi.json`), and a
//! self-contained page that renders it (`GET /docs`: inline script and style, nothing loaded
//! from elsewhere, which its Content-Security-Policy enforces).

use std::sync::LazyLock;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use base64::Engine;
use sha2::{Digest, Sha256};
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme},
    Modify, OpenApi,
};

use crate::{
    accounts, admin, audit, builds, capsules, error, events, files, hosts, quotas,
    responses::{
        AgentFailed, BadRequest, HostUnavailable, InsufficientStorage, Internal, QuotaExceeded,
        RateLimited, Unauthorized,
    },
    service, snapshots, usage, ws,
};

/// Every `/v1/` operation may meet an unreachable database (503) or a full disk (507).
struct ServerFaults;

impl Modify for ServerFaults {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Ref, RefOr};
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (status, name) in [("503", "HostUnavailable"), ("507", "InsufficientStorage")] {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

/// The credentials the API takes.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A team's API key (`wrn_` + 32 hex): it acts in its team. What the SDK sends.",
            ))),
        );
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "`Authorization: Bearer` with an API key (`wrn_…`), or a user token from \
             `/v1/auth/login` (24 h, or until logged out). A user acts in the team named by \
             `X-Team-Id` (they must be a member) or else in their first team."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        components.add_security_scheme(
            "host_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Host-Token",
                "A registered host's token (from `/v1/hosts/register` or \
                 `/v1/hosts/auth/refresh`): it acts only as its own host.",
            ))),
        );
    }
}

/// The document. Every operation needs `api_key` or `bearer` unless it says otherwise.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wrenn API",
        description = "The control plane of Wrenn: capsules (microVM sandboxes), commands, \
            files, snapshots, events, accounts. Errors are `{\"error\":{\"code\",\"message\"}}`; \
            clients tell them apart by `error.code`."
    ),
    paths(
        service::health,
        openapi_json,
        docs,
        service::scrape,
        capsules::create::create,
        capsules::lifecycle::list,
        usage::stats,
        usage::usage,
        capsules::lifecycle::get,
        capsules::lifecycle::destroy,
        capsules::lifecycle::pause,
        capsules::lifecycle::resume,
        capsules::fork::fork,
        crate::transfer::moves::move_capsule,
        capsules::lifecycle::ping,
        crate::network::get,
        crate::network::set,
        capsules::metrics::metrics,
        capsules::exec::exec,
        ws::exec::exec_stream,
        capsules::exec::processes,
        capsules::exec::kill_process,
        ws::exec::connect_process,
        ws::terminal::pty,
        files::read,
        files::stream_read,
        files::write,
        files::stream_write,
        files::list,
        files::mkdir,
        files::remove,
        snapshots::create,
        snapshots::list,
        snapshots::delete,
        builds::handlers::create,
        builds::handlers::list,
        builds::handlers::get,
        builds::handlers::cancel,
        builds::handlers::logs,
        builds::admin::create,
        builds::admin::list,
        builds::admin::get,
        events::stream,
        audit::audit,
        quotas::handlers::get,
        quotas::handlers::set,
        accounts::sessions::signup,
        accounts::sessions::login,
        accounts::sessions::logout,
        accounts::sessions::logout_all,
        accounts::console_session::create,
        accounts::console_session::get,
        accounts::console_session::delete,
        accounts::invitations::create_invitation,
        accounts::invitations::list_invitations,
        accounts::invitations::delete_invitation,
        accounts::teams::list_teams,
        accounts::teams::create_team,
        accounts::teams::list_members,
        accounts::teams::add_member,
        accounts::teams::set_member_role,
        accounts::teams::remove_member,
        accounts::keys::list_api_keys,
        accounts::keys::create_api_key,
        accounts::keys::delete_api_key,
        hosts::manage::create,
        hosts::manage::list,
        hosts::identity::register,
        hosts::identity::refresh,
        hosts::manage::get,
        hosts::manage::delete,
        hosts::manage::delete_preview,
        hosts::manage::new_token,
        hosts::heartbeat::heartbeat,
        hosts::maintain::tags,
        hosts::maintain::add_tag,
        hosts::maintain::remove_tag,
        hosts::maintain::drain,
        hosts::maintain::undrain,
        hosts::manage::set_byoc,
        admin::users,
        admin::teams,
        admin::templates,
    ),
    components(
        schemas(
            error::ErrorBody,
            error::ErrorCode,
            capsules::model::CapsuleStatus,
            capsules::metrics::MetricsRange,
            usage::StatsRange,
            snapshots::TemplateType,
            events::EventKind,
            events::Event,
            crate::db::Role,
        ),
        responses(
            BadRequest,
            Unauthorized,
            Internal,
            AgentFailed,
            HostUnavailable,
            InsufficientStorage,
            QuotaExceeded,
            RateLimited
        )
    ),
    modifiers(&SecuritySchemes, &ServerFaults),
    security(("api_key" = []), ("bearer" = [])),
    tags(
        (name = "capsules", description = "Capsules: create, inspect, pause, resume, destroy; \
            the team's statistics and usage"),
        (name = "commands", description = "Commands and processes in a running capsule, \
            streamed exec and terminals over WebSockets"),
        (name = "files", description = "Files in a running capsule; reads and writes stream \
            with no size limit"),
        (name = "snapshots", description = "Templates: the platform's, and the team's \
            snapshots of capsules"),
        (name = "builds", description = "Templates built from a recipe or a Dockerfile, in a \
            build capsule; queued, followed live, cancelled"),
        (name = "events", description = "The team's lifecycle events, as server-sent events"),
        (name = "auth", description = "Sign-up (by the server's policy: open, invite or \
            closed), log-in (rate-limited per account and per address), log-out (user tokens are \
            revocable)"),
        (name = "teams", description = "Teams, their members and invitations (signed-in users \
            only)"),
        (name = "api-keys", description = "The team's API keys. A key belongs to the user who \
            made it and is deleted when they leave the team; the server's admin key belongs to \
            the team"),
        (name = "audit", description = "The team's audit log"),
        (name = "hosts", description = "The host agents capsules run on: registration and \
            identity, heartbeats, tags, drain (platform admins every host; a BYOC team its own)"),
        (name = "admin", description = "What platform admins see across every team: users, \
            teams, every team's templates"),
        (name = "service", description = "The server itself: health, this document, metrics"),
    )
)]
pub struct ApiDoc;

/// The document as served.
static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
});

/// The OpenAPI document
///
/// This API's OpenAPI 3.1 document, generated from the server's code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "service",
    security(()),
    responses((status = 200, description = "The document", content(("application/json"))))
)]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON.as_str(),
    )
        .into_response()
}

const PAGE: &str = include_str!("docs/index.html");
const STYLE: &str = include_str!("docs/docs.css");
const SCRIPT: &str = include_str!("docs/docs.js");

/// A CSP source for inline content with this text.
fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The docs page and its Content-Security-Policy: only its own inline style and script run,
/// and it may fetch only from this origin.
static DOCS: LazyLock<(String, String)> = LazyLock::new(|| {
    let page = PAGE
        .replacen("/*STYLE*/", STYLE, 1)
        .replacen("/*SCRIPT*/", SCRIPT, 1);
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' \
         data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    );
    (page, csp)
});

/// API docs page
///
/// A self-contained HTML page that renders `/openapi.json`: operations by tag, with their
/// parameters, bodies and answers.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "service",
    security(()),
    responses((status = 200, description = "The page", content(("text/html"))))
)]
pub async fn docs() -> Response {
    let (page, csp) = &*DOCS;
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, csp.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        page.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap()
    }

    /// (METHOD, path) of every operation of the document.
    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if matches!(
                    method.as_str(),
                    "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
                ) {
                    ops.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    #[test]
    fn documents_exactly_the_routes_served() {
        let doc = doc();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        let table: Vec<(String, String)> = crate::routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        let served: BTreeSet<_> = table.iter().cloned().collect();
        assert_eq!(served.len(), table.len(), "a route is in the table twice");
        let documented = operations(&doc);
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not documented: {undocumented:?}; documented but not served: {unserved:?}"
        );
    }

    #[test]
    fn the_router_builds_from_the_table() {
        // Two routes with the same method and path would panic here.
        let _ = crate::routes()
            .into_iter()
            .fold(axum::Router::<crate::AppState>::new(), |r, route| {
                r.route(route.path, route.handler)
            });
    }

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external {r}"));
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
    }

    #[test]
    fn operations_are_complete() {
        let doc = doc();
        let global_security = &doc["security"];
        assert!(global_security.as_array().is_some_and(|s| !s.is_empty()));
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let what = format!("{method} {path}");
                assert!(
                    ids.insert(op["operationId"].as_str().unwrap().to_string()),
                    "{what}: operationId used twice"
                );
                assert!(
                    op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{what}: no summary"
                );
                assert!(
                    op["tags"].as_array().is_some_and(|t| t.len() == 1),
                    "{what}: one tag"
                );
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2') || s == "101"),
                    "{what}: no success answer"
                );
                // Every `{param}` of the path is a documented path parameter, and no other.
                let in_path: BTreeSet<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                let documented: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(in_path, documented, "{what}: path parameters");
                // Whoever needs credentials documents what happens without them.
                let public = op["security"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
                });
                if !public {
                    assert!(responses.contains_key("401"), "{what}: no 401");
                }
                // Error answers are the error body.
                for (status, r) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        let r = match r["$ref"].as_str() {
                            Some(p) => doc.pointer(p.trim_start_matches('#')).unwrap(),
                            None => r,
                        };
                        assert_eq!(
                            r["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{what}: {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn error_codes_are_documented() {
        let doc = doc();
        let documented: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let codes: BTreeSet<String> = error::ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        assert_eq!(documented, codes);
    }

    #[test]
    fn the_docs_page_loads_nothing_from_elsewhere() {
        let (page, csp) = &*DOCS;
        assert!(page.contains(SCRIPT) && page.contains(STYLE));
        assert!(!page.contains("/*SCRIPT*/") && !page.contains("/*STYLE*/"));
        for banned in ["<link", " src=", "@import", "http://", "https://", "//cdn"] {
            assert!(!page.contains(banned), "the page has {banned:?}");
        }
        assert!(csp.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("http"));
    }
}
