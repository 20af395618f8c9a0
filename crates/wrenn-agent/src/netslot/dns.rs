//! The slot resolver: a small DNS forwarder per network slot, listening on UDP
//! `169.254.0.22:53` inside the slot's netns (the guest's only name server). It forwards each
//! query from the host to the upstream name servers and, before answering, puts the IPv4
//! addresses answered for a name the capsule's allow list names into the slot's nft set
//! `dns_allow` (timeout: the answer's TTL, at least [`MIN_TTL_SECS`]); a name its deny list
//! names is answered `REFUSED` without asking upstream.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::net::UdpSocket;

use super::{allow_answered, in_netns, Egress};
use crate::error::{AgentError, Result};

/// Shortest time an answered address stays allowed (a TTL of 0 would race the guest's
/// connection).
pub const MIN_TTL_SECS: u32 = 10;
/// Longest: a day.
pub const MAX_TTL_SECS: u32 = 86_400;
/// The resolver's address inside every slot (the TAP's own address).
pub const SLOT_RESOLVER: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 22);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

const RCODE_SERVFAIL: u8 = 2;
const RCODE_REFUSED: u8 = 5;

/// The upstream name servers: `explicit`, or else the host's `/etc/resolv.conf` ones (any,
/// loopback included: the resolver asks them from the host).
pub fn upstreams(explicit: &[SocketAddr]) -> Vec<SocketAddr> {
    if !explicit.is_empty() {
        return explicit.to_vec();
    }
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A query's id, name (lower case, no trailing dot), and where its question ends.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    pub name: String,
    pub qtype: u16,
    pub end: usize,
}

/// Reads the (possibly compressed) name at `pos`; returns it and the offset after it.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut hops = 0;
    loop {
        let len = *msg.get(pos)? as usize;
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            end.get_or_insert(pos + 2);
            hops += 1;
            if hops > 32 || ptr >= msg.len() {
                return None;
            }
            pos = ptr;
            continue;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        if len == 0 {
            let end = end.unwrap_or(pos + 1);
            return Some((labels.join("."), end));
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        if labels.len() > 127 {
            return None;
        }
        pos += 1 + len;
    }
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// The first question of a query (one that is a query: QR clear, QDCOUNT ≥ 1).
pub fn parse_question(msg: &[u8]) -> Option<Question> {
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 != 0 || u16_at(msg, 4)? == 0 {
        return None;
    }
    let (name, pos) = read_name(msg, 12)?;
    let qtype = u16_at(msg, pos)?;
    u16_at(msg, pos + 2)?;
    Some(Question {
        id,
        name,
        qtype,
        end: pos + 4,
    })
}

/// The IPv4 addresses (type A, class IN) in an answer's answer section, with their TTLs.
pub fn answer_addrs(msg: &[u8]) -> Vec<(Ipv4Addr, u32)> {
    let mut out = Vec::new();
    let mut parse = || -> Option<()> {
        let qd = u16_at(msg, 4)?;
        let an = u16_at(msg, 6)?;
        let mut pos = 12;
        for _ in 0..qd {
            pos = read_name(msg, pos)?.1 + 4;
        }
        for _ in 0..an {
            pos = read_name(msg, pos)?.1;
            let rtype = u16_at(msg, pos)?;
            let class = u16_at(msg, pos + 2)?;
            let ttl = u32::from_be_bytes(msg.get(pos + 4..pos + 8)?.try_into().ok()?);
            let len = u16_at(msg, pos + 8)? as usize;
            let data = msg.get(pos + 10..pos + 10 + len)?;
            if rtype == 1 && class == 1 && len == 4 {
                out.push((Ipv4Addr::new(data[0], data[1], data[2], data[3]), ttl));
            }
            pos += 10 + len;
        }
        Some(())
    };
    let _ = parse();
    out
}

/// An answer to `query` with no records and `rcode` (the question kept, nothing else).
pub fn error_reply(query: &[u8], q: &Question, rcode: u8) -> Vec<u8> {
    let mut r = query[..q.end].to_vec();
    // QR, the query's opcode and RD, RA, and the code.
    r[2] = 0x80 | (query[2] & 0x79);
    r[3] = 0x80 | (rcode & 0x0f);
    r[4..6].copy_from_slice(&1u16.to_be_bytes());
    r[6..12].fill(0);
    r
}

/// Asks the upstream servers in turn; the first answer with the query's id wins.
async fn forward(query: &[u8], id: u16, upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.connect(up).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65_535];
        let got = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                if n >= 12 && u16_at(&buf, 0) == Some(id) && buf[2] & 0x80 != 0 {
                    return Some(buf[..n].to_vec());
                }
            }
        })
        .await;
        match got {
            Ok(Some(answer)) => return Some(answer),
            _ => tracing::debug!(%up, "no answer from an upstream name server"),
        }
    }
    None
}

