//! 100 pause/resume cycles of one capsule.

use super::{figure, start_up, Reap, SERIAL};

/// 5. 100 pause/resume cycles through the REST API: the process and the file survive each.
#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_100_cycles() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let _reap = Reap {
        dir: dir.path().to_path_buf(),
        slots: 3680..=3699,
    };
    let (mut up, api) = start_up(dir.path(), "3680-3699", None);
    let id = api.capsule().await;
    let sum = api
        .sh(
            &id,
            "head -c 1000000 /dev/urandom > /home/user/data && \
             (nohup sleep 1000000 >/dev/null 2>&1 & echo $! > /home/user/pid) && \
             sha256sum /home/user/data",
        )
        .await;
    let pid = api.sh(&id, "cat /home/user/pid").await;
    let cycles = 100;
    let mut ok = 0;
    for i in 0..cycles {
        let p = api.post(&format!("/v1/capsules/{id}/pause")).await;
        assert_eq!(p.status, 200, "cycle {i}: {p:?}");
        assert_eq!(p.body["status"], "paused", "cycle {i}");
        let r = api.post(&format!("/v1/capsules/{id}/resume")).await;
        assert_eq!(r.status, 200, "cycle {i}: {r:?}");
        assert_eq!(r.body["status"], "running", "cycle {i}");
        // Every tenth cycle, and the last: the file and the process are intact.
        if i % 10 == 9 {
            let got = api
                .sh(
                    &id,
                    &format!(
                        "sha256sum /home/user/data; kill -0 {} && echo alive",
                        pid.trim()
                    ),
                )
                .await;
            assert_eq!(got, format!("{sum}alive\n"), "cycle {i}");
        }
        ok += 1;
    }
    assert_eq!(api.delete(&id).await.status, 204);
    up.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    figure(
        "pause_resume",
        &[("cycles", cycles.to_string()), ("ok", ok.to_string())],
    );
}
