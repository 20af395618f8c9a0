//! Shapes, disks and cgroup limits; snapshot templates and directory watches.

use tonic::Code;
use wrenn_proto::agent::v1::{CapsuleState, CreateCapsuleRequest};

use super::{bash, images_dir, r, TestAgent};

#[tokio::test]
async fn shapes_disks_and_cgroup_limits() {
    let mut agent = TestAgent::start(2, 1000..=1049).await;
    let client = &mut agent.client;
    let create = |vcpus, memory_mib, disk_mib| CreateCapsuleRequest {
        template: "minimal".into(),
        vcpus,
        memory_mib,
        disk_mib,
        ..Default::default()
    };
    // Shapes and sizes out of range, and a disk smaller than the template's.
    for bad in [
        create(64, 0, 0),
        create(0, 100, 0),
        create(0, 257, 0),
        create(0, 0, 512),
    ] {
        let err = client.create_capsule(bad.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    assert!(
        agent.manager.list().is_empty(),
        "a refused create leaves nothing"
    );

    // 2 vCPUs, 512 MiB (a shape of the default set), 3 GiB of disk: a snapshot of that shape is made once, then restored.
    let c = client
        .create_capsule(create(2, 512, 3072))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((c.vcpus, c.memory_mib, c.disk_mib), (2, 512, 3072));
    let (out, code) = bash(
        client,
        &c.id,
        "nproc; awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo; \
         df -B1M --output=size / | tail -1",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<u64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(lines[0], 2, "{out}");
    assert!((400..=512).contains(&lines[1]), "guest RAM {out}");
    assert!(
        (2900..=3072).contains(&lines[2]),
        "root filesystem size {out}"
    );
    // The disk is enforced: the guest cannot hold more than its size.
    let (out, code) = bash(client, &c.id, "fallocate -l 4G /big 2>&1; echo rc=$?").await;
    assert_eq!(code, 0);
    assert!(
        out.contains("No space left") && !out.contains("rc=0"),
        "{out}"
    );

    // The VMM runs in the capsule's own groups, capped at its vCPUs and RAM plus overhead.
    let rec = agent.manager.get(&c.id).unwrap();
    let pid = rec.vmm_pid.unwrap();
    let group = wrenn_vmm::cgroup::Cgroup::named(&format!("wrenn-{}", rec.slot));
    if let Some(group) = &group {
        assert!(group.contains(pid), "QEMU {pid} is in {group:?}");
        let limits = group.limits().unwrap();
        assert_eq!(limits.cpus, 2);
        assert_eq!(
            limits.memory_bytes,
            (512 + wrenn_agent::capsule::VMM_OVERHEAD_MIB) << 20
        );
    }
    // Paused, the capsule keeps its shape and disk; resumed, its VMM rejoins its groups.
    client.pause_capsule(r(&c.id)).await.unwrap();
    client.resume_capsule(r(&c.id)).await.unwrap();
    let (out, _) = bash(client, &c.id, "nproc; df -B1M --output=size / | tail -1").await;
    assert_eq!(out.split_whitespace().next(), Some("2"), "{out}");
    if let Some(group) = &group {
        let pid = agent.manager.get(&c.id).unwrap().vmm_pid.unwrap();
        assert!(group.contains(pid));
    }

    // The same shape again restores the kept snapshot (one shape folder).
    let d = client
        .create_capsule(CreateCapsuleRequest {
            egress: true,
            ..create(2, 512, 0)
        })
        .await
        .unwrap()
        .into_inner();
    // The guest's only name server is its slot's resolver.
    let (out, _) = bash(client, &d.id, "grep ^nameserver /etc/resolv.conf").await;
    assert_eq!(out.trim(), "nameserver 169.254.0.22");
    // Made once for this image (shapes of an older build of it may still be there).
    let inputs = std::fs::read_to_string(images_dir().join("minimal/inputs.sha256")).unwrap();
    let this_image = format!("{}-2c-512m", &inputs.trim()[..12]);
    let shapes = std::fs::read_dir(images_dir().join("minimal/shapes"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() == this_image)
        .count();
    assert_eq!(shapes, 1);
    assert_eq!(d.disk_mib, 2048, "the template's disk by default");

    for id in [&c.id, &d.id] {
        client.destroy_capsule(r(id)).await.unwrap();
    }
    if let Some(group) = &group {
        assert!(group.dirs.iter().all(|d| !d.exists()), "groups removed");
    }
    agent.stop().await;
}

#[tokio::test]
async fn snapshot_templates_and_watch() {
    use wrenn_proto::agent::v1::{
        watch_dir_event, DeleteTemplateRequest, FsEventType, ListTemplatesRequest,
        SnapshotCapsuleRequest, TemplateKind, WatchDirRequest, WriteFileRequest,
    };
    let mut agent = TestAgent::start(2, 1050..=1099).await;
    let client = &mut agent.client;
    let c = client
        .create_capsule(CreateCapsuleRequest {
            template: "minimal".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Watch: `started`, then the changes a write makes.
    bash(client, &c.id, "mkdir -p /tmp/w && chmod 777 /tmp/w").await;
    let mut watch = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client.watch_dir(WatchDirRequest {
            capsule_id: c.id.clone(),
            path: "/tmp/w".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("WatchDir answers")
    .unwrap()
    .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), watch.message())
        .await
        .expect("the watch starts")
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.event,
        Some(watch_dir_event::Event::Started(_))
    ));
    client
        .write_file(WriteFileRequest {
            capsule_id: c.id.clone(),
            path: "/tmp/w/hello.txt".into(),
            content: b"hi".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&(FsEventType::Create as i32)) && seen.len() < 10 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
            .await
            .expect("a watch event")
            .unwrap()
            .unwrap();
        // Uploads go through a temporary file renamed into place.
        if let Some(watch_dir_event::Event::Fs(fs)) = ev.event {
            if fs.name == "hello.txt" {
                seen.push(fs.r#type);
            }
        }
    }
    assert!(seen.contains(&(FsEventType::Create as i32)), "{seen:?}");
    drop(watch);
    let missing = client
        .watch_dir(WatchDirRequest {
            capsule_id: c.id.clone(),
            path: "/no/such/dir".into(),
            ..Default::default()
        })
        .await;
    let code = match missing {
        Err(e) => e.code(),
        Ok(s) => s.into_inner().message().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::NotFound);

    // A snapshot keeps the disk and the running processes; the source stays paused.
    bash(
        client,
        &c.id,
        "echo kept > /root/marker; nohup sleep 777 >/dev/null 2>&1 &",
    )
    .await;
    let name = format!("test-snap-{}", std::process::id());
    let snap = |name: &str, overwrite| SnapshotCapsuleRequest {
        capsule_id: c.id.clone(),
        name: name.into(),
        overwrite,
        fresh: None,
    };
    let t = client
        .snapshot_capsule(snap(&name, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.kind, TemplateKind::Snapshot as i32);
    assert_eq!((t.base.as_str(), t.vcpus), ("minimal", c.vcpus));
    assert!(t.size_bytes > 0 && t.disk_bytes >= 2 << 30, "{t:?}");
    let source = client.get_capsule(r(&c.id)).await.unwrap().into_inner();
    assert_eq!(source.state, CapsuleState::Paused as i32);
    let listed = client
        .list_templates(ListTemplatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .templates;
    assert!(listed.iter().any(|x| x.name == name));
    assert!(listed
        .iter()
        .any(|x| x.name == "minimal" && x.kind == TemplateKind::Base as i32));

    let d = client
        .create_capsule(CreateCapsuleRequest {
            template: name.clone(),
            template_kind: TemplateKind::Snapshot as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (out, _) = bash(
        client,
        &d.id,
        "cat /root/marker; pgrep -fx 'sleep 777' | wc -l",
    )
    .await;
    assert_eq!(out, "kept\n1\n");
    // Its capsules have its shape.
    let other_shape = client
        .create_capsule(CreateCapsuleRequest {
            template: name.clone(),
            template_kind: TemplateKind::Snapshot as i32,
            vcpus: c.vcpus + 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other_shape.code(), Code::InvalidArgument);
    // Only as the kind the control plane resolved: a snapshot template is no base template.
    let as_base = client
        .create_capsule(CreateCapsuleRequest {
            template: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(as_base.code(), Code::NotFound);

    // Names: taken, in use, a base template, invalid.
    let taken = client
        .snapshot_capsule(snap(&name, false))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let in_use = client
        .snapshot_capsule(snap(&name, true))
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    let base = client
        .snapshot_capsule(snap("minimal", true))
        .await
        .unwrap_err();
    assert_eq!(base.code(), Code::FailedPrecondition);
    let invalid = client
        .snapshot_capsule(snap("../x", false))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let del = |name: &str| DeleteTemplateRequest { name: name.into() };
    assert_eq!(
        client.delete_template(del(&name)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        client
            .delete_template(del("minimal"))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );

    // Once its capsule is gone, it can be replaced and deleted.
    client.destroy_capsule(r(&d.id)).await.unwrap();
    client.snapshot_capsule(snap(&name, true)).await.unwrap();
    client.delete_template(del(&name)).await.unwrap();
    assert_eq!(
        client.delete_template(del(&name)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(!images_dir().join(&name).exists());
    // The source resumes with its file.
    client.resume_capsule(r(&c.id)).await.unwrap();
    let (out, _) = bash(client, &c.id, "cat /root/marker").await;
    assert_eq!(out, "kept\n");
    client.destroy_capsule(r(&c.id)).await.unwrap();
    agent.stop().await;
}
