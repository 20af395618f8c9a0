//! PostgreSQL (a throwaway cluster of the test's own) stopped and started under load.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::disk::run;
use super::load::{judge, load, until_ok, Tally};
use super::{figure, start_up, Reap, HANG, SERIAL};

/// A throwaway PostgreSQL cluster of the test's own (never the shared test cluster).
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    password: String,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn pg_bin() -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries (scripts/install-postgres.sh installs them)")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .collect();
        dirs.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop().expect("an initdb")
    }

    fn as_postgres(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(args[0]))
            .args(&args[1..]);
        cmd
    }

    fn new() -> Postgres {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let chown = |p: &Path| run(Command::new("chown").arg("postgres").arg(p));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chown(&data);
        let password = format!("pw{}", std::process::id());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).unwrap();
        chown(&pwfile);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            bin: Self::pg_bin(),
            data,
            port,
            password,
            _dir: dir,
        };
        let data = pg.data.to_str().unwrap().to_string();
        run(&mut pg.as_postgres(&[
            "initdb",
            "-D",
            &data,
            "-U",
            "postgres",
            "--no-locale",
            "-E",
            "UTF8",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            &format!("--pwfile={}", pwfile.display()),
        ]));
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data.join("postgresql.conf"))
            .unwrap()
            .write_all(
                format!(
                    "\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
                     unix_socket_directories = '{data}'\nfsync = off\n"
                )
                .as_bytes(),
            )
            .unwrap();
        pg.start();
        pg
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    fn start(&self) {
        let data = self.data.to_str().unwrap();
        let log = self.data.join("server.log");
        run(self
            .as_postgres(&[
                "pg_ctl",
                "-D",
                data,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ])
            .stdout(Stdio::null()));
    }

    fn stop(&self, mode: &str) {
        let data = self.data.to_str().unwrap();
        let _ = self
            .as_postgres(&["pg_ctl", "-D", data, "-m", mode, "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}

/// 3. PostgreSQL restarts while requests run: every request ends, with success or a clear
///    503; the control plane reconnects by itself and requests succeed again.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_under_load() {
    let _serial = SERIAL.lock().await;
    let pg = Postgres::new();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let _reap = Reap {
        dir: dir.path().to_path_buf(),
        slots: 3640..=3659,
    };
    let (mut up, api) = start_up(dir.path(), "3640-3659", Some(&pg.url()));
    let id = api.capsule().await;
    api.sh(&id, "echo kept > /home/user/mark").await;

    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (api2, id2) = (api.clone(), id.clone());
    let workers = load(
        4,
        phase.clone(),
        stop.clone(),
        tally.clone(),
        move |w, n| {
            let (api, id) = (api2.clone(), id2.clone());
            async move {
                match (w + n as usize) % 3 {
                    0 => api.get("/v1/capsules").await,
                    1 => api.get(&format!("/v1/capsules/{id}")).await,
                    _ => api.exec(&id, "cat /home/user/mark").await,
                }
            }
        },
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Down (connections cut), a few seconds without a database, then up again.
    phase.store(1, Ordering::SeqCst);
    let stopped = Instant::now();
    tokio::task::spawn_blocking({
        let (data, bin) = (pg.data.clone(), pg.bin.clone());
        move || {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .status();
        }
    })
    .await
    .unwrap();
    // Longer than the pool's wait for a connection (5 s): some requests must give up.
    tokio::time::sleep(Duration::from_secs(8)).await;
    tokio::task::spawn_blocking({
        let pg_start = (pg.data.clone(), pg.bin.clone());
        move || {
            let (data, bin) = pg_start;
            run(Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(data.join("server.log"))
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null()));
        }
    })
    .await
    .unwrap();
    let outage = stopped.elapsed();
    let api3 = api.clone();
    let recovered = until_ok(HANG, || api3.get("/v1/capsules")).await;
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let before = judge(&tally, 0, "unavailable");
    let during = judge(&tally, 1, "unavailable");
    let after = judge(&tally, 2, "unavailable");
    assert_eq!(before.0, before.1, "all succeed before the restart");
    assert!(
        during.2 > 0,
        "requests were refused while the database was down"
    );
    assert!(after.0 > 0);
    assert_eq!(after.0, after.1, "all succeed after the restart");
    assert_eq!(api.sh(&id, "cat /home/user/mark").await, "kept\n");
    let c = api.capsule().await;
    assert_eq!(api.delete(&c).await.status, 204);
    assert_eq!(api.delete(&id).await.status, 204);
    up.stop();
    assert_eq!(
        wrenn_vmm::qemu::processes_under(&_reap.dir).len(),
        0,
        "QEMUs left"
    );
    figure(
        "postgres_restart",
        &[
            ("requests", tally.answers.len().to_string()),
            ("before_ok", format!("{}/{}", before.1, before.0)),
            ("during_ok", during.1.to_string()),
            ("during_503", during.2.to_string()),
            ("slowest_503_ms", during.3.to_string()),
            ("outage_ms", outage.as_millis().to_string()),
            (
                "reconnect_after_start_ms",
                recovered.as_millis().to_string(),
            ),
            ("after_ok", format!("{}/{}", after.1, after.0)),
            ("hung", "0".into()),
        ],
    );
}
