//! What one host gives a capsule and keeps from everyone else: private files (capsules,
//! snapshot templates, shapes), templates only of the kind the control plane resolved, shapes
//! from a fixed set with unused ones evicted, disk admission against the real free space, and
//! space freed in a guest given back to the host.
//! Needs root, nftables, QEMU and `make images`. Slots 3100–3139.

use std::{
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use wrenn_agent::{
    capsule::CreateSpec,
    envd_client::ExecRequest,
    manager::{AgentConfig, Manager},
    templates::{ShapePolicy, TemplateKind},
    AgentError,
};

fn images_dir() -> PathBuf {
    std::env::var_os("WRENN_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wrenn/images"))
}

/// An images folder of its own with `minimal` in it (hard links of the built image and its
/// snapshot: cheap, and this test's shapes and templates never touch the shared folder).
fn own_images() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let from = images_dir().join("minimal");
    assert!(
        from.join("snapshot/vm.json").is_file(),
        "no minimal image at {} (make images)",
        from.display()
    );
    let to = dir.path().join("minimal");
    std::fs::create_dir_all(to.join("snapshot")).unwrap();
    for f in ["vmlinuz", "initrd.img", "rootfs.img", "inputs.sha256"] {
        std::fs::hard_link(from.join(f), to.join(f)).unwrap();
    }
    for f in ["disk.img", "memory", "state", "vm.json"] {
        std::fs::hard_link(from.join("snapshot").join(f), to.join("snapshot").join(f)).unwrap();
    }
    dir
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        cmd: "/bin/bash".into(),
        args: vec!["-c".into(), script.into()],
        user: Some("root".into()),
        ..Default::default()
    }
}

