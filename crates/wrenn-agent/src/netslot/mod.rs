//! Network slots: one network namespace per capsule, in which QEMU's TAP lives.
//!
//! Slot `n` (1..=MAX_SLOT):
//! * netns `wrenn-n`; veth pair `wn-n` (host) ⇄ `veth0` (netns), a /31 from 10.200.0.0/16:
//!   host side `10.200.0.0 + 2n`, netns side `+1` (the capsule's address as the host sees it);
//! * TAP `tap0` in the netns, `169.254.0.22/30`; the guest is `169.254.0.21` in every slot, so
//!   any snapshot restores into any slot;
//! * nftables in the netns: DNAT of everything sent to the slot address to the guest, SNAT of
//!   the guest's traffic to the slot address, the guest may talk to the netns only to ask the
//!   slot resolver (UDP `169.254.0.22:53`, [`crate::dns`]); its new connections go through
//!   chain `egress`, rewritten whenever the capsule's egress changes: off — none; on — not to
//!   set `deny` (its CIDRs), and with an allow list only to set `allow` (its CIDRs) or
//!   `dns_allow` (addresses the resolver answered for its domain names, with timeouts);
//! * nftables on the host (table `inet wrenn`, shared by all slots): traffic from any `wn-*`
//!   may not reach the host's own addresses, other slots or loopback, nor (unless the
//!   operator allowed them, [`set_host_rules`]) private, link-local or CGNAT ranges; no IPv6;
//!   egress is masqueraded.
//!
//! Every step is recorded with its undo, so a failed setup leaves nothing behind, and
//! [`cleanup_orphans`] removes whatever a crashed agent left.
//!
//! `rules` writes the nftables rules (host-wide and per slot), `pool` hands out slot indexes
//! and finds and removes slots.

pub mod dns;
mod pool;
mod rules;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Stdio,
    sync::{Arc, RwLock},
};

use wrenn_types::egress::EgressPolicy;

use crate::error::{AgentError, Result};

pub use pool::{cleanup_orphans, existing_slots, free_build_slot, remove, SlotPool};
use rules::egress_script;
pub use rules::{
    allow_answered, ensure_host_rules, parse_private_allow, set_host_rules, PRIVATE_RANGES,
};

/// A capsule's egress: on or off, and its lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    pub on: bool,
    pub policy: EgressPolicy,
}

impl Egress {
    pub fn on() -> Egress {
        Egress {
            on: true,
            policy: EgressPolicy::default(),
        }
    }
}

/// Runs `f` on a thread inside network namespace `netns` (sockets it makes stay there).
pub async fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{netns}");
    let what = format!("entering netns {netns}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let run = || -> std::io::Result<T> {
            let ns = std::fs::File::open(&path)?;
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on this short-lived thread only, with a valid netns fd.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        };
        let _ = tx.send(run());
    });
    rx.await
        .map_err(|_| AgentError::Network(format!("{what}: the thread died")))?
        .map_err(|e| AgentError::io(what, e))
}

/// Highest slot index (a /31 per slot in 10.200.0.0/16).
pub const MAX_SLOT: u32 = 32_766;
pub const NETNS_PREFIX: &str = "wrenn-";
const VETH_PREFIX: &str = "wn-";
/// The TAP device inside every slot's netns.
pub const TAP: &str = "tap0";
const NS_VETH: &str = "veth0";

/// A slot's names and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAddrs {
    pub index: u32,
    pub netns: String,
    pub host_veth: String,
    /// Host side of the /31.
    pub host_ip: Ipv4Addr,
    /// Netns side of the /31: where the host reaches the capsule.
    pub capsule_ip: Ipv4Addr,
}

impl SlotAddrs {
    pub fn new(index: u32) -> Result<SlotAddrs> {
        if index == 0 || index > MAX_SLOT {
            return Err(AgentError::Network(format!("slot {index} out of range")));
        }
        let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + 2 * index;
        Ok(SlotAddrs {
            index,
            netns: format!("{NETNS_PREFIX}{index}"),
            host_veth: format!("{VETH_PREFIX}{index}"),
            host_ip: Ipv4Addr::from(base),
            capsule_ip: Ipv4Addr::from(base + 1),
        })
    }
}

