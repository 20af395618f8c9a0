//! Reaching an agent's gRPC service: over TCP (plaintext or mutual TLS) or a Unix socket.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};
use wrenn_proto::agent::v1::agent_client::AgentClient;

use crate::{
    error::{chain, Result, RpcError},
    listen::{host_port, unix_path},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An agent's address: `unix:/path/to.sock`, `http://host:port`, `https://host:port`, or a
/// bare `host:port` (TLS when a TLS configuration is given, plaintext otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    Unix(PathBuf),
    Http(String),
    Https(String),
    HostPort(String),
}

impl FromStr for AgentEndpoint {
    type Err = RpcError;

    fn from_str(s: &str) -> Result<AgentEndpoint> {
        let bad = |why: &str| {
            RpcError::BadAddress(format!(
                "invalid agent address {s:?}: {why} (use unix:/path/to.sock, http://host:port, \
                 https://host:port or host:port)"
            ))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(AgentEndpoint::Unix(unix_path(path).map_err(|w| bad(&w))?));
        }
        let (make, authority): (fn(String) -> AgentEndpoint, &str) =
            if let Some(a) = s.strip_prefix("http://") {
                (AgentEndpoint::Http, a)
            } else if let Some(a) = s.strip_prefix("https://") {
                (AgentEndpoint::Https, a)
            } else if let Some((scheme, _)) = s.split_once("://") {
                return Err(bad(&format!("unsupported scheme {scheme:?}")));
            } else {
                (AgentEndpoint::HostPort, s)
            };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('/') {
            return Err(bad("an agent address has no path"));
        }
        host_port(authority).map_err(|w| bad(&w))?;
        // What tonic will parse later must parse now.
        authority
            .parse::<Uri>()
            .map_err(|e| bad(&format!("not a host:port ({e})")))?;
        Ok(make(authority.to_string()))
    }
}

impl fmt::Display for AgentEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentEndpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            AgentEndpoint::Http(a) => write!(f, "http://{a}"),
            AgentEndpoint::Https(a) => write!(f, "https://{a}"),
            AgentEndpoint::HostPort(a) => f.write_str(a),
        }
    }
}

/// Connects to the agent at `endpoint`. `tls` (see [`crate::tls::client_tls_config`]) is
/// required for `https://`, refused for `http://` and Unix sockets, and picks TLS for a bare
/// `host:port`.
pub async fn connect(
    endpoint: &AgentEndpoint,
    tls: Option<ClientTlsConfig>,
) -> Result<AgentClient<Channel>> {
    let fail = |e: tonic::transport::Error| {
        RpcError::Transport(format!("connecting to {endpoint}: {}", chain(&e)))
    };
    let channel = match prepare(endpoint, tls, CONNECT_TIMEOUT)? {
        Prepared::Unix(e, path) => e
            .connect_with_connector(unix_connector(path))
            .await
            .map_err(fail)?,
        Prepared::Tcp(e) => e.connect().await.map_err(fail)?,
    };
    Ok(AgentClient::new(channel))
}

/// A client of the agent at `endpoint` that connects on its first call (and again after the
/// connection breaks), each attempt bounded by `connect_timeout`: a silent host fails its
/// calls within that time instead of holding them. `tls` as for [`connect`].
pub fn connect_lazy(
    endpoint: &AgentEndpoint,
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
) -> Result<AgentClient<Channel>> {
    let channel = match prepare(endpoint, tls, connect_timeout)? {
        Prepared::Unix(e, path) => e.connect_with_connector_lazy(unix_connector(path)),
        Prepared::Tcp(e) => e.connect_lazy(),
    };
    Ok(AgentClient::new(channel))
}

/// An endpoint, ready to connect.
enum Prepared {
    Unix(Endpoint, PathBuf),
    Tcp(Endpoint),
}

