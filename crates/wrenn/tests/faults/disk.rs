//! Full disks: the host's under the data folder (a small loop-mounted ext4), and a guest's own.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::json;

use super::{figure, start_up, Reap, SERIAL};

pub(super) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small ext4 filesystem on a loop device, unmounted when dropped.
struct SmallFs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(mib: u64) -> SmallFs {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        // No blocks reserved for root: the test (root) fills it for good.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image));
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        SmallFs { mount, _dir: dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        for _ in 0..50 {
            if Command::new("umount")
                .arg(&self.mount)
                .status()
                .is_ok_and(|s| s.success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_available() * s.fragment_size()
}

/// Allocates `path` until the filesystem is full (fallocate, largest pieces first, so a big
/// filesystem fills at once); the bytes taken.
fn fill(path: &Path) -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).unwrap();
    let mut taken = 0u64;
    let mut piece = free_bytes(path.parent().unwrap()).max(4096);
    while piece >= 4096 {
        // SAFETY: fallocate(2) on our own open file, past its current end.
        let rc = unsafe {
            libc::fallocate(f.as_raw_fd(), 0, taken as libc::off_t, piece as libc::off_t)
        };
        if rc == 0 {
            taken += piece;
        } else {
            let e = std::io::Error::last_os_error();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOSPC),
                "filling {}: {e}",
                path.display()
            );
            piece /= 2;
        }
    }
    let _ = f.sync_all();
    taken
}