fn spec() -> CreateSpec {
    CreateSpec {
        template: "minimal".into(),
        ..Default::default()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o777
}

/// Every folder under `dir` is 0700 and every file 0600 (files with other hard links — a
/// template's kernel linked from its base — are not the capsule's). Returns the file names
/// checked.
fn assert_private(dir: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let t = m.file_type();
        if t.is_dir() {
            seen.extend(assert_private(&e.path()));
        } else if t.is_symlink() || (t.is_file() && m.nlink() > 1) {
            continue;
        } else {
            assert!(t.is_file() || t.is_socket(), "{}", e.path().display());
            assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
            seen.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    seen
}

fn set_used(dir: &Path, ago: Duration) {
    std::fs::File::open(dir)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

fn shape_dir(images: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(images.join("minimal/shapes"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
}

/// Capsule folders, snapshot templates and shapes are 0700 folders of 0600 files, also when
/// the folders existed before with looser modes; creates get only the template kind asked
/// for; shapes come from the configured set and unused ones are evicted, least recently used
/// first, beyond the budget.
#[tokio::test]
async fn private_files_template_kinds_and_shapes() {
    let images = own_images();
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    // Left by an older version: loose modes, fixed at start.
    std::fs::create_dir_all(data.path().join("capsules")).unwrap();
    std::fs::set_permissions(
        data.path().join("capsules"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        images.path().join("minimal/snapshot"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mgr = Manager::start(AgentConfig {
        data_dir: data.path().to_path_buf(),
        images_dir: images.path().to_path_buf(),
        qemu: wrenn_vmm::qemu::default_qemu(),
        max_capsules: 4,
        slots: 3100..=3119,
        shapes: ShapePolicy {
            vcpus: vec![1, 2],
            memory_mib: vec![256, 512],
            budget_bytes: 1,
        },
        dns_upstreams: Vec::new(),
        egress_allow_private: Vec::new(),
        envd: None,
        vmm: Default::default(),
    })
    .await
    .unwrap();
    let mgr = std::sync::Arc::new(mgr);
    assert_eq!(mode(&data.path().join("capsules")), 0o700);
    assert_eq!(mode(&images.path().join("minimal/snapshot")), 0o700);

    // A capsule: running, then paused (its device state saved).
    let c = mgr.create(spec()).await.unwrap();
    let cdir = data.path().join("capsules").join(&c.id);
    mgr.exec(&c.id, sh("echo secret > /root/s && sync"))
        .await
        .unwrap();
    let files = assert_private(&cdir);
    for f in ["disk.qcow2", "console.log", "capsule.json"] {
        assert!(files.iter().any(|x| x == f), "{f} in {files:?}");
    }
    // Guest RAM: the template's memory file, linked (shared pages, mapped privately): the
    // link is as private as the template's file.
    assert_eq!(mode(&cdir.join("memory.base")), 0o600);
    mgr.pause(&c.id).await.unwrap();
    let files = assert_private(&cdir);
    for f in ["state", "memory.delta"] {
        assert!(files.iter().any(|x| x == f), "{f} in {files:?}");
    }

    // A snapshot template of it (the control plane names it by an unguessable id).
    let name = "tpl-isolation0test0000000000";
    mgr.snapshot(&c.id, name, false, None).await.unwrap();
    let files = assert_private(&images.path().join(name));
    for f in ["memory", "disk.img", "state", "vm.json", "template.json"] {
        assert!(files.iter().any(|x| x == f), "{f} in {files:?}");
    }

    // Kinds: a snapshot id given as a base template, a base template given as a snapshot, a
    // symlink to a template and path tricks are refused; only the resolved kind works.
    let as_base = CreateSpec {
        template: name.into(),
        kind: TemplateKind::Base,
        ..spec()
    };
    assert!(
        matches!(
            mgr.create(as_base).await,
            Err(AgentError::TemplateNotFound { .. })
        ),
        "a snapshot template given as a base template"
    );
    let as_snapshot = CreateSpec {
        kind: TemplateKind::Snapshot,
        ..spec()
    };
    assert!(
        matches!(
            mgr.create(as_snapshot).await,
            Err(AgentError::TemplateNotFound { .. })
        ),
        "a base template given as a snapshot template"
    );
    std::os::unix::fs::symlink(images.path().join(name), images.path().join("alias")).unwrap();
    for kind in [TemplateKind::Base, TemplateKind::Snapshot] {
        let aliased = CreateSpec {
            template: "alias".into(),
            kind,
            ..spec()
        };
        assert!(matches!(
            mgr.create(aliased).await,
            Err(AgentError::TemplateNotFound { .. })
        ));
    }
    for tricky in ["../minimal", "minimal/../x", "/etc", ".new-x", ""] {
        let bad = CreateSpec {
            template: tricky.into(),
            kind: TemplateKind::Snapshot,
            ..spec()
        };
        assert!(
            matches!(mgr.create(bad).await, Err(AgentError::BadTemplateName(_))),
            "{tricky:?}"
        );
    }
    let from_snapshot = mgr
        .create(CreateSpec {
            template: name.into(),
            kind: TemplateKind::Snapshot,
            ..spec()
        })
        .await
        .unwrap();
    let out = mgr
        .exec(&from_snapshot.id, sh("cat /root/s"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secret\n");
    mgr.destroy(&from_snapshot.id).await.unwrap();
    mgr.destroy(&c.id).await.unwrap();
    mgr.delete_template(name).unwrap();
    assert_eq!(mgr.list().len(), 0);

    // Shapes: only the configured set.
    let odd = mgr.create(CreateSpec { vcpus: 3, ..spec() }).await;
    match odd {
        Err(e @ AgentError::ShapeNotOffered { .. }) => {
            let m = e.to_string();
            assert!(m.contains("not a shape"), "{m}")
        }
        other => panic!("3 vCPUs: {other:?}"),
    }
    assert!(
        shape_dir(images.path(), "-3c-256m").is_none(),
        "nothing made"
    );
    // 2 vCPUs: a shape snapshot, private.
    let two = mgr.create(CreateSpec { vcpus: 2, ..spec() }).await.unwrap();
    let a = shape_dir(images.path(), "-2c-256m").expect("the 2-vCPU shape");
    assert_eq!(mode(&images.path().join("minimal/shapes")), 0o700);
    let files = assert_private(&a);
    assert!(files.iter().any(|x| x == "state"), "{files:?}");
    // Its memory is linked into the capsule made from it (shared pages): as private.
    assert_eq!(mode(&a.join("snapshot/memory")), 0o600);
    mgr.destroy(&two.id).await.unwrap();
    // Unused and long unused: evicted when another shape goes over the budget.
    set_used(&a, Duration::from_secs(3600));
    let big = mgr
        .create(CreateSpec {
            memory_mib: 512,
            ..spec()
        })
        .await
        .unwrap();
    let b = shape_dir(images.path(), "-1c-512m").expect("the 512 MiB shape");
    assert!(
        !a.exists(),
        "the least recently used unused shape is evicted"
    );
    // In use: never evicted, however old.
    set_used(&b, Duration::from_secs(3600));
    let two = mgr.create(CreateSpec { vcpus: 2, ..spec() }).await.unwrap();
    assert!(b.exists(), "a shape a capsule restores from stays");
    let out = mgr.exec(&big.id, sh("nproc")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    for id in [&big.id, &two.id] {
        mgr.destroy(id).await.unwrap();
    }
}

/// Allocated bytes of a file.
fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// Creates are admitted against the free space of the filesystem capsules live on (a small
/// one the test mounts), counting what running capsules may still write; a disk that can
/// never fit is the request's fault. Space a guest frees goes back to the host.
#[tokio::test]
async fn disk_admission_and_discard() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3g", "wrenn-test-disk"])
        .arg(data.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs (needs root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.path().to_path_buf());
    let mgr = Manager::start(AgentConfig {
        data_dir: data.path().to_path_buf(),
        images_dir: images_dir(),
        qemu: wrenn_vmm::qemu::default_qemu(),
        max_capsules: 4,
        slots: 3120..=3139,
        shapes: Default::default(),
        dns_upstreams: Vec::new(),
        egress_allow_private: Vec::new(),
        envd: None,
        vmm: Default::default(),
    })
    .await
    .unwrap();
    let mgr = std::sync::Arc::new(mgr);

    // Never: 1 TiB, and 4 GiB on a 3 GiB filesystem.
    for disk_mib in [1 << 20, 4096] {
        match mgr.create(CreateSpec { disk_mib, ..spec() }).await {
            Err(e @ AgentError::DiskNeverFits { .. }) => {
                let m = e.to_string();
                assert!(m.contains("can never fit"), "{m}")
            }
            other => panic!("{disk_mib} MiB: {other:?}"),
        }
    }
    // One 2 GiB capsule fits; a second would not once the first fills its disk.
    let c = mgr.create(spec()).await.unwrap();
    match mgr.create(spec()).await {
        // A host full now: 507 `insufficient_storage` through the API.
        Err(e @ AgentError::HostDiskFull { .. }) => {
            let m = e.to_string();
            assert!(m.contains("out of disk space"), "{m}")
        }
        other => panic!("a second capsule: {other:?}"),
    }
    assert_eq!(mgr.list().len(), 1, "the refused create left nothing");

    // Discard: a file written then deleted in the guest is given back.
    let disk = data.path().join("capsules").join(&c.id).join("disk.qcow2");
    let before = allocated(&disk);
    let out = mgr
        .exec(
            &c.id,
            sh("head -c 96M /dev/urandom > /root/big && sync && \
                cat /sys/block/vda/queue/discard_max_bytes && grep ' / ' /proc/mounts"),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.exit_code, 0, "{text}");
    let written = allocated(&disk);
    assert!(
        written >= before + (80 << 20),
        "writing grew the overlay: {before} -> {written}; {text}"
    );
    let out = mgr.exec(&c.id, sh("rm /root/big && sync")).await.unwrap();
    assert_eq!(out.exit_code, 0);
    // The guest discards at its next journal commit; wait for it (not a speed assertion).
    let mut after = allocated(&disk);
    for _ in 0..60 {
        if after + (64 << 20) <= written {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = mgr.exec(&c.id, sh("sync")).await;
        after = allocated(&disk);
    }
    assert!(
        after + (64 << 20) <= written,
        "the overlay shrank after the delete: {written} -> {after}; guest: {text}"
    );
    mgr.destroy(&c.id).await.unwrap();
}
