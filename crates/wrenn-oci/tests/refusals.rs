//! Refusals against a real registry (Debian's docker-registry on 127.0.0.1, ports as in
//! pull.rs): a blob damaged on the registry's disk, hostile layer paths, layers expanding past
//! the limit, and which error is reported when every endpoint fails.

mod common;

use std::path::Path;

use common::image::{tar, Comp, Entry, Pusher};
use common::{read, Scene};
use wrenn_oci::{OciError, Puller};

fn base_layer() -> Vec<u8> {
    tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/os-release", b"ID=wrenn-test\n".to_vec(), 0o644),
    ])
}

#[tokio::test]
async fn digest_mismatch_is_a_clear_error() -> anyhow::Result<()> {
    let s = Scene::start("mismatch", 15004, None)?;
    let push = Pusher::new(&s.reg, "bad");
    let layer = Comp::Gzip.compress(&base_layer());
    let layer_digest = common::image::sha(&layer);
    push.image(Some("t"), "amd64", &[(base_layer(), Comp::Gzip)], &[], true)
        .await?;
    // Damage the stored blob behind the registry's back (same size, one byte flipped).
    let file = s.reg.blob_file(&layer_digest["sha256:".len()..]);
    let mut bytes = std::fs::read(&file)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes)?;
    let puller = s.puller()?;
    let err = puller
        .pull(&s.reference("bad:t"), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&layer_digest) && text.contains("digest mismatch"),
        "{text}"
    );
    let d = wrenn_oci::Digest::parse(&layer_digest)?;
    assert!(!puller.cache().has_blob(&d), "a bad blob is never cached");
    assert_eq!(s.temporaries(), 0, "no temporaries left");
    Ok(())
}

#[tokio::test]
async fn path_escapes_are_refused_or_kept_inside() -> anyhow::Result<()> {
    let s = Scene::start("escape", 15006, None)?;
    let push = Pusher::new(&s.reg, "evil");
    let outside = s.cache.parent().unwrap().join("oci-test-escape-victim");
    let _ = std::fs::remove_file(&outside);
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        (
            "dotdot",
            vec![Entry::File(
                "../../../../oci-test-escape-victim",
                b"pwned".to_vec(),
                0o644,
            )],
        ),
        (
            "inner-dotdot",
            vec![
                Entry::Dir("a/", 0o755),
                Entry::File("a/../../x", b"pwned".to_vec(), 0o644),
            ],
        ),
        (
            "hardlink",
            vec![Entry::Hardlink("passwd", "../../../../../etc/passwd")],
        ),
        ("whiteout", vec![Entry::File(".wh...", vec![], 0o644)]),
    ];
    let puller = s.puller()?;
    for (tag, entries) in cases {
        push.image(
            Some(tag),
            "amd64",
            &[(tar(&entries), Comp::Gzip)],
            &[],
            true,
        )
        .await?;
        let err = puller
            .pull(&s.reference(&format!("evil:{tag}")), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, OciError::PathEscape { .. }), "{tag}: {err}");
        assert!(
            err.to_string().contains("escapes the root filesystem"),
            "{err}"
        );
    }
    // Symbolic links (absolute, or climbing) are followed inside the root only.
    let l1 = tar(&[
        Entry::Symlink("abs", "/"),
        Entry::Symlink("up", "../../../../../../.."),
        Entry::Dir("etc/", 0o755),
    ]);
    let l2 = tar(&[
        Entry::File("abs/oci-test-escape-victim", b"inside-1".to_vec(), 0o644),
        Entry::File("up/etc/written", b"inside-2".to_vec(), 0o644),
    ]);
    push.image(
        Some("links"),
        "amd64",
        &[(l1, Comp::Gzip), (l2, Comp::Gzip)],
        &[],
        true,
    )
    .await?;
    let img = puller.pull(&s.reference("evil:links"), |_| {}).await?;
    assert_eq!(read(&img.rootfs, "oci-test-escape-victim"), "inside-1");
    assert_eq!(read(&img.rootfs, "etc/written"), "inside-2");
    assert!(!outside.exists(), "nothing written outside the root");
    assert!(!Path::new("/oci-test-escape-victim").exists());
    assert!(!Path::new("/etc/written").exists());
    assert_eq!(s.temporaries(), 0, "failed unpacks leave nothing");
    Ok(())
}

#[tokio::test]
async fn content_past_the_unpacked_limit_is_refused() -> anyhow::Result<()> {
    let s = Scene::start("limit", 15012, None)?;
    // 4 MiB of zeros: a gzip blob of a few KiB.
    let big = tar(&[Entry::File("zeros", vec![0u8; 4 << 20], 0o644)]);
    Pusher::new(&s.reg, "bomb")
        .image(Some("1"), "amd64", &[(big, Comp::Gzip)], &[], true)
        .await?;
    let mut config = s.config();
    config.max_unpacked_bytes = 1 << 20;
    let err = Puller::new(config)?
        .pull(&s.reference("bomb:1"), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, OciError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    assert_eq!(s.temporaries(), 0);
    Ok(())
}

#[tokio::test]
async fn a_mirrors_answer_beats_an_unreachable_registry() -> anyhow::Result<()> {
    let s = Scene::start("answer", 15013, None)?;
    let mut config = wrenn_oci::OciConfig::new(&s.cache);
    // The mirror answers 404; the registry itself (127.0.0.1:15014, nothing there) is
    // unreachable: the error is the mirror's "not found".
    config.registries.insert(
        "127.0.0.1:15014".into(),
        wrenn_oci::RegistrySettings {
            mirrors: vec![s.reg.base()],
            insecure: true,
            ..Default::default()
        },
    );
    let err = Puller::new(config)?
        .pull("127.0.0.1:15014/nothing/here:1", |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::NotFound { .. }), "{err}");
    Ok(())
}
