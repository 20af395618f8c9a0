//! Team statistics and usage: `/v1/capsules/stats` (now, peaks, a time series) and
//! `/v1/capsules/usage` (CPU and RAM minutes per day), from samples taken every
//! [`USAGE_SAMPLE_SECS`].

use std::collections::{BTreeMap, HashMap};

use axum::{extract::State, Json};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::extract::QueryParams;
use crate::{
    db::{now_ms, Caller, USAGE_SAMPLE_SECS},
    error::{ApiError, Result},
    responses::Checked,
    state::AppState,
    time::rfc3339,
};
pub use wrenn_types::api::usage::{
    CapsuleStats, CurrentUse, PeakUse, StatsRange, Usage, UsagePoint, UseSeries,
};
use wrenn_types::CapsuleStatus;

/// Counts as running for stats and usage.
fn counts(status: CapsuleStatus) -> bool {
    matches!(
        status,
        CapsuleStatus::Running | CapsuleStatus::Starting | CapsuleStatus::Pending
    )
}

/// Takes one sample for every team that runs something.
pub async fn sample(state: &AppState) -> Result<()> {
    let mut teams: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for c in state.db.live_capsules().await? {
        if counts(c.status) {
            let t = teams.entry(c.team_id.clone()).or_default();
            t.0 += 1;
            t.1 += c.vcpus;
            t.2 += c.memory_mb;
        }
    }
    for (team, (running, vcpus, memory)) in teams {
        state.db.record_usage(&team, running, vcpus, memory).await?;
    }
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How far back (default `1h`).
    #[param(value_type = Option<StatsRange>)]
    range: Option<String>,
}

/// Team statistics
///
/// Running capsules, vCPUs and memory now, their peaks and a time series over the range
/// (sampled every 10 s).
#[utoipa::path(
    get,
    path = "/v1/capsules/stats",
    operation_id = "capsule_stats",
    tag = "capsules",
    params(StatsQuery),
    responses(
        (status = 200, description = "The statistics", body = CapsuleStats),
        Checked,
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<StatsQuery>,
) -> Result<Json<CapsuleStats>> {
    let range = q.range.unwrap_or_else(|| "1h".into());
    // (span, bucket) in seconds.
    let (span, bucket): (i64, i64) = match range.as_str() {
        "5m" => (300, 10),
        "1h" => (3600, 60),
        "6h" => (6 * 3600, 300),
        "24h" => (24 * 3600, 900),
        "30d" => (30 * 24 * 3600, 6 * 3600),
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "range must be one of 5m, 1h, 6h, 24h, 30d, not {other:?}"
            )))
        }
    };
    let live = state.db.capsules(&caller.team_id).await?;
    let (mut running, mut vcpus, mut memory) = (0i64, 0i64, 0i64);
    for c in live.iter().filter(|c| counts(c.status)) {
        running += 1;
        vcpus += c.vcpus;
        memory += c.memory_mb;
    }
    let now = now_ms();
    let samples = state
        .db
        .usage_samples(&caller.team_id, now - span * 1000)
        .await?;
    // The largest value of each bucket, every bucket of the range present.
    let first = (now / 1000 - span) / bucket * bucket;
    let mut buckets: BTreeMap<i64, (i64, i64, i64)> = (0..=span / bucket)
        .map(|i| (first + i * bucket, (0, 0, 0)))
        .collect();
    let (mut peak_r, mut peak_v, mut peak_m) = (running, vcpus, memory);
    for (at, r, v, m) in samples {
        let key = at / 1000 / bucket * bucket;
        let b = buckets.entry(key).or_default();
        b.0 = b.0.max(r);
        b.1 = b.1.max(v);
        b.2 = b.2.max(m);
        peak_r = peak_r.max(r);
        peak_v = peak_v.max(v);
        peak_m = peak_m.max(m);
    }
    let labels: Vec<String> = buckets.keys().map(|k| rfc3339(k * 1000)).collect();
    Ok(Json(CapsuleStats {
        range,
        current: CurrentUse {
            running_count: running,
            vcpus_reserved: vcpus,
            memory_mb_reserved: memory,
        },
        peaks: PeakUse {
            running_count: peak_r,
            vcpus: peak_v,
            memory_mb: peak_m,
        },
        series: UseSeries {
            labels,
            running: buckets.values().map(|b| b.0).collect(),
            vcpus: buckets.values().map(|b| b.1).collect(),
            memory_mb: buckets.values().map(|b| b.2).collect(),
        },
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (default: 29 days before `to`).
    #[param(format = Date)]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (default: today, UTC).
    #[param(format = Date)]
    to: Option<String>,
}

fn parse_date(s: &str) -> Result<time::Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format)
        .map_err(|_| ApiError::InvalidRequest(format!("{s:?} is not a date (YYYY-MM-DD)")))
}