fn prepare(
    endpoint: &AgentEndpoint,
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
) -> Result<Prepared> {
    let fail = |e: tonic::transport::Error| {
        RpcError::Transport(format!("connecting to {endpoint}: {}", chain(&e)))
    };
    let refuse = |why: &str| RpcError::BadSettings(format!("agent {endpoint}: {why}"));
    Ok(match (endpoint, tls) {
        (AgentEndpoint::Unix(_), Some(_)) => {
            return Err(refuse(
                "TLS over a Unix socket is not supported (the socket file's mode guards it)",
            ))
        }
        (AgentEndpoint::Http(_), Some(_)) => {
            return Err(refuse(
                "http:// with a TLS configuration: use https:// or host:port",
            ))
        }
        (AgentEndpoint::Https(_), None) => {
            return Err(refuse(
                "https:// needs a TLS configuration (CA and client certificate)",
            ))
        }
        // The URI only satisfies the HTTP layer; the connector ignores it.
        (AgentEndpoint::Unix(path), None) => Prepared::Unix(
            Endpoint::from_static("http://localhost").connect_timeout(connect_timeout),
            path.clone(),
        ),
        (AgentEndpoint::Http(a) | AgentEndpoint::HostPort(a), None) => {
            Prepared::Tcp(tcp_endpoint(format!("http://{a}"), connect_timeout).map_err(fail)?)
        }
        (AgentEndpoint::Https(a) | AgentEndpoint::HostPort(a), Some(tls)) => Prepared::Tcp(
            tcp_endpoint(format!("https://{a}"), connect_timeout)
                .and_then(|e| e.tls_config(tls))
                .map_err(fail)?,
        ),
    })
}

/// Connects to the Unix socket at `path`, whatever the URI.
fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            tokio::net::UnixStream::connect(path)
                .await
                .map(TokioIo::new)
        }
    })
}

fn tcp_endpoint(
    uri: String,
    connect_timeout: Duration,
) -> std::result::Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_addresses() {
        let ok = [
            (
                "unix:/run/wrenn/agent.sock",
                AgentEndpoint::Unix("/run/wrenn/agent.sock".into()),
            ),
            (
                "unix:///run/a.sock",
                AgentEndpoint::Unix("/run/a.sock".into()),
            ),
            (
                "http://127.0.0.1:9090",
                AgentEndpoint::Http("127.0.0.1:9090".into()),
            ),
            (
                "http://127.0.0.1:9090/",
                AgentEndpoint::Http("127.0.0.1:9090".into()),
            ),
            (
                "https://agent-1.example:9090",
                AgentEndpoint::Https("agent-1.example:9090".into()),
            ),
            (
                "https://[::1]:9090",
                AgentEndpoint::Https("[::1]:9090".into()),
            ),
            (
                "localhost:9090",
                AgentEndpoint::HostPort("localhost:9090".into()),
            ),
            ("10.0.0.7:1", AgentEndpoint::HostPort("10.0.0.7:1".into())),
        ];
        for (s, want) in ok {
            let got: AgentEndpoint = s.parse().unwrap();
            assert_eq!(got, want, "{s}");
        }
        assert_eq!(
            "https://h:1".parse::<AgentEndpoint>().unwrap().to_string(),
            "https://h:1"
        );
        assert_eq!(
            "unix:/a.sock".parse::<AgentEndpoint>().unwrap().to_string(),
            "unix:/a.sock"
        );
    }

    #[test]
    fn bad_agent_addresses_are_clear_errors() {
        for (bad, why) in [
            ("", "missing :port"),
            ("localhost", "missing :port"),
            ("https://agent", "missing :port"),
            ("http://h:99999", "not a port"),
            ("ftp://h:1", "unsupported scheme \"ftp\""),
            ("grpc://h:1", "unsupported scheme"),
            ("http://h:1/path", "no path"),
            ("https://:1", "missing host"),
            ("::1:9090", "brackets"),
            ("unix:", "empty"),
            ("h st:1", "not a host"),
            ("user@h:1", "not a host"),
        ] {
            let e = bad.parse::<AgentEndpoint>().unwrap_err();
            assert!(matches!(e, RpcError::BadAddress(_)), "{bad}: {e:?}");
            let e = e.to_string();
            assert!(e.contains(why) && e.contains("unix:/path"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn mismatched_tls_is_refused_before_connecting() {
        let tls = ClientTlsConfig::new();
        for (addr, with_tls, why) in [
            ("unix:/nonexistent.sock", true, "Unix socket"),
            ("http://127.0.0.1:1", true, "use https://"),
            ("https://127.0.0.1:1", false, "needs a TLS configuration"),
        ] {
            let ep: AgentEndpoint = addr.parse().unwrap();
            let e = connect(&ep, with_tls.then(|| tls.clone()))
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{addr}: {e}");
        }
        let ep: AgentEndpoint = "unix:/nonexistent/wrenn.sock".parse().unwrap();
        let e = connect(&ep, None).await.unwrap_err().to_string();
        assert!(e.contains("unix:/nonexistent/wrenn.sock"), "{e}");
    }
}
