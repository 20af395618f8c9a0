//! Prometheus metrics at `GET /metrics`, in the text exposition format 0.0.4. Aggregates only:
//! nothing names a team, a user or a capsule, so the route needs no credentials.
//!
//! - `wrenn_http_requests_total{method,route,status}`: requests the API answered. `route` is
//!   the matched route template (`/v1/capsules/{id}`), never the raw path, so the number of
//!   series stays bounded; requests no route matched count as `route="unmatched"`, methods
//!   outside the standard ones as `method="other"`. Port-proxy traffic is not counted.
//! - `wrenn_http_request_duration_seconds{method,route}`: a histogram of the time to the
//!   response's head (a streamed body, an SSE stream or a WebSocket session is not included).
//! - `wrenn_capsules{status}`: capsules by status, counted in the database at scrape time.
//! - `wrenn_build_info{version}`: always 1.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::Response,
};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the duration histogram's buckets, in seconds (Prometheus' defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `route` of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The statuses `wrenn_capsules` always reports (0 when none), so their series never vanish.
const CAPSULE_STATUSES: [wrenn_types::CapsuleStatus; 7] = wrenn_types::CapsuleStatus::ALL;

/// One (route, method)'s requests.
#[derive(Debug, Default)]
struct Series {
    by_status: BTreeMap<u16, u64>,
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [u64; BUCKETS.len() + 1],
    count: u64,
    sum_secs: f64,
}

/// The API's request metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By route template, then method.
    http: Mutex<BTreeMap<String, BTreeMap<&'static str, Series>>>,
}

