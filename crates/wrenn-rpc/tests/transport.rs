//! How the agent is reached, without VMs: a Unix socket, and TCP with mutual TLS and what it
//! refuses. Needs root and nftables (`Manager::start` sets up the host's rules), not QEMU or
//! images: only `HostInfo` and `ListCapsules` are called.

use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
    sync::Arc,
};

use tonic::transport::{Certificate, ClientTlsConfig};
use wrenn_agent::{
    manager::{AgentConfig, Manager},
    service, AgentError,
};
use wrenn_proto::agent::v1::{HostInfoRequest, ListCapsulesRequest};
use wrenn_rpc::{
    client::{self, AgentEndpoint},
    listen::{Listen, ListenAddr, UnixSocket},
    pki::{self, Pki},
    tls::{self, Identity},
    RpcError, ServerTls, SwappableTls,
};

/// A real agent (manager without capsules + gRPC server) on `listen`.
struct Agent {
    addr: ListenAddr,
    manager: Arc<Manager>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), AgentError>>,
    _data: tempfile::TempDir,
}

impl Agent {
    async fn start(listen: ListenAddr, tls: Option<ServerTls>) -> Agent {
        let data = tempfile::tempdir_in("/var/tmp").unwrap();
        let images = data.path().join("images");
        std::fs::create_dir(&images).unwrap();
        let manager = Arc::new(
            Manager::start(AgentConfig {
                data_dir: data.path().join("data"),
                images_dir: images,
                qemu: wrenn_vmm::qemu::default_qemu(),
                max_capsules: 1,
                slots: 950..=951,
                shapes: Default::default(),
                dns_upstreams: Vec::new(),
                egress_allow_private: Vec::new(),
                envd: None,
                vmm: Default::default(),
            })
            .await
            .unwrap(),
        );
        let listener = Listen::bind(&listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service::serve(listener, tls, manager.clone(), async {
            let _ = stop_rx.await;
        }));
        Agent {
            addr,
            manager,
            stop,
            server,
            _data: data,
        }
    }

