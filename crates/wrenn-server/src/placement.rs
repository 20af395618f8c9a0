//! Placement: which host a new capsule goes to, and holding that choice. The hosts and what
//! the database has on each (capsules, placements in flight) become the scheduler's views;
//! [`crate::scheduler::place`] chooses; the choice is held by a host reservation, taken under
//! the host's row lock after a re-check, until the capsule's row exists. A host that filled up
//! meanwhile (another create, another control plane) is dropped and the scheduler asked again.

use sqlx::Row;
use wrenn_types::api::hosts::HostStatus;

use crate::{
    db::{Db, HostRecord},
    error::{ApiError, Result},
    scheduler::{self, Claims, HostUsage, HostView, Request, Reserves, TemplateWant},
};

/// A placement to make.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub team_id: &'a str,
    /// Every one of these tags.
    pub tags: &'a [String],
    /// The template's name on the hosts: hosts that hold it are preferred.
    pub template: &'a str,
    /// Whether `template` is a snapshot template (one image, no shapes).
    pub snapshot: bool,
    /// Only this host (an admin's `host_id`).
    pub only_host: Option<&'a str>,
    /// Never this host (a move: the host the capsule leaves).
    pub except_host: Option<&'a str>,
    /// Never these hosts (a build: the hosts at their limit of builds, `builds::hosts`).
    pub busy: &'a [String],
    /// What the capsule needs of its host.
    pub need: Claims,
}

/// A chosen host, held by its reservation until [`Placed::release`] (or drop).
pub struct Placed {
    pub host: HostRecord,
    db: Db,
    reservation: Option<String>,
}

impl Placed {
    /// Inserts the capsule row placed here, ending the reservation with it.
    pub async fn insert(&mut self, c: &crate::db::CapsuleRow) -> Result<()> {
        match &self.reservation {
            Some(id) => self.db.insert_placed_capsule(c, id).await?,
            None => self.db.insert_capsule(c).await?,
        }
        self.reservation = None;
        Ok(())
    }

    /// Ends the reservation: the capsule exists now (and counts by its row), or never will.
    pub async fn release(mut self) {
        if let Some(id) = self.reservation.take() {
            release(&self.db, &id).await;
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(id) = self.reservation.take() {
            let db = self.db.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { release(&db, &id).await });
            }
        }
    }
}

async fn release(db: &Db, id: &str) {
    if let Err(e) = db.release_host_reservation(id).await {
        // It stops counting after RESERVATION_TTL_MS anyway.
        tracing::warn!(error = %e, %id, "removing a host reservation");
    }
}

