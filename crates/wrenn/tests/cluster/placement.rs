//! Placement with real agents and VMs: creates spread over the hosts within their capacity and
//! a full cluster answers 503 at once; a tagged host gets the tagged creates; a BYOC team's
//! capsules land only on its own host, and nobody else's land there.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use wrenn_client::hosts::HostStatus;

use crate::harness::Cluster;

/// The smallest shape of `minimal` (its own snapshot's: nothing is built for it).
fn small() -> Value {
    json!({ "template": "minimal", "vcpus": 1, "memory_mb": 256 })
}

/// The control plane overcommits CPU this many times on a host's cores.
const CPU_OVERCOMMIT: u64 = 4;

/// Creates until the cluster is full: each lands on some host, no host gets more vCPUs than
/// its cores allow (×4) nor more capsules than its slots, several hosts are used, and the
/// create that finds no room answers 503 `host_unavailable` saying so, at once.
#[tokio::test(flavor = "multi_thread")]
async fn creates_spread_within_capacity_and_a_full_cluster_answers_503() {
    let c = Cluster::start(3);
    let hosts = c.admin.list_hosts().await.unwrap();
    let online: Vec<_> = hosts
        .iter()
        .filter(|h| h.status == HostStatus::Online)
        .collect();
    assert_eq!(online.len(), 4, "the built-in host and three agents");
    // What each host may take: its cores ×4 vCPUs, and no more capsules than it has slots.
    let room: BTreeMap<String, u64> = online
        .iter()
        .map(|h| {
            let (first, last) = h.specs.slots.split_once('-').unwrap();
            let slots = last.parse::<u64>().unwrap() - first.parse::<u64>().unwrap() + 1;
            (
                h.id.clone(),
                (u64::from(h.specs.cpu_cores) * CPU_OVERCOMMIT).min(slots),
            )
        })
        .collect();
    let capacity: u64 = room.values().sum();
    eprintln!("capacity (one-vCPU capsules): {room:?}");

    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    let mut times = Vec::new();
    let refused = loop {
        let (status, body, took) = c.create_as(&c.up.key, &small()).await;
        if status != 201 {
            break (status, body, took);
        }
        times.push(took.as_secs_f64());
        let host = c.capsule_host(body["id"].as_str().unwrap()).await;
        *per_host.entry(host).or_default() += 1;
        assert!(
            (times.len() as u64) <= capacity,
            "{} capsules placed on a capacity of {capacity}: {per_host:?}",
            times.len()
        );
    };
    let (status, body, took) = refused;
    // The built-in host (6 slots for 8 vCPUs of room) fills by its slots, the agents (8
    // slots) by their vCPUs.
    eprintln!("placed: {per_host:?}; then {status} {body} in {took:?}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "host_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("no online host has") && message.contains("free"),
        "{message}"
    );
    assert!(
        took < Duration::from_secs(5),
        "a full cluster answers at once, not after {took:?}"
    );
    for (host, n) in &per_host {
        assert!(n <= &room[host], "host {host} got {n}: {per_host:?}");
    }
    assert!(
        per_host.len() >= 3,
        "spread over several hosts: {per_host:?}"
    );
    // Full means full: every host's room was used.
    let placed = times.len() as u64;
    assert_eq!(placed, capacity, "{per_host:?}");
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let max = times.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "FIGURE cluster.fill capsules={placed} capacity={capacity} hosts_used={} \
         create_mean_secs={mean:.2} create_max_secs={max:.2} full_answer_ms={}",
        per_host.len(),
        took.as_millis()
    );
}

/// A host tagged through the API gets every create asking for the tag; a tag no host has is a
/// clear 503.
#[tokio::test(flavor = "multi_thread")]
async fn a_tagged_host_gets_exactly_the_tagged_creates() {
    let c = Cluster::start(2);
    let tagged = c.agents[1].host_id.clone();
    let (status, body) = c
        .post(
            &format!("/v1/hosts/{tagged}/tags"),
            &[("x-api-key", &c.up.key)],
            &json!({ "tag": "gpu" }),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut body = small();
        body["host_tags"] = json!(["gpu"]);
        let (status, made, _) = c.create_as(&c.up.key, &body).await;
        assert_eq!(status, 201, "{made}");
        let id = made["id"].as_str().unwrap().to_string();
        assert_eq!(c.capsule_host(&id).await, tagged, "a gpu create elsewhere");
        ids.push(id);
    }
    // Both tags at once: only the host with both.
    let mut body = small();
    body["host_tags"] = json!(["gpu", "h0"]);
    let (status, made, took) = c.create_as(&c.up.key, &body).await;
    assert_eq!(status, 503, "{made}");
    assert_eq!(made["error"]["code"], "host_unavailable");
    let message = made["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("gpu") && message.contains("h0"),
        "{message}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    for id in ids {
        c.admin.destroy_capsule(&id).await.unwrap();
    }
}

