//! Network slots: one network namespace per capsule, in which QEMU's TAP lives.
//!
//! Slot `n` (1..=MAX_SLOT):
//! * netns `wrenn-n`; veth pair `wn-n` (host) ⇄ `veth0` (netns), a /31 from 10.200.0.0/16:
//!   host side `10.200.0.0 + 2n`, netns side `+1` (the capsule's address as the host sees it);
//! * TAP `tap0` in the netns, `169.254.0.22/30`; the guest is `169.254.0.21` in every slot, so
//!   any snapshot restores into any slot;
//! * nftables in the netns: DNAT of everything sent to the slot address to the guest, SNAT of
//!   the guest's traffic to the slot address, the guest may not talk to the netns itself, and
//!   with egress off it may open no connection at all;
//! * nftables on the host (table `inet wrenn`, shared by all slots): traffic from any `wn-*`
//!   may not reach the host's own addresses, other slots, or link-local (metadata) addresses;
//!   egress is masqueraded.
//!
//! Every step is recorded with its undo, so a failed setup leaves nothing behind, and
//! [`cleanup_orphans`] removes whatever a crashed agent left.

use std::{net::Ipv4Addr, process::Stdio};

use crate::error::{AgentError, Result};

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

async fn nft_in(netns: Option<&str>, script: &str) -> Result<()> {
    match netns {
        Some(ns) => run("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(script)).await,
        None => run("nft", &["-f", "-"], Some(script)).await,
    }
    .map(|_| ())
}

/// The host-wide rules every slot relies on; idempotent. Also turns on IPv4 forwarding.
pub async fn ensure_host_rules() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| AgentError::io("enabling IPv4 forwarding", e))?;
    let script = format!(
        r#"table inet wrenn
delete table inet wrenn
table inet wrenn {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "{VETH_PREFIX}*" ct state established,related accept
    iifname "{VETH_PREFIX}*" drop
  }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{VETH_PREFIX}*" oifname "{VETH_PREFIX}*" drop
    iifname "{VETH_PREFIX}*" ip daddr {{ 169.254.0.0/16, 10.200.0.0/16, 127.0.0.0/8 }} drop
    iifname "{VETH_PREFIX}*" ip6 daddr ::/0 drop
    iifname "{VETH_PREFIX}*" accept
    oifname "{VETH_PREFIX}*" ct state established,related accept
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr 10.200.0.0/16 oifname != "{VETH_PREFIX}*" masquerade
  }}
}}
"#
    );
    nft_in(None, &script).await
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
}

impl Slot {
    /// Creates slot `index` with egress on or off. On failure nothing is left.
    pub async fn create(index: u32, egress: bool) -> Result<Slot> {
        let addrs = SlotAddrs::new(index)?;
        let mut slot = Slot {
            addrs,
            undo: Vec::new(),
        };
        match slot.build(egress).await {
            Ok(()) => Ok(slot),
            Err(e) => {
                slot.release().await;
                Err(e)
            }
        }
    }

    /// Takes over slot `index` left by a previous agent (re-creating it if it is gone).
    pub async fn adopt(index: u32, egress: bool) -> Result<Slot> {
        let addrs = SlotAddrs::new(index)?;
        if existing_slots().await?.contains(&index) {
            return Ok(Slot {
                undo: vec![
                    Undo::DeleteNetns(addrs.netns.clone()),
                    Undo::DeleteLink(addrs.host_veth.clone()),
                ],
                addrs,
            });
        }
        Slot::create(index, egress).await
    }

