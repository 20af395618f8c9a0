//! What the API says about itself, over real HTTP and without any VM: `/openapi.json` documents
//! exactly the routes served, `/docs` renders it from this origin alone, and `/metrics` counts
//! requests by route template. The router runs on a loopback listener with a SQLite database in
//! a temporary folder and an agent client that never connects.

#[path = "state/mod.rs"]
mod state;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{header, Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use wrenn_server::{
    accounts::SignupPolicy,
    db::{CapsuleRow, Db},
};

struct Server {
    base: String,
    http: reqwest::Client,
    db: Db,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wrenn.db").display()
    );
    let db = Db::open(&url).await.unwrap();
    let state = state::with_agent(db.clone(), SignupPolicy::Open, state::no_agent()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            wrenn_server::router(state)
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Server {
        base,
        http: reqwest::Client::new(),
        db,
        _dir: dir,
    }
}

impl Server {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn openapi(&self) -> Value {
        let resp = self.get("/openapi.json").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/json",
            "served as JSON"
        );
        resp.json().await.unwrap()
    }
}

/// (METHOD, path template) of every operation in an OpenAPI document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| methods.contains(&m.as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn openapi_documents_every_route_and_only_those() {
    let s = start().await;
    let doc = s.openapi().await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // The route table the router is built from, against the document.
    let table: Vec<(String, String)> = wrenn_server::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let served: BTreeSet<_> = table.iter().cloned().collect();
    assert_eq!(served.len(), table.len(), "a route is listed twice");
    let documented = operations(&doc);
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );

    // And against the router itself: every documented operation reaches a handler (never the
    // fallback's "no such route", never 405), asked without credentials.
    for (method, path) in &documented {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let resp = s
            .http
            .request(m, format!("{}{concrete}", s.base))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body.contains("no such route")),
            "{method} {path} is documented but not routed"
        );
        // A protected route asks for credentials in the documented error shape.
        let public = doc["paths"][path][method.to_lowercase()]["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r == &serde_json::json!({})));
        if !public {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            let err: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(err["error"]["code"], "unauthorized", "{body}");
            assert!(err["error"]["message"].is_string());
        }
    }
}

#[tokio::test]
async fn the_console_is_served_outside_v1_with_a_strict_policy() {
    let s = start().await;
    for path in ["/", "/capsules/cl-x", "/console.json"] {
        let resp = s.get(path).await;
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        let status = resp.status();
        let body = resp.text().await.unwrap();
        if path == "/console.json" {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(
                v["proxy_domain"].is_string() && v["signup"].is_string(),
                "{body}"
            );
        } else if wrenn_server::console::built() {
            assert_eq!(status, StatusCode::OK);
            assert!(body.contains("<div id=\"app\">"), "{body}");
        } else {
            // Built without the console: a page that says how to build it.
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert!(body.contains("make dashboard"), "{body}");
        }
    }
    // The API's paths keep the API's answers.
    let resp = s.get("/v1/nope").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_found");
}

#[tokio::test]
async fn the_docs_page_is_self_contained() {
    let s = start().await;
    let resp = s.get("/docs").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let page = resp.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("fetch(\"openapi.json\""));
    for banned in ["<link", " src=", "@import", "http://", "https://"] {
        assert!(!page.contains(banned), "the page has {banned:?}");
    }
    // What the page fetches is there, relative to it.
    let doc = s.openapi().await;
    assert!(doc["tags"].as_array().is_some_and(|t| !t.is_empty()));
}

/// One sample line: `name{labels} value` or `name value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format 0.0.4, failing on any line that is not a comment, a
/// blank line or a well-formed sample.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut typed = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, what) = (parts.next(), parts.next(), parts.next());
            assert!(
                matches!(kind, Some("HELP" | "TYPE")) && name.is_some() && what.is_some(),
                "bad comment: {line}"
            );
            if kind == Some("TYPE") {
                let what = what.unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&what),
                    "{line}"
                );
                typed.insert(name.unwrap().to_string(), what.to_string());
            }
            continue;
        }
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => line.split_once(' ').expect("name value"),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line}"
        );
        let (labels, value_text) = if rest.starts_with('{') {
            let (labels, after) = parse_labels(rest, line);
            (
                labels,
                after.strip_prefix(' ').expect("a space before the value"),
            )
        } else {
            (BTreeMap::new(), rest)
        };
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            typed.contains_key(family) || typed.contains_key(name),
            "{name} has no # TYPE before it"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// `{name="value",…}` at the start of `s` (values with `\\`, `\"` and `\n` escapes), and
/// what follows it.
fn parse_labels<'a>(s: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let b = s.as_bytes();
    let mut labels = BTreeMap::new();
    let mut i = 1;
    while b[i] != b'}' {
        let eq = s[i..].find("=\"").expect("label=\"value\"");
        let name = &s[i..i + eq];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name in {line}"
        );
        i += eq + 2;
        let mut value = String::new();
        loop {
            match b[i] {
                b'\\' => {
                    value.push(match b[i + 1] {
                        b'n' => '\n',
                        b'\\' => '\\',
                        b'"' => '"',
                        other => panic!("bad escape \\{} in {line}", other as char),
                    });
                    i += 2;
                }
                b'"' => break,
                _ => {
                    let c = s[i..].chars().next().unwrap();
                    value.push(c);
                    i += c.len_utf8();
                }
            }
        }
        i += 1; // the closing quote
        match b[i] {
            b',' => i += 1,
            b'}' => {}
            _ => panic!("bad label list in {line}"),
        }
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "label twice in {line}"
        );
    }
    (labels, &s[i + 1..])
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(s: &Server) -> (String, Vec<Sample>) {
    let resp = s.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK, "no credentials needed");
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    let samples = parse_exposition(&text);
    (text, samples)
}

