//! Every call reaches the capsule's own host; the per-host reconciler; silent hosts.

use reqwest::StatusCode;
use serde_json::json;
use wrenn_proto::agent::v1::CapsuleState;
use wrenn_types::CapsuleStatus;

use super::*;

#[tokio::test]
async fn every_capsule_operation_reaches_the_capsules_own_host() {
    let c = Cluster::start().await;
    let hosts = [
        c.host(None, &[], big_specs()).await,
        c.host(None, &[], big_specs()).await,
        c.host(None, &[], big_specs()).await,
    ];
    // One capsule forced onto each host.
    let mut ids = Vec::new();
    for h in &hosts {
        let id = c
            .create(&c.key_a, json!({ "host_id": h.id }))
            .await
            .unwrap();
        ids.push(id);
    }
    for (id, h) in ids.iter().zip(&hosts) {
        for (method, path) in [
            ("POST", format!("/v1/capsules/{id}/ping")),
            ("POST", format!("/v1/capsules/{id}/pause")),
            ("POST", format!("/v1/capsules/{id}/resume")),
            ("DELETE", format!("/v1/capsules/{id}")),
        ] {
            let (status, body) = c.call(&c.key_a, method, &path, None).await;
            assert!(status.is_success(), "{method} {path}: {status} {body}");
        }
        for call in ["ping", "pause_capsule", "resume_capsule", "destroy_capsule"] {
            assert_eq!(h.fake.calls(call), vec![id.clone()], "{call} on its host");
        }
    }
    // And never on another's: each fake saw only its own capsule.
    for h in &hosts {
        assert_eq!(h.fake.calls("create_capsule").len(), 1);
        assert!(h.fake.capsules().is_empty());
    }
}

#[tokio::test]
async fn the_reconciler_restores_missing_capsules_from_their_hosts_list() {
    let c = Cluster::start().await;
    let a = c.host(None, &[], big_specs()).await;
    let b = c.host(None, &[], big_specs()).await;
    let on_a = c
        .create(&c.key_a, json!({ "host_id": a.id }))
        .await
        .unwrap();
    let paused_a = c
        .create(&c.key_a, json!({ "host_id": a.id }))
        .await
        .unwrap();
    let gone_a = c
        .create(&c.key_a, json!({ "host_id": a.id }))
        .await
        .unwrap();
    let on_b = c
        .create(&c.key_a, json!({ "host_id": b.id }))
        .await
        .unwrap();
    // Host A was silent: its capsules are missing (the host monitor's doing); meanwhile one
    // was paused there and one ended.
    for id in [&on_a, &paused_a, &gone_a] {
        c.state
            .db
            .set_capsule_status(id, CapsuleStatus::Missing, None, false)
            .await
            .unwrap();
    }
    a.fake.set_state(&paused_a, CapsuleState::Paused, "");
    a.fake.forget(&gone_a);
    // B's capsule changed behind the server's back too.
    b.fake.set_state(&on_b, CapsuleState::Paused, "");
    wrenn_server::reconcile(&c.state).await.unwrap();
    let status = |id: String| {
        let db = c.state.db.clone();
        async move { db.capsule_any(&id).await.unwrap().status }
    };
    assert_eq!(status(on_a.clone()).await, CapsuleStatus::Running);
    assert_eq!(status(paused_a.clone()).await, CapsuleStatus::Paused);
    assert_eq!(status(gone_a.clone()).await, CapsuleStatus::Stopped);
    assert_eq!(status(on_b.clone()).await, CapsuleStatus::Paused);
    assert_eq!(a.fake.calls("list_capsules").len(), 1);
    assert_eq!(b.fake.calls("list_capsules").len(), 1);
}

#[tokio::test]
async fn a_silent_host_is_skipped_by_the_reconciler_and_its_capsules_answer_503() {
    let c = Cluster::start().await;
    let a = c.host(None, &[], big_specs()).await;
    let b = c.host(None, &[], big_specs()).await;
    let on_a = c
        .create(&c.key_a, json!({ "host_id": a.id }))
        .await
        .unwrap();
    let on_b = c
        .create(&c.key_a, json!({ "host_id": b.id }))
        .await
        .unwrap();
    // A marked unreachable (its capsules missing): the reconciler leaves it alone, B is still
    // reconciled.
    c.exec(
        "UPDATE hosts SET status = 'unreachable' WHERE id = $1",
        &[&a.id],
    )
    .await;
    c.state
        .db
        .set_capsule_status(&on_a, CapsuleStatus::Missing, None, false)
        .await
        .unwrap();
    b.fake.set_state(&on_b, CapsuleState::Paused, "");
    wrenn_server::reconcile(&c.state).await.unwrap();
    assert!(a.fake.calls("list_capsules").is_empty());
    assert_eq!(
        c.state.db.capsule_any(&on_a).await.unwrap().status,
        CapsuleStatus::Missing
    );
    assert_eq!(
        c.state.db.capsule_any(&on_b).await.unwrap().status,
        CapsuleStatus::Paused
    );
    // Calls on A's capsule answer at once, saying why; nothing reaches A.
    for (method, path) in [
        ("POST", format!("/v1/capsules/{on_a}/pause")),
        ("DELETE", format!("/v1/capsules/{on_a}")),
    ] {
        let (status, body) = c.call(&c.key_a, method, &path, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(code(&body), "host_unavailable");
        assert!(message(&body).contains("unreachable"), "{body}");
    }
    assert!(a.fake.calls("pause_capsule").is_empty());
    assert!(a.fake.calls("destroy_capsule").is_empty());
}

#[tokio::test]
async fn a_host_whose_agent_is_gone_answers_503_not_a_hang() {
    let c = Cluster::start().await;
    let a = c.host(None, &[], big_specs()).await;
    let _b = c.host(None, &[], big_specs()).await;
    let id = c
        .create(&c.key_a, json!({ "host_id": a.id }))
        .await
        .unwrap();
    // Its agent moves away (the row still says online: no heartbeat missed yet).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    c.exec(
        "UPDATE hosts SET address = $1 WHERE id = $2",
        &[&address, &a.id],
    )
    .await;
    let (status, body) = c
        .call(&c.key_a, "POST", &format!("/v1/capsules/{id}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "host_unavailable");
    // The reconciler skips it instead of failing the pass.
    wrenn_server::reconcile(&c.state).await.unwrap();
    assert_eq!(
        c.state.db.capsule_any(&id).await.unwrap().status,
        CapsuleStatus::Running
    );
}