/// A slot's resolver task; stops when dropped.
#[derive(Debug)]
pub struct Resolver {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Resolver {
    /// Binds `169.254.0.22:53` in `netns` and serves it.
    pub async fn start(
        netns: &str,
        egress: Arc<RwLock<Egress>>,
        upstreams: Arc<Vec<SocketAddr>>,
    ) -> Result<Resolver> {
        let addr = SocketAddr::from((SLOT_RESOLVER, 53));
        // A resolver of a previous owner (an agent handing over) may still be closing.
        let mut tries = 0;
        let std_sock = loop {
            let bound = in_netns(netns, move || {
                let s = std::net::UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .await;
            match bound {
                Err(AgentError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse && tries < 50 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        let sock = Arc::new(
            UdpSocket::from_std(std_sock)
                .map_err(|e| AgentError::io("serving the slot resolver", e))?,
        );
        let netns = netns.to_string();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = match sock.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(%netns, error = %e, "slot resolver stopped");
                        return;
                    }
                };
                let query = buf[..n].to_vec();
                let sock = sock.clone();
                let egress = egress.clone();
                let upstreams = upstreams.clone();
                let netns = netns.clone();
                tokio::spawn(async move {
                    if let Some(reply) = answer(&netns, &query, &egress, &upstreams).await {
                        let _ = sock.send_to(&reply, from).await;
                    }
                });
            }
        });
        Ok(Resolver { task })
    }
}

/// The reply to one query (None: not a query; dropped).
async fn answer(
    netns: &str,
    query: &[u8],
    egress: &RwLock<Egress>,
    upstreams: &[SocketAddr],
) -> Option<Vec<u8>> {
    let q = parse_question(query)?;
    let (denied, fill) = {
        let e = egress.read().unwrap_or_else(|e| e.into_inner());
        let denied = !e.on || e.policy.denies_name(&q.name);
        (
            denied,
            e.policy.default_deny() && e.policy.allows_name(&q.name),
        )
    };
    if denied {
        tracing::debug!(%netns, name = %q.name, "refused a denied name");
        return Some(error_reply(query, &q, RCODE_REFUSED));
    }
    let Some(reply) = forward(query, q.id, upstreams).await else {
        return Some(error_reply(query, &q, RCODE_SERVFAIL));
    };
    if fill {
        let addrs: Vec<(Ipv4Addr, u32)> = answer_addrs(&reply)
            .into_iter()
            .map(|(a, ttl)| (a, ttl.clamp(MIN_TTL_SECS, MAX_TTL_SECS)))
            .collect();
        if !addrs.is_empty() {
            if let Err(e) = allow_answered(netns, &addrs).await {
                tracing::warn!(%netns, name = %q.name, error = %e, "filling the slot's allowed set");
                return Some(error_reply(query, &q, RCODE_SERVFAIL));
            }
        }
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, id: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    #[test]
    fn parses_a_query_and_an_answer_with_compression() {
        let q = query("Api.Example.com", 0x1234);
        let parsed = parse_question(&q).unwrap();
        assert_eq!(parsed.id, 0x1234);
        assert_eq!(parsed.name, "api.example.com");
        assert_eq!(parsed.qtype, 1);
        assert_eq!(parsed.end, q.len());

        // An answer: CNAME to www (compressed), then A 198.51.100.7 TTL 300.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[6..8].copy_from_slice(&2u16.to_be_bytes());
        a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6]);
        let cname_at = a.len();
        a.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 16]);
        a.extend_from_slice(&[
            0xc0,
            cname_at as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            1,
            44,
            0,
            4,
            198,
            51,
            100,
            7,
        ]);
        assert_eq!(answer_addrs(&a), [(Ipv4Addr::new(198, 51, 100, 7), 300)]);
        assert!(parse_question(&a).is_none(), "an answer is not a query");

        let r = error_reply(&q, &parsed, RCODE_REFUSED);
        assert_eq!(r.len(), q.len());
        assert_eq!(r[3] & 0x0f, RCODE_REFUSED);
        assert_ne!(r[2] & 0x80, 0);
    }

    #[test]
    fn malformed_messages_are_ignored() {
        assert!(parse_question(&[]).is_none());
        assert!(parse_question(&[0; 12]).is_none());
        // A pointer loop.
        let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_question(&m).is_none());
        // Truncated answers give no addresses (and no panic).
        let q = query("example.com", 1);
        for cut in 0..q.len() {
            let _ = parse_question(&q[..cut]);
            let _ = answer_addrs(&q[..cut]);
        }
    }
}