fn capsule(team: &str, id: &str, status: &str) -> CapsuleRow {
    CapsuleRow {
        id: id.into(),
        team_id: team.into(),
        template: "minimal".into(),
        status: status.parse().unwrap(),
        vcpus: 1,
        memory_mb: 256,
        disk_size_mb: 1024,
        timeout_sec: 0,
        metadata: Default::default(),
        error: None,
        created_at: 1,
        started_at: Some(1),
        last_active_at: None,
        updated_at: 1,
        host_id: None,
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let s = start().await;
    let team = s.db.create_team("metrics").await.unwrap();
    let ids = [
        "cl-mmmmmmmmmmmmmmmmmmmmmmmm1",
        "cl-mmmmmmmmmmmmmmmmmmmmmmmm2",
        "cl-mmmmmmmmmmmmmmmmmmmmmmmm3",
    ];
    for (id, status) in ids.iter().zip(["running", "running", "paused"]) {
        s.db.insert_capsule(&capsule(&team.id, id, status))
            .await
            .unwrap();
    }

    let (_, before) = scrape(&s).await;
    assert_eq!(
        value(
            &before,
            "wrenn_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&before, "wrenn_capsules", &[("status", "running")]),
        Some(2.0)
    );
    assert_eq!(
        value(&before, "wrenn_capsules", &[("status", "paused")]),
        Some(1.0)
    );
    assert_eq!(
        value(&before, "wrenn_capsules", &[("status", "error")]),
        Some(0.0)
    );
    let health = [("method", "GET"), ("route", "/health"), ("status", "200")];
    assert_eq!(value(&before, "wrenn_http_requests_total", &health), None);

    // A few requests: two healthy, two unauthorized on one route template with different ids,
    // one that no route matches, one method no route allows.
    for path in [
        "/health",
        "/health",
        &format!("/v1/capsules/{}", ids[0]),
        "/v1/capsules/cl-other",
        "/v1/no/such/route",
    ] {
        s.get(path).await;
    }
    let put = s
        .http
        .put(format!("{}/health", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);

    let (text, after) = scrape(&s).await;
    let total = |labels: &[(&str, &str)]| value(&after, "wrenn_http_requests_total", labels);
    assert_eq!(total(&health), Some(2.0));
    assert_eq!(
        total(&[
            ("method", "GET"),
            ("route", "/v1/capsules/{id}"),
            ("status", "401")
        ]),
        Some(2.0)
    );
    assert_eq!(
        total(&[("method", "GET"), ("route", "unmatched"), ("status", "404")]),
        Some(1.0)
    );
    assert_eq!(
        total(&[("method", "PUT"), ("route", "/health"), ("status", "405")]),
        Some(1.0)
    );
    // The first scrape was counted too.
    assert_eq!(
        total(&[("method", "GET"), ("route", "/metrics"), ("status", "200")]),
        Some(1.0)
    );
    // Route templates only: no raw path, id or team in any label.
    for secret in [ids[0], "cl-other", "/no/such/route", team.id.as_str()] {
        assert!(!text.contains(secret), "{secret} leaked into /metrics");
    }

    // The histogram: cumulative buckets, +Inf equals the count, which equals the requests.
    let by_route = [("method", "GET"), ("route", "/health")];
    let buckets: Vec<(f64, f64)> = after
        .iter()
        .filter(|x| {
            x.name == "wrenn_http_request_duration_seconds_bucket"
                && by_route
                    .iter()
                    .all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|x| {
            let le = x.labels["le"].as_str();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, x.value)
        })
        .collect();
    assert!(buckets.len() >= 2, "{buckets:?}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{buckets:?}"
    );
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 2.0));
    assert_eq!(
        value(
            &after,
            "wrenn_http_request_duration_seconds_count",
            &by_route
        ),
        Some(2.0)
    );
    let sum = value(&after, "wrenn_http_request_duration_seconds_sum", &by_route).unwrap();
    assert!(sum > 0.0 && sum < 10.0, "{sum}");

    // Gauges follow the database.
    s.db.set_capsule_status(ids[2], wrenn_types::CapsuleStatus::Running, None, false)
        .await
        .unwrap();
    let (_, again) = scrape(&s).await;
    assert_eq!(
        value(&again, "wrenn_capsules", &[("status", "running")]),
        Some(3.0)
    );
    assert_eq!(
        value(&again, "wrenn_capsules", &[("status", "paused")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &again,
            "wrenn_http_requests_total",
            &[("method", "GET"), ("route", "/metrics"), ("status", "200")]
        ),
        Some(2.0)
    );
}

#[test]
fn the_exposition_parser_refuses_bad_lines() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\",y=\"\"} 3\n";
    let s = parse_exposition(ok);
    assert_eq!(s[0].labels["x"], "q\"\\");
    assert_eq!(s[0].value, 3.0);
    for bad in [
        "# TYPE a counter\na{x=\"1\"}3\n",
        "# TYPE a counter\na{x=1} 3\n",
        "# TYPE a counter\na 3 4 x\n",
        "b 1\n",
        "# NOTE a\n",
    ] {
        let caught = std::panic::catch_unwind(|| parse_exposition(bad));
        assert!(caught.is_err(), "accepted {bad:?}");
    }
}