    async fn build(&mut self, egress: bool) -> Result<()> {
        let a = self.addrs.clone();
        let ns = a.netns.as_str();
        ip(&["netns", "add", ns]).await?;
        self.undo.push(Undo::DeleteNetns(a.netns.clone()));
        ip(&[
            "link",
            "add",
            &a.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            NS_VETH,
            "netns",
            ns,
        ])
        .await?;
        self.undo.push(Undo::DeleteLink(a.host_veth.clone()));
        ip(&[
            "addr",
            "add",
            &format!("{}/31", a.host_ip),
            "dev",
            &a.host_veth,
        ])
        .await?;
        ip(&["link", "set", &a.host_veth, "up"]).await?;
        let exec = |args: &[&str]| {
            let mut v = vec!["-n", ns];
            v.extend_from_slice(args);
            v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        for args in [
            exec(&["link", "set", "lo", "up"]),
            exec(&[
                "addr",
                "add",
                &format!("{}/31", a.capsule_ip),
                "dev",
                NS_VETH,
            ]),
            exec(&["link", "set", NS_VETH, "up"]),
            exec(&["route", "add", "default", "via", &a.host_ip.to_string()]),
            exec(&["tuntap", "add", "dev", TAP, "mode", "tap"]),
            exec(&["addr", "add", "169.254.0.22/30", "dev", TAP]),
            exec(&["link", "set", TAP, "up"]),
        ] {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            ip(&refs).await?;
        }
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
            None,
        )
        .await?;
        let egress_rule = if egress {
            ""
        } else {
            "    iifname \"tap0\" ct state new drop\n"
        };
        let script = format!(
            r#"table ip wrenn {{
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
    iifname "{TAP}" drop
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname "{TAP}" ip saddr != 169.254.0.21 drop
{egress_rule}  }}
}}
"#,
            cap = a.capsule_ip
        );
        nft_in(Some(ns), &script).await?;
        Ok(())
    }

    /// Removes everything the slot made, newest first; errors are logged, never fatal.
    pub async fn release(&mut self) {
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

/// The slots an agent hands out: its range, minus those in use.
#[derive(Debug)]
pub struct SlotPool {
    range: std::ops::RangeInclusive<u32>,
    used: std::sync::Mutex<std::collections::BTreeSet<u32>>,
}

impl SlotPool {
    pub fn new(range: std::ops::RangeInclusive<u32>, used: impl IntoIterator<Item = u32>) -> Self {
        SlotPool {
            range,
            used: std::sync::Mutex::new(used.into_iter().collect()),
        }
    }

    pub fn range(&self) -> &std::ops::RangeInclusive<u32> {
        &self.range
    }

    /// The lowest free slot, now taken.
    pub fn take(&self) -> Result<u32> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let n = self
            .range
            .clone()
            .find(|n| !used.contains(n))
            .ok_or_else(|| AgentError::ResourceExhausted("no free network slot".into()))?;
        used.insert(n);
        Ok(n)
    }

    pub fn free(&self, n: u32) {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&n);
    }
}

/// Slot indexes whose netns or host veth exist.
pub async fn existing_slots() -> Result<Vec<u32>> {
    let mut found = std::collections::BTreeSet::new();
    for line in ip(&["netns", "list"]).await?.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(n) = name.strip_prefix(NETNS_PREFIX).and_then(|n| n.parse().ok()) {
            found.insert(n);
        }
    }
    for line in ip(&["-o", "link", "show"]).await?.lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        let name = name.split('@').next().unwrap_or("");
        if let Some(n) = name.strip_prefix(VETH_PREFIX).and_then(|n| n.parse().ok()) {
            found.insert(n);
        }
    }
    Ok(found.into_iter().collect())
}

/// A free slot for a template build, taken from the top of the range (capsules take from the
/// bottom).
pub async fn free_build_slot() -> Result<u32> {
    let used = existing_slots().await?;
    (1..=MAX_SLOT)
        .rev()
        .find(|n| !used.contains(n))
        .ok_or_else(|| AgentError::Network("no free network slot".into()))
}

/// Removes whatever exists of slot `index` (its netns and host veth).
pub async fn remove(index: u32) -> Result<()> {
    let a = SlotAddrs::new(index)?;
    let _ = ip(&["netns", "delete", &a.netns]).await;
    let _ = ip(&["link", "delete", &a.host_veth]).await;
    Ok(())
}

/// Removes the netns and veth of every slot in `range` but not in `keep`.
pub async fn cleanup_orphans(
    keep: &[u32],
    range: &std::ops::RangeInclusive<u32>,
) -> Result<Vec<u32>> {
    let mut removed = Vec::new();
    for n in existing_slots().await? {
        if range.contains(&n) && !keep.contains(&n) {
            remove(n).await?;
            removed.push(n);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_out_each_slot_once() {
        let pool = SlotPool::new(5..=7, [6]);
        assert_eq!(pool.take().unwrap(), 5);
        assert_eq!(pool.take().unwrap(), 7);
        assert!(matches!(pool.take(), Err(AgentError::ResourceExhausted(_))));
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
