//! `wrenn server --tls-listen` end to end, without an agent or a VM: the API over HTTPS by
//! `api.{domain}` (names pinned to 127.0.0.1 with reqwest's resolver override), Wrenn's own CA
//! and its certificate kept across a restart with private key files, the banner's
//! `SSL_CERT_FILE` line, and the operator's `--tls-cert`/`--tls-key` served instead.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

const DOMAIN: &str = "wrenn.test";

/// A `wrenn server` with HTTPS on `tls_port`; its stdout lines up to the HTTPS banner.
struct Server {
    child: Child,
    banner: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) with the pid of our own child and a valid signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, tls_port: u16, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args(["server", "--listen", "127.0.0.1:0", "--domain", DOMAIN])
        .arg("--tls-listen")
        .arg(format!("127.0.0.1:{tls_port}"))
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let last = line.starts_with("sign-up:");
        banner.push(line);
        if last {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(
        banner.iter().any(|l| l.starts_with("HTTPS at https://")),
        "{banner:?}"
    );
    Server { child, banner }
}

/// `GET https://api.{domain}:{port}/health` trusting only `ca_pem`.
async fn health(ca_pem: &str, port: u16) -> reqwest::Result<reqwest::StatusCode> {
    let host = format!("api.{DOMAIN}");
    let c = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(&host, ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    Ok(c.get(format!("https://{host}:{port}/health"))
        .send()
        .await?
        .status())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn own_ca_kept_across_restarts_and_operator_files_served() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = tmp.path().join("wrenn");
    let pki = dir.join("pki/https");
    let port = free_port();

    let s = start(&dir, port, &[]);
    let ca = std::fs::read_to_string(pki.join("ca.pem")).unwrap();
    let leaf = std::fs::read_to_string(pki.join("server.pem")).unwrap();
    let hint = format!("SSL_CERT_FILE={}", pki.join("ca.pem").display());
    assert!(s.banner.iter().any(|l| l.contains(&hint)), "{:?}", s.banner);
    assert_eq!(health(&ca, port).await.unwrap(), 200);
    assert_eq!(mode(&pki), 0o700);
    assert_eq!(mode(&pki.join("ca.key")), 0o600);
    assert_eq!(mode(&pki.join("server.key")), 0o600);
    drop(s);

    // A restart: the same CA and the same certificate (clients keep trusting it).
    let s = start(&dir, port, &[]);
    assert_eq!(std::fs::read_to_string(pki.join("ca.pem")).unwrap(), ca);
    assert_eq!(
        std::fs::read_to_string(pki.join("server.pem")).unwrap(),
        leaf
    );
    assert_eq!(health(&ca, port).await.unwrap(), 200);
    drop(s);

    // The operator's files: their CA verifies, Wrenn's own does not.
    let op = tmp.path().join("op");
    let op_ca = wrenn_rpc::pki::Pki::load_or_create(&op.join("ca")).unwrap();
    op_ca
        .issue_server(&[DOMAIN.to_string(), format!("*.{DOMAIN}")])
        .unwrap()
        .write(&op, "site")
        .unwrap();
    let (cert, key) = (op.join("site.pem"), op.join("site.key"));
    let s = start(
        &dir,
        port,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(!s.banner.iter().any(|l| l.contains("SSL_CERT_FILE")));
    assert_eq!(health(op_ca.ca_pem(), port).await.unwrap(), 200);
    assert!(health(&ca, port).await.is_err());
    drop(s);

    // A key that is not the certificate's stops the start, with the files named.
    std::fs::write(&key, op_ca.issue_client("x").unwrap().key_pem).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args(["server", "--listen", "127.0.0.1:0"])
        .arg("--tls-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("site.pem") && err.contains("does not belong"),
        "{err}"
    );
}
