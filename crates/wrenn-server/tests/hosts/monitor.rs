//! The host monitor: a silent host becomes `unreachable` and its capsules `missing`; its next
//! heartbeat brings it back; both on the event stream and in the audit log.

use reqwest::{Method, StatusCode};
use serde_json::json;
use wrenn_server::{db::now_ms, hosts};

use crate::{next_event, on_both, As, Server};

on_both!(silent_host, silent_host, true);

async fn silent_host(s: &Server) {
    let (id, creds) = s.registered_host("127.0.0.2:7003").await;
    let (quiet, _) = s.registered_host("127.0.0.3:7003").await;
    let team = s.platform_team().await;
    for (c, status) in [
        ("cl-run", "running"),
        ("cl-start", "starting"),
        ("cl-pend", "pending"),
        ("cl-pause", "paused"),
        ("cl-stop", "stopped"),
    ] {
        s.capsule_on(c, &team, &id, status).await;
    }
    let mut events = s.events().await;
    next_event(&mut events, "connected").await;

    // Within the window: nothing changes.
    assert!(hosts::sweep(&s.state, now_ms()).await.unwrap().is_empty());
    let timeout = s.state.hosts.settings.timeout.as_millis() as i64;
    // `quiet` keeps answering; `id` goes silent.
    let later = now_ms() + timeout + 1_000;
    sqlx::query("UPDATE hosts SET last_heartbeat_at = $1 WHERE id = $2")
        .bind(later)
        .bind(&quiet)
        .execute(&s.raw)
        .await
        .unwrap();
    let down = hosts::sweep(&s.state, later).await.unwrap();
    assert_eq!(down, std::slice::from_ref(&id));
    // A second pass changes nothing more.
    assert!(hosts::sweep(&s.state, later).await.unwrap().is_empty());
    let (_, host) = s
        .call(Method::GET, &format!("/v1/hosts/{id}"), s.admin(), None)
        .await;
    assert_eq!(host["status"], "unreachable");
    let (_, other) = s
        .call(Method::GET, &format!("/v1/hosts/{quiet}"), s.admin(), None)
        .await;
    assert_eq!(other["status"], "online");
    for (c, status) in [
        ("cl-run", "missing"),
        ("cl-start", "missing"),
        ("cl-pend", "missing"),
        ("cl-pause", "paused"),
        ("cl-stop", "stopped"),
    ] {
        assert_eq!(s.capsule_status(c).await, status, "{c}");
    }
    let e = next_event(&mut events, "host.down").await;
    assert_eq!(e["resource"], json!({"id": id, "type": "host"}));
    assert_eq!(e["actor"]["type"], "system");
    assert_eq!(e["metadata"]["missing_capsules"], "3");

    // It answers again: online, `host.up`.
    let (st, _) = s
        .heartbeat(&id, As::Host(creds["host_token"].as_str().unwrap()), 1)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, host) = s
        .call(Method::GET, &format!("/v1/hosts/{id}"), s.admin(), None)
        .await;
    assert_eq!(host["status"], "online");
    let e = next_event(&mut events, "host.up").await;
    assert_eq!(e["resource"]["id"], id.as_str());
    let audit = s.host_audit(&id).await;
    let down_at = audit
        .iter()
        .position(|a| a == "host.down")
        .expect("host.down audited");
    let up_at = audit
        .iter()
        .position(|a| a == "host.up")
        .expect("host.up audited");
    assert!(down_at < up_at, "{audit:?}");
    // A second heartbeat is no second `host.up`.
    let (st, _) = s
        .heartbeat(&id, As::Host(creds["host_token"].as_str().unwrap()), 1)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let ups = s
        .host_audit(&id)
        .await
        .iter()
        .filter(|a| *a == "host.up")
        .count();
    assert_eq!(ups, 1);
}
