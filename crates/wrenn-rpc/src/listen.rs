//! Where the agent's gRPC service listens: a TCP address, or a Unix socket for a control plane
//! on the same host.
//!
//! The Unix socket is private to its owner (0600) from its first moment: it is bound inside a
//! fresh 0700 folder, given its mode, then hard-linked into place (which fails rather than
//! replace anything). A socket file that nothing answers on any more is removed first; one a
//! live server answers on, or any other kind of file, is left alone and reported. The socket
//! file is removed when the listener goes away (only if it is still this listener's).

use std::{
    fmt,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    str::FromStr,
};

use tonic::{
    service::Routes,
    transport::{server::TcpIncoming, Server, ServerTlsConfig},
};

use crate::error::{chain, Result, RpcError};

/// A listen address: `host:port` (`127.0.0.1:9090`, `[::1]:9090`, `0.0.0.0:0`) or
/// `unix:/path/to.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = RpcError;

    fn from_str(s: &str) -> Result<ListenAddr> {
        let bad = |why: &str| {
            RpcError::BadAddress(format!(
                "invalid listen address {s:?}: {why} (use host:port or unix:/path/to.sock)"
            ))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(ListenAddr::Unix(unix_path(path).map_err(|w| bad(&w))?));
        }
        if s.contains("://") {
            return Err(bad("a listen address is not a URL"));
        }
        host_port(s).map_err(|w| bad(&w))?;
        Ok(ListenAddr::Tcp(s.to_string()))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => f.write_str(a),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The path of `unix:PATH` (also `unix://PATH`), which must name a file.
pub(crate) fn unix_path(path: &str) -> std::result::Result<PathBuf, String> {
    let path = match path.strip_prefix("//") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    };
    if path.is_empty() {
        return Err("the socket path is empty".into());
    }
    if path.contains('\0') {
        return Err("the socket path contains a NUL byte".into());
    }
    if path.ends_with('/') {
        return Err("the socket path names a folder".into());
    }
    Ok(PathBuf::from(path))
}

/// Splits `host:port` (`[v6]:port` for IPv6), checking both parts.
pub(crate) fn host_port(s: &str) -> std::result::Result<(&str, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "missing :port".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    if host.is_empty() {
        return Err("missing host".into());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
    } else if host.contains(':') {
        return Err("an IPv6 address goes in brackets: [::1]:port".into());
    } else if host.contains(|c: char| c.is_whitespace() || "/?#@[]".contains(c)) {
        return Err(format!("{host:?} is not a host name or address"));
    }
    Ok((host, port))
}

/// A bound listener, ready for [`serve`].
#[derive(Debug)]
pub enum Listen {
    Tcp(tokio::net::TcpListener),
    Unix(UnixSocket),
}

impl Listen {
    /// Binds `addr` (a host name resolves to its first address that binds).
    pub async fn bind(addr: &ListenAddr) -> Result<Listen> {
        match addr {
            ListenAddr::Tcp(a) => tokio::net::TcpListener::bind(a.as_str())
                .await
                .map(Listen::Tcp)
                .map_err(|e| RpcError::io(format!("binding {a}"), e)),
            ListenAddr::Unix(p) => UnixSocket::bind(p).map(Listen::Unix),
        }
    }

    /// Where clients reach it: `ip:port` (the real port when bound to port 0) or `unix:PATH`.
    pub fn local_addr(&self) -> Result<ListenAddr> {
        match self {
            Listen::Tcp(l) => l
                .local_addr()
                .map(|a| ListenAddr::Tcp(a.to_string()))
                .map_err(|e| RpcError::io("the listener's address", e)),
            Listen::Unix(u) => Ok(ListenAddr::Unix(u.path().to_path_buf())),
        }
    }
}

/// A listening Unix socket at a path, mode 0600; the file goes when this (or the server it was
/// handed to) does.
#[derive(Debug)]
pub struct UnixSocket {
    listener: tokio::net::UnixListener,
    file: SocketFile,
}

impl UnixSocket {
    /// Binds `path` (mode 0600), removing a stale socket there first and creating missing
    /// folders (0700). Needs a Tokio runtime.
    pub fn bind(path: &Path) -> Result<UnixSocket> {
        let shown = path.display();
        remove_if_stale(path)?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| RpcError::io(format!("creating the folder of {shown}"), e))?;
        let private = tempfile::Builder::new()
            .prefix(".ws")
            .rand_bytes(6)
            .tempdir_in(parent)
            .map_err(|e| RpcError::io(format!("creating a folder beside {shown}"), e))?;
        let tmp = private.path().join("s");
        let std_listener = std::os::unix::net::UnixListener::bind(&tmp)
            .map_err(|e| RpcError::io(format!("binding a socket for {shown}"), e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| RpcError::io(format!("setting the mode of {shown}"), e))?;
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                RpcError::SocketTaken(format!(
                    "{shown} appeared while binding it: another server is starting there"
                ))
            } else {
                RpcError::io(format!("linking the socket to {shown}"), e)
            }
        })?;
        // `private` (and the temporary name in it) is removed on drop.
        drop(private);
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| RpcError::io(format!("checking {shown}"), e))?;
        let file = SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        std_listener
            .set_nonblocking(true)
            .map_err(|e| RpcError::io(format!("socket {shown}"), e))?;
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .map_err(|e| RpcError::io(format!("socket {shown}"), e))?;
        Ok(UnixSocket { listener, file })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// The listener, and the guard that removes the socket file when dropped.
    fn into_parts(self) -> (tokio::net::UnixListener, SocketFile) {
        (self.listener, self.file)
    }
}

