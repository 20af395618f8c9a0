//! What the scheduler sees: a host ([`HostView`], filled by the caller from the database and
//! the host's last heartbeat), a request to place ([`Request`]) and the two answers
//! ([`Choice`], [`NoHost`]).

use std::collections::BTreeMap;

use wrenn_types::api::hosts::{Host, HostKind, HostLoad, HostStatus, TemplatePresence};
use wrenn_types::CapsuleStatus;

/// An amount of each resource the scheduler counts: vCPUs, memory and disk (MB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claims {
    pub vcpus: u64,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

impl Claims {
    pub const fn new(vcpus: u64, memory_mb: u64, disk_mb: u64) -> Claims {
        Claims {
            vcpus,
            memory_mb,
            disk_mb,
        }
    }

    /// Both amounts added, resource by resource.
    pub const fn plus(self, other: Claims) -> Claims {
        Claims {
            vcpus: self.vcpus.saturating_add(other.vcpus),
            memory_mb: self.memory_mb.saturating_add(other.memory_mb),
            disk_mb: self.disk_mb.saturating_add(other.disk_mb),
        }
    }

    /// `other` taken away, resource by resource (never below zero).
    pub const fn minus(self, other: Claims) -> Claims {
        Claims {
            vcpus: self.vcpus.saturating_sub(other.vcpus),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
            disk_mb: self.disk_mb.saturating_sub(other.disk_mb),
        }
    }

    /// The larger of the two, resource by resource.
    pub fn max(self, other: Claims) -> Claims {
        Claims {
            vcpus: self.vcpus.max(other.vcpus),
            memory_mb: self.memory_mb.max(other.memory_mb),
            disk_mb: self.disk_mb.max(other.disk_mb),
        }
    }

    /// Whether `self` holds at least `need` of every resource.
    pub const fn covers(self, need: Claims) -> bool {
        self.vcpus >= need.vcpus && self.memory_mb >= need.memory_mb && self.disk_mb >= need.disk_mb
    }

    /// What a heartbeat says the host's capsules hold: the vCPUs and memory its running
    /// capsules were given, and the disk actually used on the agent's file system (templates
    /// and images included).
    pub fn from_heartbeat(load: &HostLoad) -> Claims {
        Claims {
            vcpus: u64::from(load.vcpus_reserved),
            memory_mb: load.memory_mb_reserved,
            disk_mb: load.disk_mb_used.max(load.disk_mb_reserved),
        }
    }
}

/// What a host holds, from the control plane's own records and from the host itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostUsage {
    /// Capsules the database has on the host that hold (or may hold) a VM: `pending`,
    /// `starting`, `running` and `missing`; counted in full.
    pub active: Claims,
    /// Capsules the database has `paused` on the host: their shapes in full; the reserves
    /// ([`crate::scheduler::Reserves`]) decide how much of each resource they count for.
    pub paused: Claims,
    /// In-flight placements (`host_reservations` rows under 15 minutes old), counted in full.
    pub reserved: Claims,
    /// What the host's last heartbeat reported ([`Claims::from_heartbeat`]). The scheduler
    /// counts the larger of this and the database's sums, resource by resource.
    pub reported: Claims,
    /// The vCPUs and memory of capsules the database has seen stop, fail or pause since that
    /// heartbeat while they were running at it: the heartbeat still counts them until the
    /// next one, and a create right after a destroy must not wait for it.
    pub released: Claims,
    /// How many capsules hold one of the host's network slots: the database's active and
    /// paused ones (a paused capsule keeps its slot) and the in-flight reservations.
    pub capsules: u64,
}

impl HostUsage {
    /// Adds one capsule the database has on the host, by its status (stopped and failed
    /// capsules hold nothing).
    pub fn count(&mut self, status: CapsuleStatus, shape: Claims) {
        self.count_group(status, shape, 1);
    }

    /// Adds `n` capsules of one status whose shapes sum to `shape`.
    pub fn count_group(&mut self, status: CapsuleStatus, shape: Claims, n: u64) {
        match status {
            CapsuleStatus::Pending
            | CapsuleStatus::Starting
            | CapsuleStatus::Running
            | CapsuleStatus::Missing => self.active = self.active.plus(shape),
            CapsuleStatus::Paused => self.paused = self.paused.plus(shape),
            CapsuleStatus::Stopped | CapsuleStatus::Error => return,
        }
        self.capsules += n;
    }
}

/// How many network slots a host's slot range (`first-last`) has; `None` when it is not one.
pub fn slot_count(range: &str) -> Option<u64> {
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    last.checked_sub(first).map(|d| d + 1)
}