/// Whether `team_id` is a BYOC team (its capsules go only to its own hosts).
pub async fn team_is_byoc(db: &Db, team_id: &str) -> Result<bool> {
    let r = sqlx::query("SELECT is_byoc FROM teams WHERE id = $1")
        .bind(team_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(match r {
        Some(r) => r.try_get::<i64, _>("is_byoc")? != 0,
        None => false,
    })
}

/// The scheduler's view of host `h` with `usage` (what the database has on it).
pub fn view_of(h: &HostRecord, mut usage: HostUsage) -> HostView {
    usage.reported = Claims::from_heartbeat(&h.load);
    HostView {
        id: h.id.clone(),
        kind: h.kind,
        team: h.team_id.clone(),
        tags: h.tags.clone(),
        online: h.status == HostStatus::Online,
        draining: h.draining,
        // A machine not fully described yet (no heartbeat, or one without its memory or disk)
        // is not known: the scheduler takes it at its word and places there last.
        capacity: if h.specs.cpu_cores == 0 || h.specs.memory_mb == 0 || h.specs.disk_mb == 0 {
            Claims::default()
        } else {
            Claims::new(
                u64::from(h.specs.cpu_cores),
                h.specs.memory_mb,
                h.specs.disk_mb,
            )
        },
        usage,
        templates: HostView::templates_from(&h.load.templates),
        buildable: h.load.buildable.clone(),
        slots: scheduler::slot_count(&h.specs.slots),
    }
}

/// Chooses a host for `ask` and reserves the room on it; `host_unavailable` saying why when
/// no host can take it, `invalid_request` when no host it may use could hold it even empty.
pub async fn place(db: &Db, ask: &Ask<'_>) -> Result<Placed> {
    let req = Request {
        team: ask.team_id.to_string(),
        team_is_byoc: team_is_byoc(db, ask.team_id).await?,
        vcpus: u32::try_from(ask.need.vcpus).unwrap_or(u32::MAX),
        memory_mb: ask.need.memory_mb,
        disk_mb: ask.need.disk_mb,
        template: Some(TemplateWant {
            name: ask.template.to_string(),
            shape: (!ask.snapshot).then(|| format!("{}x{}", ask.need.vcpus, ask.need.memory_mb)),
        }),
        tags: ask.tags.to_vec(),
        force_host: ask.only_host.map(str::to_string),
    };
    let hosts: Vec<HostRecord> = db
        .host_records()
        .await?
        .into_iter()
        .filter(|h| Some(h.id.as_str()) != ask.except_host && !ask.busy.contains(&h.id))
        .collect();
    // Too large for every host it may use even empty: the request's fault, not the cluster's.
    let reserves = Reserves::default();
    let in_scope: Vec<HostView> = hosts
        .iter()
        .map(|h| HostView {
            // Empty: nothing on it, whatever its heartbeat says.
            usage: HostUsage::default(),
            ..view_of(h, HostUsage::default())
        })
        .filter(|v| scheduler::in_scope(v, &req))
        .collect();
    // A base template no host it may use holds or can build does not exist (a snapshot
    // template's name, or a typo): not found, not a full cluster.
    if let Some(want) = req.template.as_ref().filter(|w| w.shape.is_some()) {
        if !in_scope.is_empty() && !in_scope.iter().any(|v| v.can_start(Some(want))) {
            return Err(ApiError::NotFound(format!(
                "template {} not found",
                want.name
            )));
        }
    }
    if !in_scope.is_empty() && !in_scope.iter().any(|v| reserves.admits(v, ask.need)) {
        return Err(ApiError::InvalidRequest(format!(
            "{} vCPUs, {} MB of memory and {} MB of disk can never fit: no host this capsule \
             may use is that large",
            ask.need.vcpus, ask.need.memory_mb, ask.need.disk_mb
        )));
    }
    let mut uses = db.host_uses().await?;
    let mut views: Vec<HostView> = hosts
        .iter()
        .map(|h| view_of(h, uses.remove(&h.id).unwrap_or_default()))
        .collect();
    loop {
        let choice = choose(&views, &req)?;
        let Some(host) = hosts.iter().find(|h| h.id == choice.host_id) else {
            return Err(ApiError::Internal(format!(
                "the scheduler chose host {}, which it was not shown",
                choice.host_id
            )));
        };
        let req = &req;
        let fits =
            move |used: &HostUsage| scheduler::check(&view_of(host, *used), req, &reserves).is_ok();
        let held = db.reserve_on_host(&host.id, ask.need, fits).await?;
        if let Some(reservation) = held {
            tracing::debug!(host = %host.id, why = %choice.why, "placed");
            return Ok(Placed {
                host: host.clone(),
                db: db.clone(),
                reservation: Some(reservation),
            });
        }
        // It filled up since the views were read: the others are still candidates.
        views.retain(|v| v.id != host.id);
    }
}

/// The scheduler's choice among `views` (a thread-local random draw, never held across an
/// await).
fn choose(views: &[HostView], req: &Request) -> Result<scheduler::Choice> {
    scheduler::place(views, req, &mut rand::rng())
        .map_err(|no| ApiError::HostUnavailable(no.reason))
}
