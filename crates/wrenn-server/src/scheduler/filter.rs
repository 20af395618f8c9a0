//! Which hosts may take a request, and, when none may, why not in words.
//!
//! The checks run in a fixed order (scope, online, tags, draining, room); the reason for "no
//! host" names the first check that left no host.

use wrenn_types::api::hosts::HostKind;

use super::reserves::Reserves;
use super::view::{Claims, HostView, NoHost, Request};

/// The first check a host fails for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// A BYOC team's request and not one of its hosts, or another team's BYOC host.
    Scope,
    Offline,
    Tags,
    Draining,
    /// A base template neither there nor buildable there.
    Template,
    Room,
}

/// Whether the host is of the request's kind: a BYOC team's own hosts for a BYOC team, the
/// platform's hosts for everyone else.
pub fn in_scope(host: &HostView, req: &Request) -> bool {
    if req.team_is_byoc {
        host.kind == HostKind::Byoc && host.team.as_deref() == Some(req.team.as_str())
    } else {
        host.kind == HostKind::Regular
    }
}

/// `Ok` when `host` may take `req` now (it fits with the reserves kept), else the first check
/// it fails.
pub fn check(host: &HostView, req: &Request, reserves: &Reserves) -> Result<(), Reject> {
    if !in_scope(host, req) {
        Err(Reject::Scope)
    } else if !host.online {
        Err(Reject::Offline)
    } else if !host.has_tags(&req.tags) {
        Err(Reject::Tags)
    } else if host.draining {
        Err(Reject::Draining)
    } else if !host.can_start(req.template.as_ref()) {
        Err(Reject::Template)
    } else if !reserves.admits(host, req.claims()) {
        Err(Reject::Room)
    } else {
        Ok(())
    }
}

/// Why `req` cannot go to the forced host `id` (`None` when it can).
pub fn refuse_forced(
    host: Option<&HostView>,
    id: &str,
    req: &Request,
    reserves: &Reserves,
) -> Option<NoHost> {
    let Some(host) = host else {
        return Some(no_host(format!("host {id} does not exist")));
    };
    let reason = match check(host, req, reserves).err()? {
        Reject::Scope if req.team_is_byoc => {
            format!("host {id} is not a BYOC host of team {}", req.team)
        }
        Reject::Scope => format!("host {id} is a BYOC host of another team"),
        Reject::Offline => format!("host {id} is not online"),
        Reject::Tags => {
            let missing: Vec<String> = req
                .tags
                .iter()
                .filter(|t| !host.tags.contains(t))
                .cloned()
                .collect();
            format!("host {id} lacks tags {}", tag_list(&missing))
        }
        Reject::Draining => format!("host {id} is draining"),
        Reject::Template => format!(
            "host {id} neither holds template {} nor can build it (its agent needs --envd)",
            template_name(req)
        ),
        Reject::Room if !host.has_free_slot() => {
            format!("host {id} has no free network slot")
        }
        Reject::Room => {
            let free = reserves.free(host);
            let short = shortfalls(free, req.claims());
            format!(
                "host {id} has {} free, the capsule needs {}",
                short.free, short.need
            )
        }
    };
    Some(no_host(reason))
}

/// Why no host in `hosts` may take `req` (called when none may).
pub fn explain(hosts: &[HostView], req: &Request, reserves: &Reserves) -> NoHost {
    let scoped: Vec<&HostView> = hosts.iter().filter(|h| in_scope(h, req)).collect();
    if scoped.is_empty() {
        return no_host(if req.team_is_byoc {
            format!("team {} has no BYOC host", req.team)
        } else {
            "no host is registered".to_owned()
        });
    }
    let online: Vec<&HostView> = scoped.into_iter().filter(|h| h.online).collect();
    let mut what = if req.team_is_byoc {
        format!("online BYOC host of team {}", req.team)
    } else {
        "online host".to_owned()
    };
    if online.is_empty() {
        return no_host(if req.team_is_byoc {
            format!("team {} has no online BYOC host", req.team)
        } else {
            "no host is online".to_owned()
        });
    }
    if !req.tags.is_empty() {
        what.push_str(&format!(" with tags {}", tag_list(&req.tags)));
    }
    let tagged: Vec<&HostView> = online
        .into_iter()
        .filter(|h| h.has_tags(&req.tags))
        .collect();
    if tagged.is_empty() {
        return no_host(format!("no {what}"));
    }
    let open: Vec<&HostView> = tagged.into_iter().filter(|h| !h.draining).collect();
    if open.is_empty() {
        return no_host(format!("every {what} is draining"));
    }
    let open: Vec<&HostView> = open
        .into_iter()
        .filter(|h| h.can_start(req.template.as_ref()))
        .collect();
    if open.is_empty() {
        return no_host(format!(
            "no {what} holds template {} or can build it (agents need --envd to build \
             base templates)",
            template_name(req)
        ));
    }
    // A host without a free network slot has no room whatever it has free.
    let open: Vec<&HostView> = open.into_iter().filter(|h| h.has_free_slot()).collect();
    if open.is_empty() {
        return no_host(format!("no {what} has a free network slot"));
    }
    let need = req.claims();
    let largest = open
        .iter()
        .map(|h| reserves.free(h))
        .fold(Claims::default(), Claims::max);
    let short = shortfalls(largest, need);
    if short.any {
        no_host(format!(
            "no {what} has {} free (largest free: {})",
            short.need, short.free
        ))
    } else {
        no_host(format!(
            "no {what} has {} free at once",
            words(need, [true; 3]).join(" and ")
        ))
    }
}

fn no_host(reason: String) -> NoHost {
    NoHost { reason }
}

/// The template `req` asks for, by its host-side name.
fn template_name(req: &Request) -> &str {
    req.template.as_ref().map_or("", |t| t.name.as_str())
}

/// `[a, b]`
fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

struct Shortfall {
    /// Whether any resource is short.
    any: bool,
    /// The short resources, needed (`2048 MB of memory and 2 vCPUs`)…
    need: String,
    /// …and free.
    free: String,
}

/// The resources of which `free` has less than `need`, in words.
fn shortfalls(free: Claims, need: Claims) -> Shortfall {
    let short = [
        free.memory_mb < need.memory_mb,
        free.disk_mb < need.disk_mb,
        free.vcpus < need.vcpus,
    ];
    Shortfall {
        any: short.iter().any(|s| *s),
        need: words(need, short).join(" and "),
        free: words(free, short).join(", "),
    }
}

/// The chosen resources of `c` in words, memory first.
fn words(c: Claims, which: [bool; 3]) -> Vec<String> {
    let mut out = Vec::new();
    if which[0] {
        out.push(format!("{} MB of memory", c.memory_mb));
    }
    if which[1] {
        out.push(format!("{} MB of disk", c.disk_mb));
    }
    if which[2] {
        let s = if c.vcpus == 1 { "" } else { "s" };
        out.push(format!("{} vCPU{s}", c.vcpus));
    }
    out
}