/// 1. The host's disk under the data folder (8 GiB: room for two 2 GiB capsules after the
///    scheduler's reserve) fills up: creates fail with a clear error (no
///    panic, no hang), running capsules and the database are unharmed, and creates work again
///    once there is space.
#[tokio::test(flavor = "multi_thread")]
async fn host_disk_full_under_the_data_dir() {
    let _serial = SERIAL.lock().await;
    let fs = SmallFs::new(8192);
    let data = fs.mount.join("wrenn");
    let _reap = Reap {
        dir: data.clone(),
        slots: 3600..=3619,
    };
    let (mut up, api) = start_up(&data, "3600-3619", None);

    let a = api.capsule().await;
    // Read once now: its atime is settled, so later reads write nothing to its disk.
    api.sh(
        &a,
        "head -c 100000 /dev/urandom > /home/user/keep && sha256sum /home/user/keep > /home/user/keep.sum && \
         cat /home/user/keep.sum >/dev/null && (sleep 100000 >/dev/null 2>&1 &) && sync",
    )
    .await;
    let sum = api.sh(&a, "cat /home/user/keep.sum").await;

    let filler = fs.mount.join("filler");
    let filled = fill(&filler);
    let free_after_fill = free_bytes(&fs.mount);

    // Creates fail, each with a documented status and a clear message, none hangs.
    let mut refused = 0;
    for _ in 0..3 {
        let c = api.create(json!({ "template": "minimal" })).await;
        // The scheduler (the host's heartbeat reports its disk used: no host has the room),
        // the host's free-space check, or the database (the quota reservation is its first
        // write) finding the disk full: each says so.
        match c.status {
            503 => {
                assert_eq!(c.code(), "host_unavailable", "{c:?}");
                assert!(c.message().contains("MB of disk free"), "{c:?}");
            }
            _ => {
                assert_eq!(c.status, 507, "{c:?}");
                assert_eq!(c.code(), "insufficient_storage", "{c:?}");
                assert!(
                    c.message().contains("space") || c.message().contains("disk is full"),
                    "{c:?}"
                );
            }
        }
        refused += 1;
    }
    // The database answers; the running capsule's files and processes are intact.
    let listed = api.get("/v1/capsules").await.unwrap();
    assert_eq!(listed.status, 200, "{listed:?}");
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str()], "refused creates leave nothing");
    assert_eq!(listed.body[0]["status"], "running");
    assert_eq!(
        api.sh(&a, "sha256sum /home/user/keep").await,
        sum,
        "the capsule's file"
    );
    assert_eq!(
        api.sh(&a, "pgrep -x sleep >/dev/null && echo yes").await,
        "yes\n"
    );

    // Space returns: creates work again, and the capsule is still fine.
    std::fs::remove_file(&filler).unwrap();
    // The scheduler sees the space at the host's next heartbeat (every 10 s).
    let mut b = None;
    for _ in 0..30 {
        let c = api.create(json!({ "template": "minimal" })).await;
        if c.status == 201 {
            b = Some(c.body["id"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(c.code(), "host_unavailable", "{c:?}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let b = b.expect("creates work again within 30 s of the space returning");
    assert_eq!(api.sh(&b, "echo fine").await, "fine\n");
    assert_eq!(api.sh(&a, "sha256sum /home/user/keep").await, sum);
    for id in [&a, &b] {
        assert_eq!(api.delete(id).await.status, 204);
    }
    up.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    // The database file is sound after all that.
    let check = run(Command::new("sqlite3")
        .arg(data.join("wrenn.db"))
        .arg("PRAGMA integrity_check"));
    assert_eq!(check.trim(), "ok");
    figure(
        "host_disk_full",
        &[
            ("fs_mib", "6144".into()),
            ("filled_bytes", filled.to_string()),
            ("free_after_fill", free_after_fill.to_string()),
            ("creates_refused", refused.to_string()),
            ("running_capsule_intact", "1".into()),
            ("creates_after_recovery_ok", "1".into()),
        ],
    );
}

/// 2. A guest fills its own disk: it gets `ENOSPC`, the host loses no more than the capsule's
///    disk allowance, the server and another capsule keep working, and the full capsule can
///    delete its file and carry on.
#[tokio::test(flavor = "multi_thread")]
async fn guest_that_fills_its_disk() {
    let _serial = SERIAL.lock().await;
    // A filesystem of its own, so the host's free space is measured without other writers.
    let fs = SmallFs::new(10240);
    let data = fs.mount.join("wrenn");
    let _reap = Reap {
        dir: data.clone(),
        slots: 3620..=3639,
    };
    let (mut up, api) = start_up(&data, "3620-3639", None);
    let full = api.capsule().await;
    let other = api.capsule().await;
    api.sh(&other, "echo other > /home/user/mark && sync").await;
    let disk_bytes: u64 = api
        .sh(&full, "cat /sys/block/vda/size")
        .await
        .trim()
        .parse::<u64>()
        .unwrap()
        * 512;
    let free_before = free_bytes(&fs.mount);

    let out = api
        .exec(
            &full,
            "dd if=/dev/zero of=/home/user/big bs=4M 2>&1; echo exit=$?; sync; df -k --output=avail / | tail -1",
        )
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    let stdout = out.body["stdout"].as_str().unwrap();
    assert!(stdout.contains("No space left on device"), "{stdout}");
    assert!(!stdout.contains("exit=0"), "{stdout}");
    let guest_avail_kib: u64 = stdout.lines().last().unwrap().trim().parse().unwrap();
    assert!(
        guest_avail_kib < 64 << 10,
        "the guest's disk is full: {stdout}"
    );
    let written: u64 = api
        .sh(&full, "stat -c %s /home/user/big")
        .await
        .trim()
        .parse()
        .unwrap();

    // The host lost at most the capsule's disk (and its qcow2 metadata), nothing else.
    let free_after = free_bytes(&fs.mount);
    let used = free_before.saturating_sub(free_after);
    let allowance = disk_bytes + disk_bytes / 32;
    assert!(
        used <= allowance,
        "the host lost {used} bytes for a {disk_bytes}-byte disk"
    );
    assert!(free_after > 0);

    // Everything else keeps working.
    let listed = api.get("/v1/capsules").await.unwrap();
    assert_eq!(listed.status, 200);
    assert_eq!(api.sh(&other, "cat /home/user/mark").await, "other\n");
    assert_eq!(
        api.sh(&other, "echo more > /home/user/more && cat /home/user/more")
            .await,
        "more\n"
    );
    let c = api.capsule().await;
    assert_eq!(api.sh(&c, "echo new").await, "new\n");
    // The full capsule frees its space and continues.
    assert_eq!(
        api.sh(
            &full,
            "rm /home/user/big && echo again > /home/user/after && sync && cat /home/user/after"
        )
        .await,
        "again\n"
    );
    for id in [&full, &other, &c] {
        assert_eq!(api.delete(id).await.status, 204);
    }
    up.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    figure(
        "guest_disk_full",
        &[
            ("guest_disk_bytes", disk_bytes.to_string()),
            ("guest_bytes_written", written.to_string()),
            ("host_bytes_used", used.to_string()),
            ("host_free_after", free_after.to_string()),
            ("other_capsule_ok", "1".into()),
            ("full_capsule_recovered", "1".into()),
        ],
    );
}
