//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1, ports 15000–15049)
//! seeded with images the tests write: manifests of both kinds, indexes, gzip/zstd/plain
//! layers, whiteouts across layers, Basic auth, digest mismatches, the cache.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path};

use common::image::{tar, Comp, Entry, Pusher, OCI_MANIFEST};
use common::{read, Scene};
use wrenn_oci::{OciError, Puller};

fn base_layer() -> Vec<u8> {
    tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/os-release", b"ID=wrenn-test\n".to_vec(), 0o644),
        Entry::Dir("usr/", 0o755),
        Entry::Dir("usr/bin/", 0o755),
        Entry::File("usr/bin/tool", b"#!/bin/sh\necho tool\n".to_vec(), 0o755),
        Entry::Symlink("bin", "usr/bin"),
        Entry::Hardlink("usr/bin/tool2", "usr/bin/tool"),
        Entry::CharDev("dev-null"),
        Entry::Dir("srv/", 0o750),
    ])
}

#[tokio::test]
async fn single_manifest_oci_and_docker_gzip() -> anyhow::Result<()> {
    let s = Scene::start("single", 15000, None)?;
    let push = Pusher::new(&s.reg, "team/app");
    let (oci_digest, ..) = push
        .image(
            Some("oci"),
            "amd64",
            &[(base_layer(), Comp::Gzip)],
            &["PATH=/usr/bin", "A=1"],
            true,
        )
        .await?;
    push.image(
        Some("docker"),
        "amd64",
        &[(base_layer(), Comp::Gzip)],
        &["B=2"],
        false,
    )
    .await?;
    let puller = s.puller()?;
    let mut lines = Vec::new();
    let img = puller
        .pull(&s.reference("team/app:oci"), |p| lines.push(p.to_string()))
        .await?;
    assert_eq!(img.digest, oci_digest);
    assert!(!img.cached);
    let root = &img.rootfs;
    assert_eq!(read(root, "etc/os-release"), "ID=wrenn-test\n");
    assert_eq!(read(root, "bin/tool"), "#!/bin/sh\necho tool\n");
    assert_eq!(std::fs::read_link(root.join("bin"))?, Path::new("usr/bin"));
    let meta = std::fs::metadata(root.join("usr/bin/tool"))?;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.nlink(), 2, "tool2 is a hard link of tool");
    assert_eq!(
        std::fs::metadata(root.join("srv"))?.permissions().mode() & 0o7777,
        0o750
    );
    assert!(!root.join("dev-null").exists(), "device nodes are skipped");
    assert_eq!(img.layers[0].skipped_devices, 1);
    let run = img.config.config.clone().unwrap();
    assert_eq!(run.env.unwrap(), vec!["PATH=/usr/bin", "A=1"]);
    assert_eq!(run.working_dir.as_deref(), Some("/srv"));
    assert!(
        lines.iter().any(|l| l.starts_with("layer 1/1")),
        "{lines:?}"
    );

    let img = puller.pull(&s.reference("team/app:docker"), |_| {}).await?;
    assert_eq!(img.config.config.unwrap().env.unwrap(), vec!["B=2"]);
    assert_eq!(read(&img.rootfs, "usr/bin/tool2"), "#!/bin/sh\necho tool\n");

    let missing = puller.pull(&s.reference("team/app:nope"), |_| {}).await;
    assert!(
        matches!(missing, Err(OciError::NotFound { .. })),
        "{missing:?}"
    );
    Ok(())
}

