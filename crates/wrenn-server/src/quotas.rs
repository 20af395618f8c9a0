//! Per-team quotas: live capsules, vCPUs and memory of running capsules, disk of running and
//! paused capsules, and snapshots (team templates).
//!
//! Limits. The platform's defaults are set by `wrenn up` / `wrenn server` at each start
//! ([`set_defaults`], kept in `settings`); a team may have overrides (`team_quotas`), set by a
//! platform admin (`PUT /v1/teams/{id}/quotas`). `None` is no limit.
//!
//! Enforcement. Create, resume and snapshot create *reserve* what they add before they ask the
//! host: in one transaction, under the team's row lock, the team's use (its capsule rows plus
//! the reservations in flight) is compared with its limits and a reservation row is written.
//! Concurrent requests of a team therefore never exceed a quota together. The reservation is
//! removed when the request ends ([`Reservation::release`], or on drop); one left by a control
//! plane that died is ignored after [`RESERVATION_TTL_MS`]. A refusal is 429 `quota_exceeded`
//! naming the quota, its limit, the use and what the request asked.
//!
//! Platform admins: the owners and admins of the platform's team (the team of the admin user
//! `wrenn up` makes, [`crate::ADMIN_EMAIL`]) and that team's API keys. They read and set any
//! team's quotas; a team's owners read their own team's.

pub mod handlers;
pub mod reserve;

pub use reserve::{
    reserve, reserve_create, reserve_resume, reserve_snapshot, set_defaults, Reservation,
};

use crate::error::{ApiError, Result};

/// A reservation older than this (its control plane died mid-request) no longer counts.
pub const RESERVATION_TTL_MS: i64 = 15 * 60 * 1000;

/// The `settings` row that holds the platform's default limits (JSON of [`Limits`]).
const DEFAULTS_SETTING: &str = "quota_defaults";

pub use wrenn_types::api::quotas::{Amounts, Limits, TeamQuotas};

/// A limit below 0 is refused.
pub(crate) fn validate(limits: &Limits) -> Result<()> {
    for (name, v) in limits.named() {
        if v.is_some_and(|v| v < 0) {
            return Err(ApiError::InvalidRequest(format!(
                "quota {name} must be at least 0 (or null for the platform default)"
            )));
        }
    }
    Ok(())
}

/// What a quota refusal says: the first quota `need` would exceed, with its limit and use.
pub fn exceeded(limits: &Limits, used: &Amounts, need: &Amounts) -> Option<String> {
    limits
        .named()
        .into_iter()
        .zip(used.named())
        .zip(need.named())
        .find_map(|(((name, limit), (_, used)), (_, need))| {
            let limit = limit?;
            (need > 0 && used + need > limit).then(|| {
                format!(
                    "quota {name} exceeded: the team's limit is {limit}, it uses {used}, this \
                     request needs {need} more"
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_exceeded_quota_is_named_with_limit_and_use() {
        let limits = Limits {
            capsules: Some(2),
            vcpus: Some(4),
            memory_mb: None,
            disk_mb: Some(1000),
            snapshots: Some(0),
        };
        let used = Amounts {
            capsules: 1,
            vcpus: 3,
            memory_mb: 1 << 30,
            disk_mb: 0,
            snapshots: 0,
        };
        let one = |vcpus, disk_mb| Amounts {
            capsules: 1,
            vcpus,
            memory_mb: 512,
            disk_mb,
            snapshots: 0,
        };
        assert_eq!(exceeded(&limits, &used, &one(1, 1000)), None);
        assert_eq!(
            exceeded(&limits, &used, &one(2, 1000)).unwrap(),
            "quota vcpus exceeded: the team's limit is 4, it uses 3, this request needs 2 more"
        );
        assert!(exceeded(&limits, &used, &one(1, 1001))
            .unwrap()
            .starts_with("quota disk_mb exceeded: the team's limit is 1000"));
        // A limit of 0 refuses any; asking nothing of a resource never trips its quota.
        let snap = Amounts {
            snapshots: 1,
            ..Amounts::default()
        };
        assert!(exceeded(&limits, &used, &snap)
            .unwrap()
            .starts_with("quota snapshots exceeded"));
        assert_eq!(exceeded(&limits, &used, &Amounts::default()), None);
    }

    #[test]
    fn overrides_win_over_defaults() {
        let d = Limits {
            capsules: Some(10),
            vcpus: Some(8),
            ..Limits::default()
        };
        let o = Limits {
            vcpus: Some(2),
            snapshots: Some(1),
            ..Limits::default()
        };
        assert_eq!(
            o.over(d),
            Limits {
                capsules: Some(10),
                vcpus: Some(2),
                memory_mb: None,
                disk_mb: None,
                snapshots: Some(1),
            }
        );
        assert!(validate(&Limits {
            disk_mb: Some(-1),
            ..Limits::default()
        })
        .is_err());
    }
}
