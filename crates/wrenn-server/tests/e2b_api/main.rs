//! The E2B-compatible API's own logic, fast and without QEMU: the real router and SQLite
//! storage with the fake host agent ([`fake_agent`]). Authentication before lookups, E2B's
//! error body on every error, the field mapping both ways, list filters and pages, the
//! deadline, pause and connect, and the proxy's answers for envd. The published `e2b` SDK runs
//! against a real `wrenn up` in `tests/e2b_platform`.

#[allow(dead_code)]
#[path = "../fake_agent/mod.rs"]
mod fake_agent;

#[path = "../state/mod.rs"]
mod state;

#[path = "../two_teams/mod.rs"]
mod two_teams;

mod envd;
mod https;

use reqwest::{header::HeaderMap, StatusCode};
use serde_json::{json, Value};
use tonic::Status;
use wrenn_server::db::{now_ms, E2bLifetime};

pub(crate) use two_teams::TwoTeams as Server;

pub(crate) async fn start() -> Server {
    two_teams::start(10).await
}

pub(crate) struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Server {
    async fn call(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn a(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call(&self.key_a, method, path, body).await
    }

    /// A new sandbox of team A, its create answer.
    async fn create(&self, body: Value) -> Value {
        let r = self.a("POST", "/v2/sandboxes", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }
}

/// E2B's error body with `status`.
pub(crate) fn e2b_error(r: &Answer, status: u16) -> String {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["code"], json!(status), "{}", r.body);
    assert!(r.body.as_object().unwrap().len() == 2, "{}", r.body);
    r.body["message"].as_str().expect("a message").to_string()
}

#[tokio::test]
async fn a_bad_key_is_401_before_any_lookup_in_e2b_shape() {
    let s = start().await;
    let id = s.create(json!({"templateID": "minimal"})).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    for (method, path) in [
        ("GET", format!("/sandboxes/{id}")),
        ("GET", "/sandboxes/cl-0123456789abcdefghijklmno".into()),
        ("GET", "/sandboxes/not-an-id".into()),
        ("DELETE", format!("/sandboxes/{id}")),
        ("GET", "/v2/sandboxes".into()),
        ("POST", "/v2/sandboxes".into()),
        ("POST", format!("/sandboxes/{id}/pause")),
        ("POST", format!("/v2/sandboxes/{id}/connect")),
        ("GET", format!("/sandboxes/{id}/metrics")),
        ("GET", "/templates".into()),
    ] {
        let r = s
            .call(
                "wrn_0000000000000000000000000000dead",
                method,
                &path,
                Some(json!({})),
            )
            .await;
        e2b_error(&r, 401);
        // No key at all.
        let r = s
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", s.base),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], 401, "{body}");
    }
    // Nothing was changed by the refused calls.
    let r = s.a("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (StatusCode::OK, Some("running"))
    );
}

#[tokio::test]
async fn create_maps_fields_both_ways_and_the_capsule_is_a_wrenn_capsule() {
    let s = start().await;
    let created = s
        .create(json!({
            "templateID": "base",
            "timeout": 120,
            "metadata": {"k": "v w"},
            "envVars": {"A": "1"},
        }))
        .await;
    let id = created["sandboxID"].as_str().unwrap();
    assert!(id.starts_with("cl-"), "{created}");
    // The SDK's required fields, and its envd version parses as PEP 440.
    assert_eq!(created["templateID"], "minimal");
    assert_eq!(created["envdVersion"], "0.6.4");
    assert!(created["clientID"].is_string());
    assert_eq!(created["envdAccessToken"], format!("envd-token-of-{id}"));
    let port = s.base.rsplit(':').next().unwrap();
    assert_eq!(created["domain"], format!("wrenn.test:{port}"));
    // The host got the metadata and the environment; its idle timeout is off (E2B's deadline
    // is the control plane's).
    let held = &s.agent.capsules()[id];
    assert_eq!(held.metadata["k"], "v w");
    assert_eq!(held.timeout_secs, 0);
    // A Wrenn capsule of the key's team.
    let r = s.a("GET", &format!("/v1/capsules/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["metadata"]["k"], "v w");
    assert_eq!(r.body["status"], "running");
    // get_info.
    let d = s.a("GET", &format!("/sandboxes/{id}"), None).await.body;
    for field in [
        "templateID",
        "sandboxID",
        "clientID",
        "startedAt",
        "endAt",
        "envdVersion",
        "cpuCount",
        "memoryMB",
        "diskSizeMB",
        "state",
    ] {
        assert!(!d[field].is_null(), "{field} missing: {d}");
    }
    assert_eq!(d["state"], "running");
    assert_eq!(d["metadata"]["k"], "v w");
    assert_eq!(d["lifecycle"]["onTimeout"], "kill");
    let end = time::OffsetDateTime::parse(
        d["endAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = end.unix_timestamp() - now_ms() / 1000;
    assert!((115..=121).contains(&left), "endAt {left} s away");
    // The audit log has the create.
    let audit = s.a("GET", "/v1/audit", None).await.body;
    assert!(audit.to_string().contains(id), "{audit}");
}

#[tokio::test]
async fn bad_bodies_are_400_and_a_failed_create_is_not_retried() {
    let s = start().await;
    for body in [
        json!({}),
        json!({"templateID": 7}),
        json!({"templateID": "minimal", "bogus": 1}),
        json!({"templateID": "minimal", "timeout": 0}),
        json!({"templateID": "minimal", "timeout": 999999}),
        json!({"templateID": "minimal", "autoResume": {"enabled": true}}),
        json!({"templateID": "minimal", "network": {"allowOut": ["x"]}}),
        json!({"templateID": "Not A Name!"}),
    ] {
        let r = s.a("POST", "/v2/sandboxes", Some(body.clone())).await;
        let m = e2b_error(&r, 400);
        assert!(!m.is_empty(), "{body}");
    }
    assert!(s.agent.capsules().is_empty());
    // A host that fails: 5xx, and the SDK told not to retry (it could duplicate).
    s.agent
        .fail_next("create_capsule", Status::unavailable("no room"));
    let r = s
        .a(
            "POST",
            "/v2/sandboxes",
            Some(json!({"templateID": "minimal"})),
        )
        .await;
    e2b_error(&r, 503);
    assert_eq!(r.headers["should-retry"], "false");
    // An unknown template: 404 in E2B's shape.
    s.agent
        .fail_next("create_capsule", Status::not_found("no such template"));
    let r = s
        .a("POST", "/v2/sandboxes", Some(json!({"templateID": "nope"})))
        .await;
    e2b_error(&r, 404);
}

#[tokio::test]
async fn list_filters_by_state_and_metadata_and_pages() {
    let s = start().await;
    let mut ids = Vec::new();
    for (i, tag) in ["x y", "x y", "other"].iter().enumerate() {
        let c = s
            .create(json!({"templateID": "minimal", "metadata": {"tag": tag, "n": i.to_string()}}))
            .await;
        ids.push(c["sandboxID"].as_str().unwrap().to_string());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r = s.a("GET", "/v2/sandboxes", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let listed: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandboxID"].as_str().unwrap())
        .collect();
    // Newest first.
    assert_eq!(listed, vec![&ids[2], &ids[1], &ids[0]]);
    assert!(r.headers.get("x-next-token").is_none());
    // The SDK's double encoding of {"tag": "x y"}.
    let r = s
        .a("GET", "/v2/sandboxes?metadata=tag%3Dx%252520y", None)
        .await;
    let got: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandboxID"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![&ids[1], &ids[0]], "{}", r.body);
    // Pause one; state filters.
    let r = s
        .a("POST", &format!("/sandboxes/{}/pause", ids[0]), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let paused = s.a("GET", "/v2/sandboxes?state=paused", None).await.body;
    assert_eq!(paused.as_array().unwrap().len(), 1);
    assert_eq!(paused[0]["sandboxID"], ids[0].as_str());
    assert_eq!(paused[0]["state"], "paused");
    let running = s.a("GET", "/v2/sandboxes?state=running", None).await.body;
    assert_eq!(running.as_array().unwrap().len(), 2);
    let both = s
        .a("GET", "/v2/sandboxes?state=running,paused", None)
        .await
        .body;
    assert_eq!(both.as_array().unwrap().len(), 3);
    // Pages of one, oldest first, until the token ends.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..5 {
        let q = match &next {
            Some(t) => format!("/v2/sandboxes?limit=1&order=asc&nextToken={t}"),
            None => "/v2/sandboxes?limit=1&order=asc".into(),
        };
        let r = s.a("GET", &q, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body.as_array().unwrap().len(), 1);
        seen.push(r.body[0]["sandboxID"].as_str().unwrap().to_string());
        next = r
            .headers
            .get("x-next-token")
            .map(|v| v.to_str().unwrap().to_string());
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids);
    // Bad filters: 400 in E2B's shape.
    for q in [
        "state=pausing",
        "metadata=novalue",
        "limit=0",
        "limit=101",
        "nextToken=%21%21",
        "order=up",
        "startedAfter=yesterday",
    ] {
        let r = s.a("GET", &format!("/v2/sandboxes?{q}"), None).await;
        e2b_error(&r, 400);
    }
}

#[tokio::test]
async fn other_teams_sandboxes_do_not_exist_for_them() {
    let s = start().await;
    let id = s.create(json!({"templateID": "minimal"})).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let b = |m: &'static str, p: String| {
        let s = &s;
        async move { s.call(&s.key_b, m, &p, Some(json!({"timeout": 60}))).await }
    };
    assert_eq!(b("GET", "/v2/sandboxes".into()).await.body, json!([]));
    let missing = "cl-0123456789abcdefghijklmno";
    for path in [format!("/sandboxes/{id}"), format!("/sandboxes/{missing}")] {
        let foreign = b("GET", path.clone()).await;
        let m = e2b_error(&foreign, 404);
        assert!(m.contains("not found"), "{m}");
    }
    for (m, p) in [
        ("DELETE", format!("/sandboxes/{id}")),
        ("POST", format!("/sandboxes/{id}/timeout")),
        ("POST", format!("/sandboxes/{id}/pause")),
        ("POST", format!("/v2/sandboxes/{id}/connect")),
        ("GET", format!("/sandboxes/{id}/metrics")),
    ] {
        e2b_error(&b(m, p.clone()).await, 404);
    }
    // Still running, untouched.
    let r = s.a("GET", &format!("/sandboxes/{id}"), None).await;
    assert_eq!(r.body["state"], "running");
}

#[tokio::test]
async fn pause_connect_timeout_kill_and_the_deadline() {
    let s = start().await;
    let c = s
        .create(json!({"templateID": "minimal", "autoPause": true, "timeout": 60}))
        .await;
    let id = c["sandboxID"].as_str().unwrap().to_string();
    // Connect to a running sandbox: 200, the deadline only extended.
    let r = s
        .a(
            "POST",
            &format!("/v2/sandboxes/{id}/connect"),
            Some(json!({"timeout": 10})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["envdAccessToken"], c["envdAccessToken"]);
    assert_eq!(r.body["domain"], c["domain"]);
    let end = |d: &Value| {
        time::OffsetDateTime::parse(
            d["endAt"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp()
            - now_ms() / 1000
    };
    let d = s.a("GET", &format!("/sandboxes/{id}"), None).await.body;
    assert!(end(&d) > 50, "{d}");
    assert_eq!(d["lifecycle"]["onTimeout"], "pause");
    // set_timeout shortens.
    let r = s
        .a(
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let d = s.a("GET", &format!("/sandboxes/{id}"), None).await.body;
    assert!((3..=5).contains(&end(&d)), "{d}");
    e2b_error(
        &s.a("POST", &format!("/sandboxes/{id}/timeout"), Some(json!({})))
            .await,
        400,
    );
    // Pause; a second pause is 409 (the SDK's "already paused").
    assert_eq!(
        s.a("POST", &format!("/sandboxes/{id}/pause"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    e2b_error(
        &s.a("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})))
            .await,
        409,
    );
    assert_eq!(
        s.a("GET", &format!("/sandboxes/{id}"), None).await.body["state"],
        "paused"
    );
    // Connect resumes: 201, a new deadline.
    let r = s
        .a(
            "POST",
            &format!("/v2/sandboxes/{id}/connect"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let d = s.a("GET", &format!("/sandboxes/{id}"), None).await.body;
    assert_eq!(d["state"], "running");
    assert!((295..=300).contains(&end(&d)), "{d}");
    // The deadline with auto-pause: paused, not killed.
    s.state
        .db
        .set_e2b_lifetime(
            &id,
            E2bLifetime {
                end_at: now_ms() - 1,
                auto_pause: true,
            },
        )
        .await
        .unwrap();
    wrenn_server::e2b::deadline::enforce(&s.state).await;
    assert_eq!(
        s.a("GET", &format!("/sandboxes/{id}"), None).await.body["state"],
        "paused"
    );
    // Metrics: E2B's fields, every one.
    let other = s.create(json!({"templateID": "minimal"})).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let m = s
        .a("GET", &format!("/sandboxes/{other}/metrics"), None)
        .await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.body);
    let p = &m.body[0];
    for f in [
        "timestamp",
        "timestampUnix",
        "cpuCount",
        "cpuUsedPct",
        "memUsed",
        "memTotal",
        "memCache",
        "diskUsed",
        "diskTotal",
    ] {
        assert!(!p[f].is_null(), "{f}: {p}");
    }
    assert_eq!(p["cpuUsedPct"], 12.5);
    // The deadline without auto-pause kills; then get is 404 and kill is 404 (the SDK's False).
    s.state
        .db
        .set_e2b_lifetime(
            &other,
            E2bLifetime {
                end_at: now_ms() - 1,
                auto_pause: false,
            },
        )
        .await
        .unwrap();
    wrenn_server::e2b::deadline::enforce(&s.state).await;
    e2b_error(&s.a("GET", &format!("/sandboxes/{other}"), None).await, 404);
    e2b_error(
        &s.a("DELETE", &format!("/sandboxes/{other}"), None).await,
        404,
    );
    assert!(!s.agent.capsules().contains_key(&other));
    // Kill works on a paused sandbox.
    assert_eq!(
        s.a("DELETE", &format!("/sandboxes/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.a("GET", "/v2/sandboxes", None).await.body, json!([]));
}