/// Removes `path` if it is a socket nobody answers on; refuses anything else that is there.
fn remove_if_stale(path: &Path) -> Result<()> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RpcError::io(format!("checking {shown}"), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(RpcError::SocketTaken(format!(
            "{shown} exists and is not a socket: refusing to replace it"
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(RpcError::SocketTaken(format!(
            "{shown} is in use: a server answers on it"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %shown, "removing a stale socket");
            std::fs::remove_file(path)
                .map_err(|e| RpcError::io(format!("removing the stale socket {shown}"), e))
        }
        Err(e) => Err(RpcError::io(format!("checking the socket {shown}"), e)),
    }
}

/// Removes the socket file on drop, if the path still is this socket (not a newer one).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "removing the socket");
                }
            }
            _ => {}
        }
    }
}

/// How a TCP listener serves TLS: fixed at start (tonic's, from files), or replaceable while
/// serving ([`crate::swap::SwappableTls`], a registered agent's renewed certificate).
#[derive(Debug)]
pub enum ServerTls {
    Fixed(ServerTlsConfig),
    Swappable(crate::swap::SwappableTls),
}

impl From<ServerTlsConfig> for ServerTls {
    fn from(c: ServerTlsConfig) -> ServerTls {
        ServerTls::Fixed(c)
    }
}

impl From<crate::swap::SwappableTls> for ServerTls {
    fn from(c: crate::swap::SwappableTls) -> ServerTls {
        ServerTls::Swappable(c)
    }
}

/// Serves `routes` (a gRPC service, such as the agent's) on `listen` until `shutdown` resolves:
/// TCP (with `TCP_NODELAY` on each accepted socket, and TLS when `tls` is given) or a Unix socket
/// (whose file is removed when serving ends). TLS over a Unix socket is refused: the socket file
/// is 0600, so only its owner can connect anyway.
pub async fn serve(
    listen: Listen,
    tls: Option<ServerTls>,
    routes: Routes,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    let mut builder = Server::builder();
    if let (Some(_), Listen::Unix(sock)) = (&tls, &listen) {
        return Err(RpcError::BadSettings(format!(
            "TLS over the Unix socket {} is not supported: the socket is 0600, so only its \
             owner can connect",
            sock.path().display()
        )));
    }
    let swappable = match tls {
        Some(ServerTls::Fixed(tls)) => {
            builder = builder.tls_config(tls).map_err(|e| {
                RpcError::Tls(format!("the server's TLS configuration: {}", chain(&e)))
            })?;
            None
        }
        Some(ServerTls::Swappable(s)) => Some(s),
        None => None,
    };
    let router = builder.add_routes(routes);
    let served = match (listen, swappable) {
        (Listen::Tcp(listener), Some(tls)) => {
            router
                .serve_with_incoming_shutdown(crate::swap::incoming(listener, tls), shutdown)
                .await
        }
        (Listen::Tcp(listener), None) => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        (Listen::Unix(sock), _) => {
            let (listener, _file) = sock.into_parts();
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    shutdown,
                )
                .await
        }
    };
    served.map_err(|e| RpcError::Transport(format!("serving gRPC: {}", chain(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "127.0.0.1:9090".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:9090".into())
        );
        assert_eq!(
            "[::1]:0".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("[::1]:0".into())
        );
        assert_eq!(
            "localhost:9090".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("localhost:9090".into())
        );
        assert_eq!(
            "unix:/run/wrenn/agent.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/run/wrenn/agent.sock".into())
        );
        assert_eq!(
            "unix:///run/a.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/run/a.sock".into())
        );
        assert_eq!(
            "unix:rel.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("rel.sock".into())
        );
        for (bad, why) in [
            ("", "missing :port"),
            ("9090", "missing :port"),
            (":9090", "missing host"),
            ("host:", "not a port"),
            ("host:70000", "not a port"),
            ("::1:9090", "brackets"),
            ("[nope]:1", "not an IPv6"),
            ("http://127.0.0.1:9090", "not a URL"),
            ("unix:", "empty"),
            ("unix:/run/", "folder"),
            ("a b:1", "not a host"),
        ] {
            let e = bad.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("unix:/path"), "{bad}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1:1", "unix:/a/b.sock", "[::1]:2"] {
            assert_eq!(s.parse::<ListenAddr>().unwrap().to_string(), s);
        }
    }

    #[tokio::test]
    async fn refuses_live_sockets_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let first = UnixSocket::bind(&path).unwrap();
        let e = UnixSocket::bind(&path).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        drop(first);
        assert!(!path.exists(), "the socket goes with its listener");

        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = UnixSocket::bind(&file).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert!(file.exists());

        // A socket nobody listens on any more is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let again = UnixSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Only the socket is left beside it (the private folder is gone).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        drop(again);
    }
}
