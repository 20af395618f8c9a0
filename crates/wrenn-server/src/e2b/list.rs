//! `GET /v2/sandboxes`: the team's sandboxes with E2B's filters (state, metadata in its double
//! URL encoding, start time, template) and pages (`limit`, `nextToken` → `X-Next-Token`);
//! and the templates list.

use std::collections::HashMap;

use axum::{
    extract::{Query, State},
    http::{HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::model::{self, SandboxDetail, Template};
use crate::{
    db::{Caller, CapsuleRow},
    error::{ApiError, Result},
    extract::QueryParams,
    state::AppState,
};

/// The most sandboxes in one page, and the default.
pub const MAX_PAGE: usize = 100;

/// A parsed list request.
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    /// The states asked for (both when empty).
    pub states: Vec<String>,
    pub metadata: Vec<(String, String)>,
    /// Unix ms.
    pub started_after: Option<i64>,
    pub template: Option<String>,
    pub ascending: bool,
    pub limit: usize,
    /// The last (start ms, id) of the previous page.
    pub after: Option<(i64, String)>,
}

/// `%XX` decoded (no `+` rule), or `None` when an escape is broken or the result not UTF-8.
pub fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
            let (hi, lo) = (hex(b.get(i + 1))?, hex(b.get(i + 2))?);
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `metadata` filter as the framework decoded it once: unescaped once more, split on `&`
/// and `=`, each key and value unescaped (upstream's `parseFilters`).
pub fn metadata_filter(value: &str) -> Result<Vec<(String, String)>> {
    let bad = || {
        ApiError::InvalidRequest(format!(
            "invalid metadata filter {value:?}: key=value pairs joined by &, URL-encoded"
        ))
    };
    let whole = unescape(value).ok_or_else(bad)?;
    let mut out = Vec::new();
    for pair in whole.split('&').filter(|p| !p.is_empty()) {
        let parts: Vec<&str> = pair.split('=').collect();
        let [k, v] = parts[..] else {
            return Err(bad());
        };
        let (k, v) = (unescape(k).ok_or_else(bad)?, unescape(v).ok_or_else(bad)?);
        if k.is_empty() {
            return Err(bad());
        }
        out.push((k, v));
    }
    Ok(out)
}

/// A page token: the last sandbox of a page, base64 of `{start ms}__{id}`.
pub fn token(start: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{start}__{id}"))
}

fn parse_token(t: &str) -> Result<(i64, String)> {
    let bad = || ApiError::InvalidRequest("invalid nextToken".into());
    let text = URL_SAFE_NO_PAD
        .decode(t.trim_end_matches('='))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (start, id) = text.split_once("__").ok_or_else(bad)?;
    Ok((start.parse().map_err(|_| bad())?, id.to_string()))
}

/// The list request of query `q`.
pub fn filter(q: &HashMap<String, String>) -> Result<Filter> {
    let mut f = Filter {
        limit: MAX_PAGE,
        ..Filter::default()
    };
    if let Some(s) = q.get("state") {
        for one in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if one != "running" && one != "paused" {
                return Err(ApiError::InvalidRequest(format!(
                    "state must be running or paused, not {one:?}"
                )));
            }
            f.states.push(one.to_string());
        }
    }
    if let Some(m) = q.get("metadata") {
        f.metadata = metadata_filter(m)?;
    }
    if let Some(t) = q.get("startedAfter") {
        let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                ApiError::InvalidRequest(format!("startedAfter must be RFC 3339, not {t:?}"))
            })?;
        f.started_after = Some((at.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    f.template = q.get("template").filter(|t| !t.is_empty()).cloned();
    f.ascending = match q.get("order").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => {
            return Err(ApiError::InvalidRequest(format!(
                "order must be asc or desc, not {o:?}"
            )))
        }
    };
    if let Some(l) = q.get("limit") {
        f.limit = match l.parse::<usize>() {
            Ok(n @ 1..=MAX_PAGE) => n,
            _ => {
                return Err(ApiError::InvalidRequest(format!(
                    "limit must be 1..={MAX_PAGE}, not {l:?}"
                )))
            }
        };
    }
    if let Some(t) = q.get("nextToken").filter(|t| !t.is_empty()) {
        f.after = Some(parse_token(t)?);
    }
    Ok(f)
}

