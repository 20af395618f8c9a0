//! A capsule's resource metrics over a range.

use axum::{
    extract::{Path, State},
    Json,
};
use serde::Deserialize;
use utoipa::IntoParams;
use wrenn_proto::agent::v1::GetMetricsRequest;

use super::lookup::live;
use crate::extract::QueryParams;
use crate::{
    db::Caller,
    error::{ApiError, Result},
    responses::{CheckedOnHost, NoCapsule},
    state::AppState,
};
pub use wrenn_types::api::capsules::{CapsuleMetrics, MetricPoint, MetricsRange};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// How far back (default `10m`).
    #[param(value_type = Option<MetricsRange>)]
    range: Option<String>,
}

/// A capsule's metrics
///
/// CPU, memory and disk samples of its VM over a range (finer for shorter ranges).
#[utoipa::path(
    get,
    path = "/v1/capsules/{id}/metrics",
    operation_id = "capsule_metrics",
    tag = "capsules",
    params(crate::responses::CapsulePath, MetricsQuery),
    responses(
        (status = 200, description = "Its samples", body = CapsuleMetrics),
        CheckedOnHost, NoCapsule,
    )
)]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<MetricsQuery>,
) -> Result<Json<CapsuleMetrics>> {
    let range = q.range.unwrap_or_else(|| "10m".into());
    let secs = match range.as_str() {
        "5m" => 300,
        "10m" => 600,
        "1h" => 3600,
        "2h" => 7200,
        "6h" => 6 * 3600,
        "12h" => 12 * 3600,
        "24h" => 24 * 3600,
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "range must be one of 5m, 10m, 1h, 2h, 6h, 12h, 24h, not {other:?}"
            )))
        }
    };
    let c = live(&state, &caller, &id).await?;
    let points = samples(&state, &c, secs).await?;
    let points = points.into_iter().map(metric_point).collect();
    Ok(Json(CapsuleMetrics {
        sandbox_id: c.id,
        range,
        points,
    }))
}

/// Capsule `c`'s samples of the last `secs` seconds (none when its host no longer knows it).
pub async fn samples(
    state: &AppState,
    c: &crate::db::CapsuleRow,
    secs: u32,
) -> Result<Vec<wrenn_proto::agent::v1::MetricPoint>> {
    match state
        .agent_for(c)
        .await?
        .get_metrics(GetMetricsRequest {
            capsule_id: c.id.clone(),
            range_secs: secs,
        })
        .await
    {
        Ok(r) => Ok(r.into_inner().points),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(Vec::new()),
        Err(s) => Err(s.into()),
    }
}

/// A sample as the API shows it.
pub fn metric_point(p: wrenn_proto::agent::v1::MetricPoint) -> MetricPoint {
    MetricPoint {
        timestamp_unix: p.unix,
        // As the API always showed it (an f32 widened to f64).
        cpu_pct: f64::from(p.cpu_pct),
        mem_bytes: p.mem_bytes,
        disk_bytes: p.disk_bytes,
    }
}
