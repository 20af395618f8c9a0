//! Where creates land.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::json;

use super::*;

#[tokio::test]
async fn creates_spread_over_the_hosts_within_capacity_and_a_full_cluster_says_so() {
    let c = Cluster::start().await;
    let hosts = [
        c.host(None, &[], small_specs()).await,
        c.host(None, &[], small_specs()).await,
        c.host(None, &[], small_specs()).await,
    ];
    let mut per_host: HashMap<String, usize> = HashMap::new();
    for _ in 0..12 {
        let id = c.create(&c.key_a, json!({})).await.expect("room for 12");
        *per_host.entry(c.host_of(&id).await).or_default() += 1;
    }
    for h in &hosts {
        assert_eq!(per_host.get(&h.id), Some(&4), "4 on each: {per_host:?}");
        assert_eq!(h.fake.capsules().len(), 4, "and on the host itself");
    }
    // The 13th fits nowhere: a clear answer at once.
    let (status, body) = c.create(&c.key_a, json!({})).await.unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "host_unavailable");
    assert!(
        message(&body).contains("no online host has 512 MB of memory free")
            && message(&body).contains("largest free"),
        "{body}"
    );
    // Larger than any host could ever hold: the request's fault.
    let (status, body) = c
        .create(&c.key_a, json!({ "memory_mb": 65536 }))
        .await
        .unwrap_err();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("can never fit"), "{body}");
    // Ending one makes room again, on its host.
    let victim = hosts[1].fake.capsules().into_keys().next().unwrap();
    let (status, _) = c
        .call(&c.key_a, "DELETE", &format!("/v1/capsules/{victim}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let id = c.create(&c.key_a, json!({})).await.expect("room again");
    assert_eq!(c.host_of(&id).await, hosts[1].id);
}

#[tokio::test]
async fn paused_capsules_count_a_quarter_of_their_memory() {
    let c = Cluster::start().await;
    let host = c.host(None, &[], small_specs()).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(c.create(&c.key_a, json!({})).await.expect("room for 4"));
    }
    assert!(c.create(&c.key_a, json!({})).await.is_err(), "full");
    // Four paused take one capsule's memory: three more fit.
    for id in &ids {
        let (status, _) = c
            .call(&c.key_a, "POST", &format!("/v1/capsules/{id}/pause"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    for _ in 0..3 {
        c.create(&c.key_a, json!({}))
            .await
            .expect("room while paused");
    }
    assert!(c.create(&c.key_a, json!({})).await.is_err(), "full again");
    assert_eq!(host.fake.capsules().len(), 7);
}

#[tokio::test]
async fn a_destroy_makes_room_before_the_hosts_next_heartbeat() {
    let c = Cluster::start().await;
    let host = c.host(None, &[], small_specs()).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(c.create(&c.key_a, json!({})).await.expect("room for 4"));
    }
    // The host's heartbeat now counts the four running capsules too.
    let running = HostLoad {
        running: 4,
        vcpus_reserved: 4,
        memory_mb_reserved: 4 * 512,
        ..HostLoad::default()
    };
    let specs = small_specs();
    let beat = c.state.db.record_heartbeat(&host.id, &specs, &running);
    assert_eq!(beat.await.unwrap(), Some(false));
    assert!(c.create(&c.key_a, json!({})).await.is_err(), "full");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, _) = c
        .call(
            &c.key_a,
            "DELETE",
            &format!("/v1/capsules/{}", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // No heartbeat since: the destroyed capsule's share of it no longer counts.
    let id = c.create(&c.key_a, json!({})).await.expect("room at once");
    assert_eq!(c.host_of(&id).await, host.id);
    assert!(c.create(&c.key_a, json!({})).await.is_err(), "full again");
    // What the heartbeat holds that the database never had still counts.
    let more = HostLoad {
        running: 5,
        vcpus_reserved: 5,
        memory_mb_reserved: 5 * 512,
        ..HostLoad::default()
    };
    let beat = c.state.db.record_heartbeat(&host.id, &specs, &more);
    assert_eq!(beat.await.unwrap(), Some(false));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, _) = c
        .call(&c.key_a, "DELETE", &format!("/v1/capsules/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        c.create(&c.key_a, json!({})).await.is_err(),
        "the host's own fifth capsule still holds the room"
    );
}

#[tokio::test]
async fn host_tags_choose_only_hosts_with_every_tag() {
    let c = Cluster::start().await;
    let plain = c.host(None, &[], big_specs()).await;
    let gpu = c.host(None, &["gpu", "zone-a"], big_specs()).await;
    let other = c.host(None, &["zone-a"], big_specs()).await;
    for _ in 0..5 {
        let id = c
            .create(&c.key_a, json!({ "host_tags": ["gpu", "zone-a"] }))
            .await
            .unwrap();
        assert_eq!(c.host_of(&id).await, gpu.id);
    }
    for _ in 0..4 {
        let id = c
            .create(&c.key_a, json!({ "host_tags": ["zone-a"] }))
            .await
            .unwrap();
        assert_ne!(c.host_of(&id).await, plain.id, "zone-a hosts only");
    }
    assert_eq!(plain.fake.capsules().len(), 0);
    assert_eq!(gpu.fake.capsules().len() + other.fake.capsules().len(), 9);
    let (status, body) = c
        .create(&c.key_a, json!({ "host_tags": ["tpu"] }))
        .await
        .unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message(&body).contains("tags [tpu]"), "{body}");
    // A bad tag is the caller's error.
    let (status, body) = c
        .create(&c.key_a, json!({ "host_tags": ["no spaces"] }))
        .await
        .unwrap_err();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_byoc_team_lands_only_on_its_own_host_and_nobody_else_does() {
    let c = Cluster::start().await;
    let regular = c.host(None, &[], big_specs()).await;
    let own = c.host(Some(&c.team_b), &[], big_specs()).await;
    c.exec("UPDATE teams SET is_byoc = 1 WHERE id = $1", &[&c.team_b])
        .await;
    for _ in 0..6 {
        let id = c.create(&c.key_b, json!({})).await.unwrap();
        assert_eq!(c.host_of(&id).await, own.id, "team B only on its host");
    }
    for _ in 0..6 {
        let id = c.create(&c.key_a, json!({})).await.unwrap();
        assert_eq!(c.host_of(&id).await, regular.id, "nobody else there");
    }
    assert_eq!(own.fake.capsules().len(), 6);
    assert_eq!(regular.fake.capsules().len(), 6);
    // Its host silent: no fallback onto the platform's hosts.
    c.exec(
        "UPDATE hosts SET status = 'unreachable' WHERE id = $1",
        &[&own.id],
    )
    .await;
    let (status, body) = c.create(&c.key_b, json!({})).await.unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message(&body).contains("no online BYOC host"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_creates_at_once_spread_and_never_overfill() {
    twenty_at_once(Cluster::start().await).await;
}

/// On PostgreSQL the host's row lock, not a single writer, keeps concurrent placements apart.
#[tokio::test(flavor = "multi_thread")]
async fn twenty_creates_at_once_on_postgres() {
    let (url, admin) = fresh_pg().await;
    let dir = tempfile::tempdir().unwrap();
    let at = url.clone();
    let outcome = tokio::spawn(async move {
        twenty_at_once(Cluster::start_on(&at, dir).await).await;
    })
    .await;
    drop_pg(&url, &admin).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn twenty_at_once(c: Cluster) {
    // Room for 8 each (2 hosts × 8 + 4 = 20): every create fits, but only if they see
    // each other's reservations.
    let roomy = HostSpecs {
        memory_mb: 5120,
        disk_mb: 40_000,
        ..small_specs()
    };
    let hosts = [
        c.host(None, &[], roomy.clone()).await,
        c.host(None, &[], roomy).await,
        c.host(None, &[], small_specs()).await,
    ];
    let c = std::sync::Arc::new(c);
    let creates = (0..20).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { c.create(&c.key_a, json!({})).await })
    });
    let mut made = 0;
    let mut refused = Vec::new();
    for r in futures_util::future::join_all(creates).await {
        match r.unwrap() {
            Ok(_) => made += 1,
            Err((status, body)) => refused.push(format!("{status} {body}")),
        }
    }
    let counts: Vec<usize> = hosts.iter().map(|h| h.fake.capsules().len()).collect();
    assert_eq!(made, counts.iter().sum::<usize>(), "{counts:?}");
    assert!(
        counts[2] <= 4,
        "the small host never overfilled: {counts:?}"
    );
    assert!(counts[0] <= 8 && counts[1] <= 8, "{counts:?}");
    assert_eq!(made, 20, "all fit, exactly: {counts:?} {refused:?}");
    assert!(
        counts.iter().filter(|&&n| n > 0).count() == 3,
        "not all on one host: {counts:?}"
    );
    // No placement is left holding room.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM host_reservations")
        .fetch_one(&c.raw)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn only_a_platform_admin_chooses_the_host() {
    let c = Cluster::start().await;
    let _a = c.host(None, &[], big_specs()).await;
    let b = c.host(None, &[], big_specs()).await;
    for _ in 0..3 {
        let id = c
            .create(&c.key_a, json!({ "host_id": b.id }))
            .await
            .unwrap();
        assert_eq!(c.host_of(&id).await, b.id);
    }
    let (status, body) = c
        .create(&c.key_b, json!({ "host_id": b.id }))
        .await
        .unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(b.fake.capsules().len(), 3);
    let (status, body) = c
        .create(&c.key_a, json!({ "host_id": "host-nope" }))
        .await
        .unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}