#[tokio::test]
async fn index_picks_linux_amd64() -> anyhow::Result<()> {
    let s = Scene::start("index", 15001, None)?;
    let push = Pusher::new(&s.reg, "multi");
    let layer = |text: &str| tar(&[Entry::File("arch", text.as_bytes().to_vec(), 0o644)]);
    let arm = push
        .image(None, "arm64", &[(layer("arm64"), Comp::Gzip)], &[], true)
        .await?;
    let amd_v3 = push
        .image(None, "amd64", &[(layer("amd64v3"), Comp::Gzip)], &[], true)
        .await?;
    let amd = push
        .image(None, "amd64", &[(layer("amd64"), Comp::Zstd)], &[], true)
        .await?;
    let att = push
        .image(
            None,
            "unknown",
            &[(layer("attestation"), Comp::None)],
            &[],
            true,
        )
        .await?;
    for oci in [true, false] {
        let tag = if oci { "oci" } else { "docker" };
        let index = push
            .index(
                tag,
                &[
                    (att.0.clone(), att.1, OCI_MANIFEST, "unknown", None),
                    (arm.0.clone(), arm.1, OCI_MANIFEST, "arm64", Some("v8")),
                    (
                        amd_v3.0.clone(),
                        amd_v3.1,
                        OCI_MANIFEST,
                        "amd64",
                        Some("v3"),
                    ),
                    (amd.0.clone(), amd.1, OCI_MANIFEST, "amd64", None),
                ],
                oci,
            )
            .await?;
        let puller = s.puller()?;
        let img = puller
            .pull(&s.reference(&format!("multi:{tag}")), |_| {})
            .await?;
        assert_eq!(img.digest, amd.0);
        assert_eq!(img.index_digest.as_deref(), Some(index.as_str()));
        assert_eq!(read(&img.rootfs, "arch"), "amd64");
        // By the index's digest too.
        let img = puller
            .pull(&s.reference(&format!("multi@{index}")), |_| {})
            .await?;
        assert_eq!(read(&img.rootfs, "arch"), "amd64");
    }
    push.index(
        "armonly",
        &[(arm.0.clone(), arm.1, OCI_MANIFEST, "arm64", Some("v8"))],
        true,
    )
    .await?;
    let puller = s.puller()?;
    let err = puller
        .pull(&s.reference("multi:armonly"), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::NoPlatform { available, .. } if available == "linux/arm64/v8"),
        "{err}"
    );
    assert!(err.to_string().contains("no linux/amd64 image"), "{err}");
    // A single manifest of another architecture is refused the same way.
    push.manifest("armsingle", OCI_MANIFEST, &arm.3).await?;
    let err = puller
        .pull(&s.reference("multi:armsingle"), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::NoPlatform { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_across_gzip_zstd_plain_layers() -> anyhow::Result<()> {
    let s = Scene::start("whiteout", 15002, None)?;
    let push = Pusher::new(&s.reg, "layers");
    let l1 = tar(&[
        Entry::Dir("a/", 0o755),
        Entry::File("a/gone", b"1".to_vec(), 0o644),
        Entry::File("a/stays", b"1".to_vec(), 0o644),
        Entry::Dir("a/sub/", 0o755),
        Entry::File("a/sub/deep", b"1".to_vec(), 0o644),
        Entry::Dir("opq/", 0o755),
        Entry::File("opq/old1", b"1".to_vec(), 0o644),
        Entry::Dir("opq/olddir/", 0o755),
        Entry::File("opq/olddir/x", b"1".to_vec(), 0o644),
        Entry::File("replaced", b"file".to_vec(), 0o644),
    ]);
    let l2 = tar(&[
        Entry::File("a/.wh.gone", vec![], 0o644),
        Entry::File("a/.wh.sub", vec![], 0o644),
        // New content first, then the opaque marker: what this layer wrote stays.
        Entry::File("opq/new-before", b"2".to_vec(), 0o644),
        Entry::File("opq/.wh..wh..opq", vec![], 0o644),
        Entry::File("opq/new-after", b"2".to_vec(), 0o644),
        Entry::Dir("replaced/", 0o700),
        Entry::File("replaced/inside", b"2".to_vec(), 0o644),
    ]);
    let l3 = tar(&[
        Entry::File("a/sub/again", b"3".to_vec(), 0o644),
        Entry::File("a/stays", b"3".to_vec(), 0o600),
        Entry::File(".wh.replaced", vec![], 0o644),
        Entry::File("a/.wh.never-existed", vec![], 0o644),
    ]);
    push.image(
        Some("v1"),
        "amd64",
        &[(l1, Comp::Gzip), (l2, Comp::Zstd), (l3, Comp::None)],
        &[],
        true,
    )
    .await?;
    let puller = s.puller()?;
    let img = puller.pull(&s.reference("layers:v1"), |_| {}).await?;
    let root = &img.rootfs;
    assert!(!root.join("a/gone").exists());
    assert!(
        !root.join("a/.wh.gone").exists(),
        "whiteout files are not written"
    );
    assert_eq!(read(root, "a/stays"), "3");
    assert_eq!(
        std::fs::metadata(root.join("a/stays"))?
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        !root.join("a/sub/deep").exists(),
        "a whited-out dir loses its old content"
    );
    assert_eq!(read(root, "a/sub/again"), "3");
    let mut opq: Vec<String> = std::fs::read_dir(root.join("opq"))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    opq.sort();
    assert_eq!(opq, ["new-after", "new-before"]);
    assert!(!root.join("replaced").exists());
    assert_eq!(
        img.layers.iter().map(|l| l.whiteouts).collect::<Vec<_>>(),
        [0, 3, 2]
    );
    Ok(())
}

#[tokio::test]
async fn basic_auth_registry() -> anyhow::Result<()> {
    let s = Scene::start("basic", 15003, Some(("wrenn", "s3cret-pass")))?;
    let push = Pusher::new(&s.reg, "private/img");
    push.image(Some("1"), "amd64", &[(base_layer(), Comp::Gzip)], &[], true)
        .await?;
    let reference = s.reference("private/img:1");

    let anonymous = s.puller()?;
    let err = anonymous.pull(&reference, |_| {}).await.unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("none is configured"), "{err}");

    let mut config = s.config();
    let r = config.registries.get_mut(&s.reg.host()).unwrap();
    r.username = Some("wrenn".into());
    r.password = Some("wrong".into());
    let err = Puller::new(config.clone())?
        .pull(&reference, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the password never shows: {err}"
    );

    config.registries.get_mut(&s.reg.host()).unwrap().password = Some("s3cret-pass".into());
    let img = Puller::new(config)?.pull(&reference, |_| {}).await?;
    assert_eq!(read(&img.rootfs, "etc/os-release"), "ID=wrenn-test\n");
    Ok(())
}

#[tokio::test]
async fn cache_hits_do_not_download() -> anyhow::Result<()> {
    let mut s = Scene::start("cache", 15005, None)?;
    let push = Pusher::new(&s.reg, "cached");
    let (digest, ..) = push
        .image(
            Some("t"),
            "amd64",
            &[
                (base_layer(), Comp::Gzip),
                (tar(&[Entry::File("x", b"x".to_vec(), 0o644)]), Comp::Zstd),
            ],
            &[],
            true,
        )
        .await?;
    let reference = s.reference("cached:t");
    let before = s.reg.requests("cached").len();
    let first = s.puller()?.pull(&reference, |_| {}).await?;
    let first_requests = s.reg.requests("cached")[before..].to_vec();
    // manifest + config + 2 layers.
    assert_eq!(first_requests.len(), 4, "{first_requests:#?}");
    assert!(!first.cached);

    // A new puller on the same cache: the tag is asked once; nothing else is fetched.
    let mut steps = Vec::new();
    let second = s
        .puller()?
        .pull(&reference, |p| steps.push(p.to_string()))
        .await?;
    let second_requests = s.reg.requests("cached")[before + 4..].to_vec();
    assert_eq!(second_requests.len(), 1, "{second_requests:#?}");
    assert!(
        second_requests[0].contains("/manifests/t "),
        "{second_requests:?}"
    );
    assert!(second.cached && second.rootfs == first.rootfs, "{steps:?}");

    // By digest: the registry is not asked at all (it is stopped).
    s.reg.stop();
    let third = s
        .puller()?
        .pull(&s.reference(&format!("cached@{digest}")), |_| {})
        .await?;
    assert!(third.cached);
    assert_eq!(read(&third.rootfs, "x"), "x");

    // Removing the unpacked tree keeps the blobs: unpacked again with the registry down.
    let d = wrenn_oci::Digest::parse(&digest)?;
    s.puller()?.cache().remove_unpacked(&d)?;
    let fourth = s
        .puller()?
        .pull(&s.reference(&format!("cached@{digest}")), |_| {})
        .await?;
    assert!(!fourth.cached);
    assert_eq!(read(&fourth.rootfs, "etc/os-release"), "ID=wrenn-test\n");
    Ok(())
}

#[tokio::test]
async fn bearer_token_challenge_through_a_fake_token_front() -> anyhow::Result<()> {
    let s = Scene::start("bearer", 15007, None)?;
    Pusher::new(&s.reg, "tok/img")
        .image(Some("1"), "amd64", &[(base_layer(), Comp::Zstd)], &[], true)
        .await?;
    let front =
        common::token::FakeTokenFront::start(15008, &s.reg.base(), "tok/img", "robot", "pa55")
            .await?;
    let reference = format!("{}/tok/img:1", front.host());
    let mut config = wrenn_oci::OciConfig::new(&s.cache);
    config.registries.insert(
        front.host(),
        wrenn_oci::RegistrySettings {
            insecure: true,
            ..Default::default()
        },
    );
    // Anonymous: the token endpoint refuses; a clear error.
    let err = Puller::new(config.clone())?
        .pull(&reference, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("token endpoint"), "{err}");
    assert_eq!(
        front
            .token_refusals
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    let r = config.registries.get_mut(&front.host()).unwrap();
    r.username = Some("robot".into());
    r.password = Some("pa55".into());
    let img = Puller::new(config)?.pull(&reference, |_| {}).await?;
    assert_eq!(read(&img.rootfs, "etc/os-release"), "ID=wrenn-test\n");
    // One token serves the manifest, the config and the layer.
    assert_eq!(
        front
            .tokens_issued
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        s.reg
            .requests("tok/img")
            .iter()
            .filter(|l| l.contains("\"GET "))
            .count(),
        3
    );
    Ok(())
}

#[tokio::test]
async fn docker_hub_names_through_a_mirror_after_a_dead_one() -> anyhow::Result<()> {
    let s = Scene::start("mirror", 15009, None)?;
    Pusher::new(&s.reg, "library/python")
        .image(
            Some("3.12-slim"),
            "amd64",
            &[(base_layer(), Comp::Gzip)],
            &["PYTHON_VERSION=3.12"],
            false,
        )
        .await?;
    let mut config = wrenn_oci::OciConfig::new(&s.cache);
    config.registries.insert(
        "docker.io".into(),
        wrenn_oci::RegistrySettings {
            // Nothing listens on 15010: that mirror fails and the next one serves.
            mirrors: vec!["http://127.0.0.1:15010".into(), s.reg.base()],
            ..Default::default()
        },
    );
    let img = Puller::new(config)?
        .pull("python:3.12-slim", |_| {})
        .await?;
    assert_eq!(img.reference, "docker.io/library/python:3.12-slim");
    assert_eq!(
        img.config.config.unwrap().env.unwrap(),
        vec!["PYTHON_VERSION=3.12"]
    );
    Ok(())
}

#[tokio::test]
async fn a_bounded_cache_evicts_the_least_recently_used_image_not_in_use() -> anyhow::Result<()> {
    let s = Scene::start("evict", 15017, None)?;
    let push = Pusher::new(&s.reg, "many");
    for (tag, body) in [("a", "a"), ("b", "b"), ("c", "c")] {
        let big = tar(&[Entry::File("big", body.repeat(200_000).into_bytes(), 0o644)]);
        push.image(Some(tag), "amd64", &[(big, Comp::Gzip)], &[], true)
            .await?;
    }
    let mut config = s.config();
    // Room for about two images (200 kB unpacked each, plus their small blobs).
    config.max_cache_bytes = Some(450_000);
    let puller = Puller::new(config)?;
    let pull = |tag: &'static str| {
        let reference = s.reference(&format!("many:{tag}"));
        let puller = &puller;
        async move { puller.pull(&reference, |_| {}).await }
    };
    // `a` is kept in use (its Image lives); `b` is dropped at once.
    let a = pull("a").await?;
    drop(pull("b").await?);
    let c = pull("c").await?;
    // Three did not fit: `b`, the least recently used image not in use, went; `a` stayed.
    let held = |img: &wrenn_oci::Image| img.rootfs.join("big").is_file();
    assert!(held(&a) && held(&c));
    let bdir = s.cache.join("rootfs");
    assert_eq!(std::fs::read_dir(&bdir)?.count(), 2);
    assert!(puller.cache().size_bytes() <= 450_000);
    // Pulled again, `b` comes back (from the registry) and, `a` still in use and `c` in
    // use, the bound is overrun rather than an image in use removed.
    let b = pull("b").await?;
    assert!(!b.cached && held(&a) && held(&b) && held(&c));
    // Released and a pull later, the oldest goes.
    drop((a, b));
    let c2 = pull("c").await?;
    assert!(c2.cached && held(&c2));
    assert_eq!(std::fs::read_dir(&bdir)?.count(), 2);
    drop((c, c2));
    Ok(())
}