/// The start time a sandbox is ordered and paged by.
fn start_of(c: &CapsuleRow) -> i64 {
    c.started_at.unwrap_or(c.created_at)
}

/// One page of `all` under `f`: the sandboxes and the next page's token, if any.
pub fn page(
    mut all: Vec<SandboxDetail>,
    starts: &HashMap<String, i64>,
    f: &Filter,
) -> (Vec<SandboxDetail>, Option<String>) {
    let key = |s: &SandboxDetail| {
        (
            starts.get(&s.sandbox_id).copied().unwrap_or(0),
            s.sandbox_id.clone(),
        )
    };
    all.retain(|s| {
        (f.states.is_empty() || f.states.iter().any(|w| w == s.state))
            && f.metadata.iter().all(|(k, v)| s.metadata.get(k) == Some(v))
            && f.started_after.is_none_or(|t| key(s).0 >= t)
            && f.template.as_ref().is_none_or(|t| {
                &s.template_id == t || (t == super::DEFAULT_TEMPLATE && s.template_id == "minimal")
            })
    });
    all.sort_by_key(key);
    if !f.ascending {
        all.reverse();
    }
    if let Some(after) = &f.after {
        all.retain(|s| {
            let k = key(s);
            if f.ascending {
                k > *after
            } else {
                k < *after
            }
        });
    }
    let more = all.len() > f.limit;
    all.truncate(f.limit);
    let next = more
        .then(|| {
            all.last().map(|s| {
                let (start, id) = key(s);
                token(start, &id)
            })
        })
        .flatten();
    (all, next)
}

/// List sandboxes: a page of the team's running and paused sandboxes.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let f = filter(&q)?;
    let rows = state.db.capsules(&caller.team_id).await?;
    let lives = state.db.e2b_lifetimes(&caller.team_id).await?;
    let domain = super::sandbox_domain(&state, &headers);
    let starts: HashMap<String, i64> = rows.iter().map(|c| (c.id.clone(), start_of(c))).collect();
    let all: Vec<SandboxDetail> = rows
        .iter()
        .filter_map(|c| model::detail(c, lives.get(&c.id).copied(), &domain))
        .collect();
    let (shown, next) = page(all, &starts, &f);
    let mut resp = Json(shown).into_response();
    if let Some(t) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert("x-next-token", t);
    }
    Ok(resp)
}

/// The v1 list: running sandboxes only, one page of the most.
pub async fn list_v1(
    state: State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(mut q): Query<HashMap<String, String>>,
) -> Result<Response> {
    q.retain(|k, _| k == "metadata");
    q.insert("state".into(), "running".into());
    list(state, caller, headers, Query(q)).await
}

/// The templates a team can create sandboxes from: its snapshots and the platform's.
pub async fn templates(state: State<AppState>, caller: Caller) -> Result<Json<Vec<Template>>> {
    let Json(all) = crate::snapshots::list(state, caller, QueryParams(Default::default())).await?;
    let out = all
        .into_iter()
        .map(|t| Template {
            template_id: t.name.clone(),
            build_id: t.name.clone(),
            aliases: vec![t.name.clone()],
            names: vec![t.name.clone()],
            public: t.platform,
            cpu_count: t.vcpus,
            memory_mb: t.memory_mb,
            disk_size_mb: t.size_bytes / (1 << 20),
            envd_version: super::ENVD_VERSION.into(),
            created_at: t.created_at.clone(),
            updated_at: t.created_at,
            build_status: "ready",
        })
        .collect();
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_decode_as_upstream_does() {
        // `{"k": "v w"}` as the SDK sends it, after the framework's own decode.
        assert_eq!(
            metadata_filter("k=v%2520w").unwrap(),
            vec![("k".into(), "v w".into())]
        );
        // Values with `=`, `&` and `/` survive the double encoding.
        assert_eq!(
            metadata_filter("a%253Db=c%2526d%252Fe&x=1").unwrap(),
            vec![("a=b".into(), "c&d/e".into()), ("x".into(), "1".into())]
        );
        for bad in ["k", "k=v=w", "=v", "k=%zz", "k=%2"] {
            assert!(metadata_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let t = token(1_700_000_000_123, "cl-abc");
        assert_eq!(
            parse_token(&t).unwrap(),
            (1_700_000_000_123, "cl-abc".into())
        );
        for bad in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("nounderscores"),
            &URL_SAFE_NO_PAD.encode("x__cl-1"),
        ] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}