    /// The TCP address (`ip:port`).
    fn tcp(&self) -> &str {
        match &self.addr {
            ListenAddr::Tcp(a) => a,
            ListenAddr::Unix(p) => panic!("not TCP: {}", p.display()),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

/// Connects and calls `HostInfo` and `ListCapsules`; the error text when anything fails.
async fn call(endpoint: &str, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let endpoint: AgentEndpoint = endpoint.parse().unwrap();
    let mut c = client::connect(&endpoint, tls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let info = c
        .host_info(HostInfoRequest {})
        .await
        .map_err(|s| format!("HostInfo: {s}"))?
        .into_inner();
    assert_eq!(info.max_capsules, 1);
    let listed = c
        .list_capsules(ListCapsulesRequest {})
        .await
        .map_err(|s| format!("ListCapsules: {s}"))?
        .into_inner();
    assert!(listed.capsules.is_empty());
    Ok(())
}

/// Asserts that `call` fails, for the reason `why` names (empty: any reason).
async fn refused(what: &str, endpoint: &str, tls: Option<ClientTlsConfig>, why: &str) {
    match call(endpoint, tls).await {
        Ok(()) => panic!("{what}: the agent answered"),
        Err(e) => {
            eprintln!("{what}: refused: {e}");
            assert!(e.contains(why), "{what}: refused, but not for {why:?}: {e}");
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A CA in a fresh folder, an agent serving mutual TLS with a certificate for localhost and
/// 127.0.0.1, and a client identity from the same CA.
async fn tls_agent() -> (Agent, Pki, Identity, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path()).unwrap();
    pki.issue_server(&["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .write(dir.path(), tls::AGENT_STEM)
        .unwrap();
    let client = pki.issue_client("control-plane").unwrap();
    // The agent reads its TLS from the folder, as `wrenn agent --tls-dir` does.
    let server_tls = tls::load_server_tls(dir.path()).unwrap();
    let agent = Agent::start("127.0.0.1:0".parse().unwrap(), Some(server_tls.into())).await;
    (agent, pki, client, dir)
}

#[tokio::test]
async fn unix_socket_is_private_and_removed_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/agent.sock");
    let agent = Agent::start(ListenAddr::Unix(sock.clone()), None).await;
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&sock), 0o600);
    assert_eq!(mode(&dir.path().join("run")), 0o700, "a folder it creates");
    let endpoint = format!("unix:{}", sock.display());
    call(&endpoint, None).await.unwrap();
    // Two clients at once, and again.
    let (a, b) = tokio::join!(call(&endpoint, None), call(&endpoint, None));
    a.unwrap();
    b.unwrap();

    // TLS makes no sense on the socket: refused before serving.
    let other = UnixSocket::bind(&dir.path().join("other.sock")).unwrap();
    let pki = Pki::load_or_create(&dir.path().join("pki")).unwrap();
    let id = pki.issue_server(&["localhost".into()]).unwrap();
    let e = service::serve(
        Listen::Unix(other),
        Some(tls::server_tls_config(pki.ca_pem(), &id).into()),
        agent.manager.clone(),
        async {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, AgentError::Rpc(RpcError::BadSettings(_))),
        "{e:?}"
    );
    assert!(!dir.path().join("other.sock").exists());

    agent.stop().await;
    assert!(!sock.exists(), "the socket file is removed on shutdown");
    let e = call(&endpoint, None).await.unwrap_err();
    assert!(e.contains("connect"), "{e}");
}

#[tokio::test]
async fn mtls_with_a_client_certificate_from_the_ca_works() {
    let (agent, pki, client, _dir) = tls_agent().await;
    let addr = agent.tcp().to_string();
    let port = addr.rsplit_once(':').unwrap().1;
    // Bare host:port with TLS, by name.
    let by_name = format!("localhost:{port}");
    call(
        &by_name,
        Some(tls::client_tls_config(pki.ca_pem(), &client, "localhost")),
    )
    .await
    .unwrap();
    // https:// by IP address, from the client files `wrenn agent-cert` writes.
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join(tls::CA_CERT), pki.ca_pem()).unwrap();
    client.write(files.path(), tls::CLIENT_STEM).unwrap();
    call(
        &format!("https://{addr}"),
        Some(tls::load_client_tls(files.path(), "127.0.0.1").unwrap()),
    )
    .await
    .unwrap();
    agent.stop().await;
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate() {
    let (agent, pki, client, _dir) = tls_agent().await;
    let addr = format!("https://{}", agent.tcp());
    let no_cert = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca_pem()))
        .domain_name("localhost");
    refused(
        "no client certificate",
        &addr,
        Some(no_cert),
        "CertificateRequired",
    )
    .await;
    // The agent keeps serving those who have one.
    call(
        &addr,
        Some(tls::client_tls_config(pki.ca_pem(), &client, "localhost")),
    )
    .await
    .unwrap();
    agent.stop().await;
}

#[tokio::test]
async fn mtls_refuses_a_client_certificate_from_another_ca() {
    let (agent, pki, _client, _dir) = tls_agent().await;
    let addr = format!("https://{}", agent.tcp());
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::load_or_create(other_dir.path()).unwrap();
    let foreign = other.issue_client("control-plane").unwrap();
    refused(
        "client certificate from another CA",
        &addr,
        Some(tls::client_tls_config(pki.ca_pem(), &foreign, "localhost")),
        "UnknownCA",
    )
    .await;
    // A server certificate of the right CA is no client certificate either.
    let server_cert = pki.issue_server(&["localhost".into()]).unwrap();
    refused(
        "a server certificate used as a client certificate",
        &addr,
        Some(tls::client_tls_config(
            pki.ca_pem(),
            &server_cert,
            "localhost",
        )),
        "UnsupportedCertificate",
    )
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn mtls_refuses_a_client_that_does_not_trust_the_agents_ca() {
    let (agent, pki, client, _dir) = tls_agent().await;
    let addr = format!("https://{}", agent.tcp());
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::load_or_create(other_dir.path()).unwrap();
    refused(
        "client trusting another CA",
        &addr,
        Some(tls::client_tls_config(other.ca_pem(), &client, "localhost")),
        "UnknownIssuer",
    )
    .await;
    // Nor one that expects a name the agent's certificate does not carry.
    refused(
        "client expecting another name",
        &addr,
        Some(tls::client_tls_config(
            pki.ca_pem(),
            &client,
            "agent-9.example",
        )),
        "not valid for name",
    )
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn mtls_port_refuses_plaintext() {
    let (agent, _pki, _client, _dir) = tls_agent().await;
    refused(
        "plaintext to the TLS port",
        &format!("http://{}", agent.tcp()),
        None,
        "",
    )
    .await;
    refused("bare host:port without TLS", agent.tcp(), None, "").await;
    agent.stop().await;
}

#[test]
fn pki_load_or_create_keeps_one_ca_and_private_keys() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pki");
    // Several processes' worth of first starts at once end with one CA.
    let cas: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Pki::load_or_create(&dir).unwrap().ca_pem().to_string()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(cas.windows(2).all(|w| w[0] == w[1]), "one CA");
    let key = std::fs::read(dir.join(pki::CA_KEY)).unwrap();
    let again = Pki::load_or_create(&dir).unwrap();
    assert_eq!(again.ca_pem(), cas[0]);
    assert_eq!(std::fs::read(dir.join(pki::CA_KEY)).unwrap(), key);
    assert_eq!(
        std::fs::read_to_string(dir.join(tls::CA_CERT)).unwrap(),
        cas[0]
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(pki::CA_KEY)), 0o600);
    // Identities issued by the reloaded CA are written private too.
    again
        .issue_server(&pki::default_server_names())
        .unwrap()
        .write(&dir, tls::AGENT_STEM)
        .unwrap();
    again
        .issue_client("control-plane")
        .unwrap()
        .write(&dir, tls::CLIENT_STEM)
        .unwrap();
    assert_eq!(mode(&dir.join("agent.key")), 0o600);
    assert_eq!(mode(&dir.join("client.key")), 0o600);
    Identity::load(&dir, tls::AGENT_STEM).unwrap();
    // No temporary files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "agent.key",
            "agent.pem",
            "ca.key",
            "ca.pem",
            "client.key",
            "client.pem"
        ]
    );
}

#[tokio::test]
async fn a_swapped_certificate_serves_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path()).unwrap();
    let first = pki.issue_server(&["localhost".into()]).unwrap();
    let swappable = SwappableTls::new(pki.ca_pem(), &first).unwrap();
    let agent = Agent::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(swappable.clone().into()),
    )
    .await;
    let client = pki.issue_client("control-plane").unwrap();
    let endpoint = format!("https://{}", agent.tcp());
    let as_name = |name: &str| Some(tls::client_tls_config(pki.ca_pem(), &client, name));
    call(&endpoint, as_name("localhost")).await.unwrap();
    refused(
        "a name the first certificate lacks",
        &endpoint,
        as_name("127.0.0.1"),
        "connect",
    )
    .await;
    // A client certificate from another CA is refused by the swappable TLS too.
    let other = Pki::load_or_create(&dir.path().join("other")).unwrap();
    let foreign = other.issue_client("control-plane").unwrap();
    refused(
        "a client certificate from another CA",
        &endpoint,
        Some(tls::client_tls_config(pki.ca_pem(), &foreign, "localhost")),
        "",
    )
    .await;
    // An identity whose key is not its certificate's is refused, and changes nothing.
    let second = pki.issue_server(&["127.0.0.1".into()]).unwrap();
    let mismatched = Identity {
        cert_pem: second.cert_pem.clone(),
        key_pem: first.key_pem.clone(),
    };
    assert!(swappable.swap(pki.ca_pem(), &mismatched).is_err());
    call(&endpoint, as_name("localhost")).await.unwrap();
    // The renewed certificate names only 127.0.0.1: new connections see it at once.
    swappable.swap(pki.ca_pem(), &second).unwrap();
    call(&endpoint, as_name("127.0.0.1")).await.unwrap();
    refused(
        "a name only the old certificate had",
        &endpoint,
        as_name("localhost"),
        "connect",
    )
    .await;
    agent.stop().await;
}
