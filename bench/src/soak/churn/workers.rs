//! The workers (create, random operations, check, destroy, again) and the killer (SIGKILL to a
//! random VMM of a capsule in use).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::shared::{Cap, Shared};
use crate::soak::Rng;

pub(super) async fn worker(sh: Arc<Shared>, w: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ ((w as u64 + 1) << 32));
    let mut n = 0u64;
    // Spread the first creates out a little.
    tokio::time::sleep(Duration::from_millis(500 * w as u64)).await;
    while Instant::now() < sh.deadline {
        let id = match sh.create(&sh.template).await {
            Ok(id) => id,
            Err(e) => {
                sh.error(format!("worker {w}: create: {e:#}"));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut cap = Cap {
            id,
            files: Vec::new(),
        };
        let ops = 4 + rng.below(12);
        let mut outcome = Ok(());
        for _ in 0..ops {
            if Instant::now() >= sh.deadline || sh.was_killed(&cap.id) {
                break;
            }
            n += 1;
            if let Err(e) = sh.op(w, &mut rng, &mut cap, n).await {
                outcome = Err(e);
                break;
            }
        }
        if outcome.is_ok() && !sh.was_killed(&cap.id) {
            let survivor = Instant::now() >= sh.deadline;
            outcome = sh.check_all(&cap.id, &cap.files).await;
            if survivor {
                let mut k = sh.counts();
                k.survivors += 1;
                if outcome.is_ok() {
                    k.survivor_files += cap.files.len() as u64;
                }
            }
        }
        sh.end(&cap.id, outcome).await;
    }
}

/// The capsule id in a QEMU command line that names `<data>/capsules/<id>/…`.
fn capsule_of(cmd: &str, data: &Path) -> Option<String> {
    let marker = format!("{}/capsules/", data.display());
    let at = cmd.find(&marker)? + marker.len();
    let id: String = cmd[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!id.is_empty()).then_some(id)
}

pub(super) async fn killer(sh: Arc<Shared>, data: PathBuf, mean: Duration, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x6b69_6c6c);
    loop {
        let wait = mean.mul_f64(0.5 + rng.below(1000) as f64 / 1000.0);
        tokio::time::sleep(wait).await;
        if Instant::now() >= sh.deadline {
            return;
        }
        let candidates: Vec<(u32, String)> = {
            let live = sh.live.lock().unwrap_or_else(|e| e.into_inner());
            let killed = sh.killed.lock().unwrap_or_else(|e| e.into_inner());
            wrenn_vmm::qemu::processes_under(&data)
                .into_iter()
                .filter_map(|(pid, cmd)| Some((pid, capsule_of(&cmd, &data)?)))
                .filter(|(_, id)| live.contains(id) && !killed.contains(id))
                .collect()
        };
        if candidates.is_empty() {
            continue;
        }
        let (pid, id) = &candidates[rng.below(candidates.len() as u64) as usize];
        sh.killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        // SAFETY: kill(2) of a QEMU whose command line names this run's own data folder.
        if unsafe { libc::kill(*pid as i32, libc::SIGKILL) } == 0 {
            sh.counts().kills += 1;
            eprintln!("soak churn: kill -9 {pid} (the VMM of {id})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capsule_id_is_read_from_a_qemu_command_line() {
        let data = Path::new("/var/tmp/wrenn-soak-churn-1");
        let cmd = "qemu-system-x86_64 -name x -drive file=/var/tmp/wrenn-soak-churn-1/capsules/\
                   cl-abc123/disk.qcow2,if=virtio";
        assert_eq!(capsule_of(cmd, data).as_deref(), Some("cl-abc123"));
        assert_eq!(
            capsule_of(
                "qemu-system-x86_64 -drive file=/other/capsules/cl-x/d",
                data
            ),
            None
        );
    }

    #[test]
    fn random_bytes_are_reproducible_by_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.bytes(100), b.bytes(100));
        assert_ne!(Rng::new(8).bytes(100), Rng::new(7).bytes(100));
    }
}