fn date_of(ms: i64) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN)
}

/// Team usage
///
/// CPU and memory minutes per day (UTC), at most a year.
#[utoipa::path(
    get,
    path = "/v1/capsules/usage",
    operation_id = "capsule_usage",
    tag = "capsules",
    params(UsageQuery),
    responses(
        (status = 200, description = "The usage", body = Usage),
        Checked,
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<UsageQuery>,
) -> Result<Json<Usage>> {
    let today = date_of(now_ms());
    let to =
        q.to.as_deref()
            .map(parse_date)
            .transpose()?
            .unwrap_or(today);
    let from = match q.from.as_deref() {
        Some(f) => parse_date(f)?,
        None => to - time::Duration::days(29),
    };
    if from > to || (to - from).whole_days() > 366 {
        return Err(ApiError::InvalidRequest(
            "from must not be after to, and the range at most a year".into(),
        ));
    }
    let since = from.midnight().assume_utc().unix_timestamp() * 1000;
    let mut days: BTreeMap<time::Date, (f64, f64)> = BTreeMap::new();
    let mut d = from;
    while d <= to {
        days.insert(d, (0.0, 0.0));
        d = d.next_day().unwrap_or(time::Date::MAX);
        if d == time::Date::MAX {
            break;
        }
    }
    let minutes = USAGE_SAMPLE_SECS as f64 / 60.0;
    for (at, _, vcpus, memory) in state.db.usage_samples(&caller.team_id, since).await? {
        if let Some(day) = days.get_mut(&date_of(at)) {
            day.0 += vcpus as f64 * minutes;
            day.1 += memory as f64 * minutes;
        }
    }
    let points = days
        .iter()
        .map(|(d, (cpu, ram))| UsagePoint {
            date: d.to_string(),
            cpu_minutes: *cpu,
            ram_mb_minutes: *ram,
        })
        .collect();
    Ok(Json(Usage {
        from: from.to_string(),
        to: to.to_string(),
        points,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::assert_same_json;

    #[test]
    fn stats_and_usage_shapes_are_unchanged() {
        let stats = CapsuleStats {
            range: "1h".into(),
            current: CurrentUse {
                running_count: 1,
                vcpus_reserved: 2,
                memory_mb_reserved: 512,
            },
            peaks: PeakUse {
                running_count: 3,
                vcpus: 4,
                memory_mb: 1024,
            },
            series: UseSeries {
                labels: vec!["2023-11-14T22:13:00Z".into()],
                running: vec![1],
                vcpus: vec![2],
                memory_mb: vec![512],
            },
        };
        assert_same_json(
            &stats,
            json!({
                "range": "1h",
                "current": { "running_count": 1, "vcpus_reserved": 2, "memory_mb_reserved": 512 },
                "peaks": { "running_count": 3, "vcpus": 4, "memory_mb": 1024 },
                "series": {
                    "labels": ["2023-11-14T22:13:00Z"],
                    "running": [1],
                    "vcpus": [2],
                    "memory_mb": [512],
                },
            }),
        );
        let usage = Usage {
            from: "2026-01-01".into(),
            to: "2026-01-02".into(),
            points: vec![
                UsagePoint {
                    date: "2026-01-01".into(),
                    cpu_minutes: 0.0,
                    ram_mb_minutes: 0.0,
                },
                UsagePoint {
                    date: "2026-01-02".into(),
                    cpu_minutes: 1.0 / 3.0,
                    ram_mb_minutes: 85.5,
                },
            ],
        };
        let points = vec![
            json!({ "date": "2026-01-01", "cpu_minutes": 0.0, "ram_mb_minutes": 0.0 }),
            json!({ "date": "2026-01-02", "cpu_minutes": 1.0 / 3.0, "ram_mb_minutes": 85.5 }),
        ];
        assert_same_json(
            &usage,
            json!({ "from": "2026-01-01", "to": "2026-01-02", "points": points }),
        );
        // Floats stay floats (`0.0`, not `0`).
        assert!(serde_json::to_string(&usage)
            .unwrap()
            .contains("\"cpu_minutes\":0.0"));
    }
}