/// A user who signs up, and an API key of their team.
async fn new_team(c: &Cluster, email: &str) -> (String, String) {
    let http = reqwest::Client::new();
    let password = "correct horse battery";
    let r = http
        .post(format!("{}/v1/auth/signup", c.base_url()))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "signup: {}", r.status());
    let login: Value = http
        .post(format!("{}/v1/auth/login", c.base_url()))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = login["token"].as_str().expect("a token").to_string();
    let teams: Value = http
        .get(format!("{}/v1/teams", c.base_url()))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team = teams[0]["id"].as_str().expect("a team").to_string();
    let made: Value = http
        .post(format!("{}/v1/api-keys", c.base_url()))
        .bearer_auth(&jwt)
        .json(&json!({ "name": "k" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (team, made["key"].as_str().expect("a key").to_string())
}

/// A BYOC team makes its own host and registers an agent on it: its capsules land there only
/// (none on the platform's hosts, even with room), and the platform's capsules never land on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_byoc_team_lands_only_on_its_own_host() {
    let mut c = Cluster::start_with(1, &["--signup", "open"]);
    let (team, key) = new_team(&c, "byoc@example.com").await;
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/v1/admin/teams/{team}/byoc", c.base_url()))
        .header("x-api-key", &c.up.key)
        .json(&json!({ "enabled": true }))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "byoc on: {}", put.status());
    // Before its host exists, nothing: never the platform's hosts.
    let (status, body, took) = c.create_as(&key, &small()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "host_unavailable", "{body}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    let (status, made) = c
        .post(
            "/v1/hosts",
            &[("x-api-key", &key)],
            &json!({ "type": "byoc" }),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let own = made["host"]["id"].as_str().unwrap().to_string();
    let token = made["registration_token"].as_str().unwrap().to_string();
    let agent = c.register_as(1, &own, &token).await;
    c.agents.push(agent);
    let started = Instant::now();
    let mut theirs = Vec::new();
    for _ in 0..3 {
        let (status, made, _) = c.create_as(&key, &small()).await;
        assert_eq!(status, 201, "{made}");
        let id = made["id"].as_str().unwrap().to_string();
        assert_eq!(c.capsule_host(&id).await, own, "a BYOC capsule elsewhere");
        theirs.push(id);
    }
    // The platform's creates go to its own hosts, never the team's, though it has room.
    let mut ours = Vec::new();
    for _ in 0..4 {
        let (status, made, _) = c.create_as(&c.up.key, &small()).await;
        assert_eq!(status, 201, "{made}");
        let id = made["id"].as_str().unwrap().to_string();
        assert_ne!(
            c.capsule_host(&id).await,
            own,
            "a platform capsule on a BYOC host"
        );
        ours.push(id);
    }
    // Naming the team's host does not get the platform in either.
    let (status, body, _) = c
        .create_as(&c.up.key, &{
            let mut b = small();
            b["host_id"] = json!(own);
            b
        })
        .await;
    assert_eq!(status, 503, "{body}");
    // The team's capsules answer on its host.
    let out: Value = {
        let (status, out) = c
            .post(
                &format!("/v1/capsules/{}/exec", theirs[0]),
                &[("x-api-key", &key)],
                &json!({ "cmd": "/bin/sh", "args": ["-c", "echo mine"] }),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        out
    };
    assert_eq!(out["stdout"].as_str().unwrap().trim(), "mine", "{out}");
    eprintln!(
        "FIGURE cluster.byoc capsules={} secs={:.1}",
        theirs.len() + ours.len(),
        started.elapsed().as_secs_f64()
    );
    for id in ours {
        c.admin.destroy_capsule(&id).await.unwrap();
    }
}