/// A method as a label: the standard ones, else `other` (methods are not a bounded set).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as Prometheus writes it (`+Inf`, `NaN`, shortest decimals).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &Method, route: &str, status: StatusCode, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        let mut http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        let methods = match http.get_mut(route) {
            Some(m) => m,
            None => http.entry(route.to_string()).or_default(),
        };
        let s = methods.entry(method_label(method)).or_default();
        *s.by_status.entry(status.as_u16()).or_default() += 1;
        s.buckets[bucket] += 1;
        s.count += 1;
        s.sum_secs += secs;
    }

    /// The request counters and the duration histogram, in the text format.
    pub fn render_http(&self, out: &mut String) {
        let http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str(
            "# HELP wrenn_http_requests_total HTTP requests the API answered, by method, route \
             template and status.\n# TYPE wrenn_http_requests_total counter\n",
        );
        for (route, methods) in http.iter() {
            let route = escape(route);
            for (method, s) in methods {
                for (status, n) in &s.by_status {
                    let _ = writeln!(
                        out,
                        "wrenn_http_requests_total{{method=\"{method}\",route=\"{route}\",\
                         status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out.push_str(
            "# HELP wrenn_http_request_duration_seconds Time from a request to its response's \
             head, by method and route template.\n\
             # TYPE wrenn_http_request_duration_seconds histogram\n",
        );
        for (route, methods) in http.iter() {
            let route = escape(route);
            for (method, s) in methods {
                let labels = format!("method=\"{method}\",route=\"{route}\"");
                let mut cumulative = 0;
                for (i, le) in BUCKETS.iter().map(|b| number(*b)).enumerate() {
                    cumulative += s.buckets[i];
                    let _ = writeln!(
                        out,
                        "wrenn_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} \
                         {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "wrenn_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    s.count
                );
                let _ = writeln!(
                    out,
                    "wrenn_http_request_duration_seconds_sum{{{labels}}} {}",
                    number(s.sum_secs)
                );
                let _ = writeln!(
                    out,
                    "wrenn_http_request_duration_seconds_count{{{labels}}} {}",
                    s.count
                );
            }
        }
    }
}

/// `wrenn_capsules{status}` from `(status, count)` pairs; the usual statuses are always there.
pub fn render_capsules(out: &mut String, counts: &[(String, i64)]) {
    let mut by_status: BTreeMap<&str, i64> =
        CAPSULE_STATUSES.iter().map(|s| (s.as_str(), 0)).collect();
    for (status, n) in counts {
        *by_status.entry(status.as_str()).or_default() += n;
    }
    out.push_str(
        "# HELP wrenn_capsules Capsules by status, all teams together.\n\
         # TYPE wrenn_capsules gauge\n",
    );
    for (status, n) in by_status {
        let _ = writeln!(out, "wrenn_capsules{{status=\"{}\"}} {n}", escape(status));
    }
}

pub fn render_build_info(out: &mut String) {
    out.push_str(
        "# HELP wrenn_build_info The server's version (always 1).\n\
         # TYPE wrenn_build_info gauge\n",
    );
    let _ = writeln!(
        out,
        "wrenn_build_info{{version=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION"))
    );
}

/// Middleware: times every request and counts it under its matched route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    metrics.observe(&method, route, response.status(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &Metrics) -> Vec<String> {
        let mut out = String::new();
        m.render_http(&mut out);
        out.lines().map(str::to_string).collect()
    }

    #[test]
    fn counts_by_method_route_and_status() {
        let m = Metrics::new();
        let ms = Duration::from_millis;
        m.observe(&Method::GET, "/v1/capsules", StatusCode::OK, ms(3));
        m.observe(&Method::GET, "/v1/capsules", StatusCode::OK, ms(30));
        m.observe(
            &Method::GET,
            "/v1/capsules",
            StatusCode::UNAUTHORIZED,
            ms(1),
        );
        m.observe(
            &Method::POST,
            "/v1/capsules",
            StatusCode::CREATED,
            ms(20_000),
        );
        let custom = Method::from_bytes(b"BREW").unwrap();
        m.observe(&custom, UNMATCHED, StatusCode::NOT_FOUND, ms(1));
        let l = lines(&m);
        for want in [
            r#"wrenn_http_requests_total{method="GET",route="/v1/capsules",status="200"} 2"#,
            r#"wrenn_http_requests_total{method="GET",route="/v1/capsules",status="401"} 1"#,
            r#"wrenn_http_requests_total{method="POST",route="/v1/capsules",status="201"} 1"#,
            r#"wrenn_http_requests_total{method="other",route="unmatched",status="404"} 1"#,
            // Cumulative buckets: 1 ms and 3 ms, then 30 ms.
            r#"wrenn_http_request_duration_seconds_bucket{method="GET",route="/v1/capsules",le="0.005"} 2"#,
            r#"wrenn_http_request_duration_seconds_bucket{method="GET",route="/v1/capsules",le="0.025"} 2"#,
            r#"wrenn_http_request_duration_seconds_bucket{method="GET",route="/v1/capsules",le="0.05"} 3"#,
            r#"wrenn_http_request_duration_seconds_bucket{method="GET",route="/v1/capsules",le="10"} 3"#,
            r#"wrenn_http_request_duration_seconds_bucket{method="GET",route="/v1/capsules",le="+Inf"} 3"#,
            r#"wrenn_http_request_duration_seconds_count{method="GET",route="/v1/capsules"} 3"#,
            // 20 s is above every bound: only +Inf has it.
            r#"wrenn_http_request_duration_seconds_bucket{method="POST",route="/v1/capsules",le="10"} 0"#,
            r#"wrenn_http_request_duration_seconds_bucket{method="POST",route="/v1/capsules",le="+Inf"} 1"#,
        ] {
            assert!(
                l.iter().any(|x| x == want),
                "missing {want}\n{}",
                l.join("\n")
            );
        }
        let sum = l
            .iter()
            .find_map(|x| {
                x.strip_prefix(
                    r#"wrenn_http_request_duration_seconds_sum{method="GET",route="/v1/capsules"} "#,
                )
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!((sum - 0.034).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
        let mut out = String::new();
        render_capsules(&mut out, &[("we\"ird".into(), 2), ("running".into(), 3)]);
        assert!(
            out.contains("wrenn_capsules{status=\"we\\\"ird\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("wrenn_capsules{status=\"running\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("wrenn_capsules{status=\"paused\"} 0\n"),
            "{out}"
        );
    }

    #[test]
    fn numbers_as_prometheus_writes_them() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.005), "0.005");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
