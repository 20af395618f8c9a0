//! The lifecycle calls and their error codes; idle capsules timing out by their policy.

use tonic::Code;
use wrenn_proto::agent::v1::{
    CapsuleRef, CapsuleState, CreateCapsuleRequest, ExecRequest, HostInfoRequest,
    ListCapsulesRequest,
};

use super::TestAgent;

#[tokio::test]
async fn grpc_surface_and_error_codes() {
    let mut agent = TestAgent::start(2, 100..=199).await;
    agent.manager.spawn_sampler();
    let client = &mut agent.client;

    let info = client
        .host_info(HostInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(info.cpus >= 1 && info.memory_bytes > 0);
    assert!(info.accel == "tcg" || info.accel == "kvm");
    assert!(
        info.templates.contains(&"minimal".to_string()),
        "{:?}",
        info.templates
    );

    let c = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            env_vars: [("FOO".to_string(), "bar".to_string())].into(),
            metadata: [("owner".to_string(), "test".to_string())].into(),
            egress: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.state, CapsuleState::Running as i32);
    assert_eq!(c.metadata["owner"], "test");
    assert!(c.id.starts_with("cl-"));

    let out = client
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            cmd: "/bin/bash".into(),
            args: vec![
                "-c".into(),
                "echo $FOO $BAR $(pwd) $(id -un); echo err >&2; exit 3".into(),
            ],
            env: [("BAR".to_string(), "baz".to_string())].into(),
            cwd: "/tmp".into(),
            user: "root".into(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar baz /tmp root\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 3);

    let timed = client
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            cmd: "/bin/sleep".into(),
            args: vec!["30".into()],
            timeout_ms: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!timed.error.is_empty(), "a deadline kill is reported");

    let listed = client
        .list_capsules(ListCapsulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.capsules.len(), 1);

    // Metrics sampled in the background.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let m = client
        .get_metrics(wrenn_proto::agent::v1::GetMetricsRequest {
            capsule_id: c.id.clone(),
            range_secs: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(m.points.len() >= 2, "{} points", m.points.len());
    assert!(m
        .points
        .iter()
        .all(|p| p.mem_bytes > 16 << 20 && p.disk_bytes > 0));
    let bad = client
        .get_metrics(wrenn_proto::agent::v1::GetMetricsRequest {
            capsule_id: c.id.clone(),
            range_secs: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let r = |id: &str| CapsuleRef { id: id.to_string() };
    let p = client.pause_capsule(r(&c.id)).await.unwrap().into_inner();
    assert_eq!(p.state, CapsuleState::Paused as i32);
    let err = client.pause_capsule(r(&c.id)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = client
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            cmd: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let resumed = client.resume_capsule(r(&c.id)).await.unwrap().into_inner();
    assert_eq!(resumed.state, CapsuleState::Running as i32);

    // Bad requests get the right codes.
    let unknown = wrenn_types::Id::new(wrenn_types::IdKind::Capsule).to_string();
    assert_eq!(
        client.get_capsule(r(&unknown)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        client.get_capsule(r("../../etc")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .destroy_capsule(r(&unknown))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // The network of a capsule: unknown id, bad lists, and the record it answers.
    use wrenn_proto::agent::v1::{EgressPolicy, SetCapsuleNetworkRequest};
    let net = |id: &str, allow: &[&str]| SetCapsuleNetworkRequest {
        capsule_id: id.into(),
        egress: true,
        egress_policy: Some(EgressPolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: vec![],
        }),
    };
    assert_eq!(
        client
            .set_capsule_network(net(&unknown, &[]))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .set_capsule_network(net(&c.id, &["10.0.0.0/99"]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let changed = client
        .set_capsule_network(net(&c.id, &["Example.com"]))
        .await
        .unwrap()
        .into_inner();
    assert!(changed.egress);
    assert_eq!(changed.egress_policy.unwrap().allow, ["example.com"]);
    let bad_template = client
        .create_capsule(CreateCapsuleRequest {
            template: "../x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_template.code(), Code::InvalidArgument);
    let missing = client
        .create_capsule(CreateCapsuleRequest {
            template: "nothing-here".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let empty_cmd = client
        .exec(ExecRequest {
            capsule_id: c.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(empty_cmd.code(), Code::InvalidArgument);

    // Capacity: the limit is 2.
    let second = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let third = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted);

    for id in [&c.id, &second.id] {
        client.destroy_capsule(r(id)).await.unwrap();
    }
    assert!(client
        .list_capsules(ListCapsulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capsules
        .is_empty());
    let data = agent.stop().await;
    assert_eq!(
        std::fs::read_dir(data.path().join("capsules"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn idle_capsules_time_out_by_their_policy() {
    use wrenn_proto::agent::v1::TimeoutAction;
    let mut agent = TestAgent::start(3, 500..=599).await;
    agent.manager.spawn_reaper();
    let client = &mut agent.client;
    let make = |secs, action: TimeoutAction| CreateCapsuleRequest {
        template: "minimal".into(),
        timeout_secs: secs,
        on_timeout: action as i32,
        ..Default::default()
    };
    let pause = client
        .create_capsule(make(2, TimeoutAction::Pause))
        .await
        .unwrap()
        .into_inner();
    let destroy = client
        .create_capsule(make(2, TimeoutAction::Destroy))
        .await
        .unwrap()
        .into_inner();
    let pinged = client
        .create_capsule(make(2, TimeoutAction::Destroy))
        .await
        .unwrap()
        .into_inner();
    let r = |id: &str| CapsuleRef { id: id.to_string() };
    for _ in 0..10 {
        client.ping(r(&pinged.id)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let p = client.get_capsule(r(&pause.id)).await.unwrap().into_inner();
    assert_eq!(p.state, CapsuleState::Paused as i32);
    let d = client.get_capsule(r(&destroy.id)).await.unwrap_err();
    assert_eq!(d.code(), Code::NotFound);
    let k = client
        .get_capsule(r(&pinged.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.state, CapsuleState::Running as i32, "pings keep it alive");
    assert_eq!(
        client.ping(r(&pause.id)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    for id in [&pause.id, &pinged.id] {
        client.destroy_capsule(r(id)).await.unwrap();
    }
    agent.stop().await;
}
