//! The nftables rules: the host-wide table every slot relies on (`inet wrenn`) and a slot's
//! `egress` chain with its `allow`/`deny`/`dns_allow` sets.

use std::net::Ipv4Addr;

use wrenn_types::egress::Rule;

use super::{nft_in, run, Egress, VETH_PREFIX};
use crate::error::{AgentError, Result};

/// Ranges a capsule never reaches unless the operator allows them: RFC 1918, link-local
/// (metadata services), CGNAT, and "this network".
pub const PRIVATE_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
];

/// Ranges a capsule never reaches at all: other slots, loopback, multicast and reserved.
const NEVER_RANGES: &str = "10.200.0.0/16, 127.0.0.0/8, 224.0.0.0/4, 240.0.0.0/4";

/// Parses the operator's `--egress-allow-private` list: IPv4 CIDRs (capsules have no IPv6).
pub fn parse_private_allow(list: &[String]) -> Result<Vec<String>> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| match Rule::parse(s) {
            Ok(r @ Rule::V4(..)) => Ok(r.to_string()),
            Ok(Rule::V6(..)) => Err(AgentError::BadPrivateRange(format!(
                "{s:?}: capsules have no IPv6 egress; only IPv4 ranges can be allowed"
            ))),
            Ok(Rule::Domain(_)) | Err(_) => Err(AgentError::BadPrivateRange(format!(
                "{s:?} is not an IPv4 CIDR"
            ))),
        })
        .collect()
}

/// The host-wide rules every slot relies on, if no agent set them yet (template builds);
/// also turns on IPv4 forwarding.
pub async fn ensure_host_rules() -> Result<()> {
    if run("nft", &["list", "table", "inet", "wrenn"], None)
        .await
        .is_ok()
    {
        return std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| AgentError::io("enabling IPv4 forwarding", e));
    }
    set_host_rules(&[]).await
}

/// (Re)writes the host-wide rules, with `allow_private` (IPv4 CIDRs, see
/// [`parse_private_allow`]) the private ranges the operator lets capsules reach; also turns
/// on IPv4 forwarding.
pub async fn set_host_rules(allow_private: &[String]) -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| AgentError::io("enabling IPv4 forwarding", e))?;
    let allowed = if allow_private.is_empty() {
        String::new()
    } else {
        format!(
            "    iifname \"{VETH_PREFIX}*\" ip daddr {{ {} }} accept\n",
            allow_private.join(", ")
        )
    };
    let private = PRIVATE_RANGES.join(", ");
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
    iifname "{VETH_PREFIX}*" ip daddr {{ {NEVER_RANGES} }} drop
    iifname "{VETH_PREFIX}*" meta nfproto ipv6 drop
{allowed}    iifname "{VETH_PREFIX}*" ip daddr {{ {private} }} drop
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

/// The script that makes the slot's `egress` chain and `allow`/`deny` sets say `egress`;
/// `flush_answers` also forgets the addresses the resolver let in.
pub(super) fn egress_script(egress: &Egress, flush_answers: bool) -> String {
    let mut s = String::from(
        "flush chain ip wrenn egress\nflush set ip wrenn allow\nflush set ip wrenn deny\n",
    );
    if flush_answers {
        s.push_str("flush set ip wrenn dns_allow\n");
    }
    let v4 = |rules: Vec<Rule>| -> Vec<String> {
        rules
            .into_iter()
            .filter(|r| matches!(r, Rule::V4(..)))
            .map(|r| r.to_string())
            .collect()
    };
    let allow = v4(egress.policy.allow_rules());
    let deny = v4(egress.policy.deny_rules());
    if !allow.is_empty() {
        s.push_str(&format!(
            "add element ip wrenn allow {{ {} }}\n",
            allow.join(", ")
        ));
    }
    if !deny.is_empty() {
        s.push_str(&format!(
            "add element ip wrenn deny {{ {} }}\n",
            deny.join(", ")
        ));
    }
    let rule = |r: &str| format!("add rule ip wrenn egress {r}\n");
    s.push_str(&rule("ct state established,related accept"));
    if !egress.on {
        s.push_str(&rule("drop"));
        return s;
    }
    s.push_str(&rule("ip daddr @deny drop"));
    if egress.policy.default_deny() {
        s.push_str(&rule("ip daddr @allow accept"));
        s.push_str(&rule("ip daddr @dns_allow accept"));
        s.push_str(&rule("drop"));
    }
    s
}

/// Lets the slot in `netns` reach `addrs` (answered by its resolver) for their TTLs (seconds).
pub async fn allow_answered(netns: &str, addrs: &[(Ipv4Addr, u32)]) -> Result<()> {
    // add + delete + add in one transaction: a known address gets its new timeout.
    let mut script = String::new();
    for (a, ttl) in addrs {
        script.push_str(&format!(
            "add element ip wrenn dns_allow {{ {a} timeout {ttl}s }}\n\
             delete element ip wrenn dns_allow {{ {a} }}\n\
             add element ip wrenn dns_allow {{ {a} timeout {ttl}s }}\n"
        ));
    }
    nft_in(Some(netns), &script).await
}
