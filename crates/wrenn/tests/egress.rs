//! Egress policy through a real `wrenn up`: allow/deny lists at create (`egress_allow`) and
//! `PATCH /v1/capsules/{id}/network` while running, enforced for a capsule reaching stand-in
//! hosts through a stand-in DNS server (namespaces this test makes, `--dns-upstream`), kept
//! across pause/resume, audited; bad entries are `400 invalid_request`. Needs root, QEMU and
//! the `minimal` image.

#[path = "../../wrenn-agent/tests/common/mod.rs"]
mod agent_common;
mod common;

use std::{collections::HashMap, net::Ipv4Addr};

use agent_common::StandIn;
use common::Up;
use reqwest::Method as M;
use serde_json::{json, Value};

impl Up {
    fn start(slots: &str, dns: &str) -> Up {
        Up::in_temp_dir(slots, "minimal", |cmd| {
            cmd.args(["--dns-upstream", dns])
                .env_remove("WRENN_EGRESS_ALLOW_PRIVATE");
        })
    }

    async fn call(&self, m: M, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = reqwest::Client::new()
            .request(m, format!("http://{}{path}", self.addr))
            .header("x-api-key", &self.key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// HTTP status the capsule gets from `host:8080`, "fail", or "unresolved".
    async fn fetch(&self, id: &str, host: &str) -> String {
        let line = format!(
            "curl -s -m 3 -o /dev/null -w '%{{http_code}}' http://{host}:8080/; echo \" $?\""
        );
        let (status, out) = self
            .call(
                M::POST,
                &format!("/v1/capsules/{id}/exec"),
                Some(json!({ "cmd": "/bin/sh", "args": ["-c", line] })),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        let text = out["stdout"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string();
        let (code, exit) = text.rsplit_once(' ').unwrap_or(("", &text));
        match (code, exit) {
            (_, "6") => "unresolved".into(),
            ("000" | "", _) => "fail".into(),
            (code, _) => code.into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_policy_over_the_api() {
    let dns_ns = StandIn::net("eg-udns", "198.51.100.73", "198.51.100.74", 30);
    let names: HashMap<String, Ipv4Addr> = [
        ("allowed.test", "198.51.100.78"),
        ("other.test", "198.51.100.82"),
    ]
    .into_iter()
    .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
    .collect();
    agent_common::dns_server(&dns_ns.ns, Ipv4Addr::new(198, 51, 100, 74), names).await;
    let _a = StandIn::start("eg-ua", "198.51.100.77", "198.51.100.78", 30, 8080);
    let _b = StandIn::start("eg-ub", "198.51.100.81", "198.51.100.82", 30, 8080);
    let up = Up::start("3220-3239", "198.51.100.74");

    // Bad entries: a clear 400 naming the entry, and nothing made.
    for bad in [json!(["10.0.0.0/33"]), json!(["not a domain"]), json!([""])] {
        let (status, body) = up
            .call(
                M::POST,
                "/v1/capsules",
                Some(json!({ "template": "minimal", "egress_allow": bad })),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("allow: "),
            "{body}"
        );
    }
    let (_, list) = up.call(M::GET, "/v1/capsules", None).await;
    assert_eq!(list, json!([]));

    let (status, made) = up
        .call(
            M::POST,
            "/v1/capsules",
            Some(json!({ "template": "minimal", "egress_allow": ["Allowed.Test"] })),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let net = format!("/v1/capsules/{id}/network");
    let (status, got) = up.call(M::GET, &net, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!({ "egress": true, "allow": ["allowed.test"], "deny": [] })
    );
    assert_eq!(up.fetch(&id, "allowed.test").await, "200");
    assert_eq!(up.fetch(&id, "other.test").await, "fail");
    assert_eq!(up.fetch(&id, "198.51.100.82").await, "fail", "direct IP");

    // Bad changes: 400, and nothing changes.
    for bad in [
        json!({ "allow": ["300.1.1.1"] }),
        json!({ "deny": ["-x.test"] }),
        json!({ "surprise": true }),
        json!({ "allow": "other.test" }),
    ] {
        let (status, body) = up.call(M::PATCH, &net, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}");
    }
    assert_eq!(up.call(M::GET, &net, None).await.1, got);

    // Changed while running.
    let (status, changed) = up
        .call(M::PATCH, &net, Some(json!({ "allow": ["other.test"] })))
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        changed,
        json!({ "egress": true, "allow": ["other.test"], "deny": [] })
    );
    assert_eq!(up.fetch(&id, "other.test").await, "200");
    assert_eq!(up.fetch(&id, "allowed.test").await, "fail");

    // Kept across pause/resume.
    assert_eq!(
        up.call(M::POST, &format!("/v1/capsules/{id}/pause"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        up.call(M::POST, &format!("/v1/capsules/{id}/resume"), None)
            .await
            .0,
        200
    );
    assert_eq!(up.call(M::GET, &net, None).await.1, changed);
    assert_eq!(up.fetch(&id, "other.test").await, "200");
    assert_eq!(up.fetch(&id, "allowed.test").await, "fail");

    // Off, then on again: the lists are kept; a deny beats the allow.
    let (_, off) = up
        .call(M::PATCH, &net, Some(json!({ "egress": false })))
        .await;
    assert_eq!(off["egress"], false);
    assert_eq!(up.fetch(&id, "other.test").await, "unresolved");
    let (_, on) = up
        .call(
            M::PATCH,
            &net,
            Some(json!({ "egress": true, "deny": ["198.51.100.80/28"] })),
        )
        .await;
    assert_eq!(
        on,
        json!({ "egress": true, "allow": ["other.test"], "deny": ["198.51.100.80/28"] })
    );
    assert_eq!(up.fetch(&id, "other.test").await, "fail");

    // Every change is in the audit log.
    let (_, audit) = up.call(M::GET, "/v1/audit", None).await;
    let changes = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "capsule.network")
        .count();
    assert_eq!(changes, 3, "{audit}");

    assert_eq!(
        up.call(M::DELETE, &format!("/v1/capsules/{id}"), None)
            .await
            .0,
        204
    );
    let (status, _) = up
        .call(M::PATCH, &net, Some(json!({ "egress": true })))
        .await;
    assert_eq!(status, 404);
}