/// One host as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    pub id: String,
    pub kind: HostKind,
    /// The owning team of a `byoc` host.
    pub team: Option<String>,
    pub tags: Vec<String>,
    /// Status `online` (pending and unreachable hosts take nothing).
    pub online: bool,
    pub draining: bool,
    /// The machine (from the host's specs): `vcpus` = its CPU cores. All zero = not known yet
    /// (no specs reported): the host is taken at its word (its agent refuses what does not
    /// fit) but scored as full, so it is the last choice.
    pub capacity: Claims,
    pub usage: HostUsage,
    /// Templates present on the host (host-side name → the shapes it has snapshots of; none
    /// for a snapshot template): [`HostView::templates_from`] makes it from a heartbeat's list.
    pub templates: BTreeMap<String, Vec<String>>,
    /// The base templates it builds on first need ([`HostLoad::buildable`]).
    pub buildable: Vec<String>,
    /// Its network slots (from its specs): each live capsule holds one. `None`: not known.
    pub slots: Option<u64>,
}

impl HostView {
    /// A host as the API shows it (its specs, last heartbeat, tags, status) with what the
    /// database has on it (`usage`; its `reported` is taken from the host's heartbeat).
    pub fn from_host(host: &Host, mut usage: HostUsage) -> HostView {
        usage.reported = Claims::from_heartbeat(&host.load);
        HostView {
            id: host.id.clone(),
            kind: host.kind,
            team: host.team_id.clone(),
            tags: host.tags.clone(),
            online: host.status == HostStatus::Online,
            draining: host.draining,
            capacity: Claims::new(
                u64::from(host.specs.cpu_cores),
                host.specs.memory_mb,
                host.specs.disk_mb,
            ),
            usage,
            templates: HostView::templates_from(&host.load.templates),
            buildable: host.load.buildable.clone(),
            slots: slot_count(&host.specs.slots),
        }
    }

    /// Whether one more capsule gets a network slot here (always, when the slots are not
    /// known).
    pub fn has_free_slot(&self) -> bool {
        self.slots.is_none_or(|n| self.usage.capsules < n)
    }

    /// Whether the host's machine is not known yet (no specs reported).
    pub fn capacity_unknown(&self) -> bool {
        self.capacity == Claims::default()
    }

    /// How well the host holds `want`: 2 = the template and a snapshot of the shape, 1 = the
    /// template (its shape would be built there), 0 = nothing (it would be fetched or built).
    pub fn locality(&self, want: Option<&TemplateWant>) -> u8 {
        let Some(want) = want else { return 0 };
        let Some(shapes) = self.templates.get(&want.name) else {
            return 0;
        };
        // A snapshot template has no shapes: it is one image, usable as it is.
        let shape_ok = match &want.shape {
            None => true,
            Some(shape) => shapes.is_empty() || shapes.contains(shape),
        };
        if shape_ok {
            2
        } else {
            1
        }
    }

    /// Whether the host can start a capsule of `want`: a snapshot template travels to any host;
    /// a base template must be there or buildable there. A host that reported neither
    /// templates nor recipes is not known yet and is taken at its word (its agent refuses a
    /// template it lacks).
    pub fn can_start(&self, want: Option<&TemplateWant>) -> bool {
        match want {
            Some(w) if w.shape.is_some() => {
                (self.templates.is_empty() && self.buildable.is_empty())
                    || self.templates.contains_key(&w.name)
                    || self.buildable.contains(&w.name)
            }
            _ => true,
        }
    }

    /// The templates of a heartbeat's [`HostLoad::templates`], as [`HostView::templates`].
    pub fn templates_from(present: &[TemplatePresence]) -> BTreeMap<String, Vec<String>> {
        present
            .iter()
            .map(|t| (t.name.clone(), t.shapes.clone()))
            .collect()
    }

    pub fn has_tags(&self, tags: &[String]) -> bool {
        tags.iter().all(|t| self.tags.contains(t))
    }
}

/// The template a capsule starts from, as hosts name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateWant {
    /// A base template's name, or a snapshot template's host-side id.
    pub name: String,
    /// `{vcpus}x{memory_mb}` (as [`TemplatePresence::shapes`]), `None` for a snapshot template.
    pub shape: Option<String>,
}

/// A capsule to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub team: String,
    /// A BYOC team lands only on its own hosts.
    pub team_is_byoc: bool,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub template: Option<TemplateWant>,
    /// Every one must be on the host.
    pub tags: Vec<String>,
    /// Place on this host only (a move, a test); still checked for eligibility and room.
    pub force_host: Option<String>,
}

impl Request {
    /// The request's resources.
    pub const fn claims(&self) -> Claims {
        Claims::new(self.vcpus as u64, self.memory_mb, self.disk_mb)
    }
}

/// Where a request goes, and why (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub host_id: String,
    pub why: String,
}

/// No host can take the request: `reason` says what was missing, in words for the caller.
/// The caller answers it as `host_unavailable` (503) with `reason` as the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoHost {
    pub reason: String,
}

impl std::fmt::Display for NoHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}