async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| AgentError::io(format!("running {program}"), e))?;
    if let Some(text) = stdin {
        use tokio::io::AsyncWriteExt;
        if let Some(mut s) = child.stdin.take() {
            s.write_all(text.as_bytes())
                .await
                .map_err(|e| AgentError::io(format!("writing to {program}"), e))?;
        }
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| AgentError::io(format!("running {program}"), e))?;
    if !out.status.success() {
        return Err(AgentError::Network(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn ip(args: &[&str]) -> Result<String> {
    run("ip", args, None).await
}

/// Several `ip` commands (one a line) in one `ip -batch` process, in `netns` or on the host.
async fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    let mut args = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-batch", "-"]);
    let mut script = lines.join("\n");
    script.push('\n');
    run("ip", &args, Some(&script)).await.map(|_| ())
}

/// Runs an nft script in `netns` (`None`: on the host). In a slot, `nft` is spawned from a
/// thread inside the netns (a child starts in its parent thread's namespaces): no
/// `ip netns exec` (a mount namespace and a sysfs mount per call).
async fn nft_in(netns: Option<&str>, script: &str) -> Result<()> {
    let Some(ns) = netns else {
        return run("nft", &["-f", "-"], Some(script)).await.map(|_| ());
    };
    let text = script.to_owned();
    let out = in_netns(ns, move || {
        use std::io::Write;
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    })
    .await?;
    if !out.status.success() {
        return Err(AgentError::Network(format!(
            "nft -f - in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Turns on IPv4 forwarding inside `netns` (its own `net.ipv4.ip_forward`, written from a
/// thread inside it).
async fn forward_in(netns: &str) -> Result<()> {
    in_netns(netns, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
    })
    .await
}

/// One undo step.
#[derive(Debug, Clone)]
enum Undo {
    DeleteNetns(String),
    DeleteLink(String),
}

/// A slot that exists. Call [`Slot::release`] to remove it.
#[derive(Debug)]
pub struct Slot {
    pub addrs: SlotAddrs,
    undo: Vec<Undo>,
    egress: Arc<RwLock<Egress>>,
    resolver: Option<dns::Resolver>,
}

impl Slot {
    /// Creates slot `index` with egress on (no lists) or off, without a resolver (template
    /// builds). On failure nothing is left.
    pub async fn create(index: u32, egress: bool) -> Result<Slot> {
        let egress = if egress {
            Egress::on()
        } else {
            Egress::default()
        };
        Slot::create_with(index, egress, None).await
    }

    /// Creates slot `index` with `egress`, and its resolver forwarding to `upstreams` (None:
    /// no resolver). On failure nothing is left.
    pub async fn create_with(
        index: u32,
        egress: Egress,
        upstreams: Option<Arc<Vec<SocketAddr>>>,
    ) -> Result<Slot> {
        let addrs = SlotAddrs::new(index)?;
        let mut slot = Slot {
            addrs,
            undo: Vec::new(),
            egress: Arc::new(RwLock::new(egress.clone())),
            resolver: None,
        };
        let built = async {
            slot.build(&egress).await?;
            if let Some(up) = upstreams {
                slot.resolver =
                    Some(dns::Resolver::start(&slot.addrs.netns, slot.egress.clone(), up).await?);
            }
            Ok(())
        }
        .await;
        match built {
            Ok(()) => Ok(slot),
            Err(e) => {
                slot.release().await;
                Err(e)
            }
        }
    }

    /// Takes over slot `index` left by a previous agent (re-creating it if it is gone): its
    /// egress rules are written again and its resolver restarted.
    pub async fn adopt(
        index: u32,
        egress: Egress,
        upstreams: Option<Arc<Vec<SocketAddr>>>,
    ) -> Result<Slot> {
        let addrs = SlotAddrs::new(index)?;
        if existing_slots().await?.contains(&index) {
            let mut slot = Slot {
                undo: vec![
                    Undo::DeleteNetns(addrs.netns.clone()),
                    Undo::DeleteLink(addrs.host_veth.clone()),
                ],
                addrs,
                egress: Arc::new(RwLock::new(egress.clone())),
                resolver: None,
            };
            if let Err(e) = nft_in(Some(&slot.addrs.netns), &egress_script(&egress, false)).await {
                tracing::warn!(netns = %slot.addrs.netns, error = %e, "rewriting an adopted slot's egress rules");
            }
            if let Some(up) = upstreams {
                slot.resolver =
                    Some(dns::Resolver::start(&slot.addrs.netns, slot.egress.clone(), up).await?);
            }
            return Ok(slot);
        }
        Slot::create_with(index, egress, upstreams).await
    }

    /// The slot's egress now.
    pub fn egress(&self) -> Egress {
        self.egress
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the slot's egress at once (one nft transaction); addresses the resolver let in
    /// are forgotten when the allow list's domain names change.
    pub async fn set_egress(&self, egress: Egress) -> Result<()> {
        let flush = self.egress().policy.allow_domains() != egress.policy.allow_domains();
        nft_in(Some(&self.addrs.netns), &egress_script(&egress, flush)).await?;
        *self.egress.write().unwrap_or_else(|e| e.into_inner()) = egress;
        Ok(())
    }

    /// Four processes where there was one a step (fourteen): the netns, then two `ip -batch`
    /// (the host side: veth pair and address; the netns side: addresses, route, TAP), the
    /// netns' forwarding (no process) and one `nft` for its rules.
    async fn build(&mut self, egress: &Egress) -> Result<()> {
        let a = self.addrs.clone();
        let ns = a.netns.as_str();
        ip(&["netns", "add", ns]).await?;
        self.undo.push(Undo::DeleteNetns(a.netns.clone()));
        // Undone even if the batch stops before making it: removing what is not there only
        // logs.
        self.undo.push(Undo::DeleteLink(a.host_veth.clone()));
        ip_batch(
            None,
            &[
                format!(
                    "link add {} type veth peer name {NS_VETH} netns {ns}",
                    a.host_veth
                ),
                format!("addr add {}/31 dev {}", a.host_ip, a.host_veth),
                format!("link set {} up", a.host_veth),
            ],
        )
        .await?;
        ip_batch(
            Some(ns),
            &[
                "link set lo up".into(),
                format!("addr add {}/31 dev {NS_VETH}", a.capsule_ip),
                format!("link set {NS_VETH} up"),
                format!("route add default via {}", a.host_ip),
                format!("tuntap add dev {TAP} mode tap"),
                format!("addr add 169.254.0.22/30 dev {TAP}"),
                format!("link set {TAP} up"),
            ],
        )
        .await?;
        forward_in(ns).await?;
        let script = format!(
            r#"table ip wrenn {{
  set allow {{ type ipv4_addr; flags interval; auto-merge; }}
  set deny {{ type ipv4_addr; flags interval; auto-merge; }}
  set dns_allow {{ type ipv4_addr; flags timeout; }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    iifname "{NS_VETH}" ip daddr {cap} dnat to 169.254.0.21
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    oifname "{NS_VETH}" ip saddr 169.254.0.21 snat to {cap}
  }}
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname "{TAP}" ct state established,related accept
    iifname "{TAP}" ip saddr 169.254.0.21 ip daddr {resolver} udp dport 53 accept
    iifname "{TAP}" drop
  }}
  chain egress {{
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "{TAP}" ip saddr != 169.254.0.21 drop
    iifname "{TAP}" jump egress
  }}
}}
{egress}"#,
            cap = a.capsule_ip,
            resolver = dns::SLOT_RESOLVER,
            egress = egress_script(egress, false),
        );
        nft_in(Some(ns), &script).await?;
        Ok(())
    }

    /// Removes everything the slot made, newest first; errors are logged, never fatal.
    pub async fn release(&mut self) {
        self.resolver = None;
        while let Some(step) = self.undo.pop() {
            let result = match &step {
                Undo::DeleteNetns(ns) => ip(&["netns", "delete", ns]).await,
                Undo::DeleteLink(link) => ip(&["link", "delete", link]).await,
            };
            if let Err(e) = result {
                tracing::debug!(?step, error = %e, "undo step failed (already gone?)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_out_each_slot_once() {
        let pool = SlotPool::new(5..=7, [6]);
        assert_eq!(pool.take().unwrap(), 5);
        assert_eq!(pool.take().unwrap(), 7);
        assert!(matches!(pool.take(), Err(AgentError::NoFreeSlot)));
        pool.free(5);
        assert_eq!(pool.take().unwrap(), 5);
    }

    #[test]
    fn slot_addresses() {
        let a = SlotAddrs::new(1).unwrap();
        assert_eq!(a.host_ip, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(a.capsule_ip, Ipv4Addr::new(10, 200, 0, 3));
        let b = SlotAddrs::new(200).unwrap();
        assert_eq!(b.host_ip, Ipv4Addr::new(10, 200, 1, 144));
        let last = SlotAddrs::new(MAX_SLOT).unwrap();
        assert_eq!(last.capsule_ip, Ipv4Addr::new(10, 200, 255, 253));
        assert!(SlotAddrs::new(0).is_err());
        assert!(SlotAddrs::new(MAX_SLOT + 1).is_err());
    }
}
