//! Prometheus text for `GET /metrics`: HTTP requests by route template, method and status,
//! latency histograms per route and method, the engine's health, the shards' queues and
//! group commits, and the log's counters. Relaxed atomics, no locks on the request path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Every route template of the router (`lib.rs` `app`), as axum spells it. A request is
/// labelled with the template it matched, never with its raw path, so the label set is
/// bounded; anything else is `unmatched` (the 404 fallback).
pub const ROUTES: [&str; 39] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/admin",
    "/v1/merchants",
    "/v1/items/bulk",
    "/v1/items/{sku}",
    "/v1/items/{sku}/restock",
    "/v1/holds",
    "/v1/holds/{id}",
    "/v1/holds/{id}/release",
    "/v1/orders",
    "/v1/orders/{id}",
    "/v1/orders/{id}/cancel",
    "/v1/orders/{id}/payments",
    "/v1/payments/{id}",
    "/v1/payments/{id}/capture",
    "/v1/payments/{id}/refund",
    "/v1/customers/{id}/points",
    "/v1/customers/{id}/points/credit",
    "/v1/ledger/accounts/{account}",
    "/v1/ledger/trial-balance",
    "/v1/queues/{id}",
    "/v1/queues/{id}/tokens",
    "/v1/queues/{id}/tokens/{token}",
    "/v1/batch",
    "/v1/gateway/callback",
    "/v1/admin/dead-letters",
    "/v1/admin/dead-letters/{id}/retry",
    "/v1/admin/gateway/reports",
    "/v1/admin/merchants/{merchant_id}/orders/{id}",
    "/v1/admin/merchants/{merchant_id}/payments/{id}",
    "/v1/admin/merchants/{merchant_id}/trial-balance",
    "/v1/admin/merchants/{merchant_id}/events/{aggregate_id}",
    "/v1/admin/metrics/window",
    "/v1/cluster",
    "/mcp",
    UNMATCHED,
];
pub const UNMATCHED: &str = "unmatched";
/// The label of every request under `/admin/` (the console's pages, assets and JSON, which
/// are for people and not in the OpenAPI document): index `ROUTES.len()`, after `ROUTES`
/// so that `ROUTES` stays exactly the documented templates plus `unmatched`.
pub const CONSOLE_ROUTE: &str = "/admin/{console}";
/// `ROUTES` and `CONSOLE_ROUTE`.
const ROUTE_LABELS: usize = ROUTES.len() + 1;

fn route_label(index: usize) -> &'static str {
    ROUTES.get(index).copied().unwrap_or(CONSOLE_ROUTE)
}
/// Routes that are not REST operations and so not in `GET /openapi.json`: `/mcp` speaks
/// MCP's JSON-RPC (one endpoint, the method in the body), which OpenAPI cannot describe.
pub const NOT_IN_OPENAPI: [&str; 1] = ["/mcp"];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "OTHER"];
/// Statuses the contract answers with get their own label; any other is counted by class
/// (`2xx` ... `5xx`), which keeps the series bounded.
const STATUSES: [u16; 18] = [200, 201, 202, 204, 400, 401, 402, 403, 404, 405, 409, 410, 413, 415, 422, 429, 500, 503];
const STATUS_SLOTS: usize = STATUSES.len() + 5;
/// Upper bounds of the HTTP latency buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 14] =
    [0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The template `path` matches, as an index into `ROUTES` (`UNMATCHED` when none does). A
/// literal segment beats a parameter, as in axum (`/v1/items/bulk` is not `/v1/items/{sku}`).
/// Runs on every request: the path is split once, the templates once per process.
pub fn route_index(path: &str) -> usize {
    static TEMPLATES: std::sync::OnceLock<Vec<Vec<&'static str>>> = std::sync::OnceLock::new();
    let templates =
        TEMPLATES.get_or_init(|| ROUTES[..ROUTES.len() - 1].iter().map(|t| t.split('/').collect()).collect());
    const SEGMENTS_MAX: usize = 8;
    let unmatched = ROUTES.len() - 1;
    // A path spelled exactly like a template (every literal route, such as POST /v1/orders)
    // is that template: no other one has more literal segments. One comparison each, most
    // decided by the length, instead of splitting and matching segments.
    if let Some(i) = ROUTES[..unmatched].iter().position(|t| *t == path) {
        return i;
    }
    if path.starts_with("/admin/") {
        return ROUTES.len();
    }
    let mut segments = [""; SEGMENTS_MAX];
    let mut n = 0;
    for segment in path.split('/') {
        if n == SEGMENTS_MAX {
            return unmatched;
        }
        segments[n] = segment;
        n += 1;
    }
    let segments = &segments[..n];
    let mut best: Option<(usize, usize)> = None;
    for (i, template) in templates.iter().enumerate() {
        if template.len() != n {
            continue;
        }
        let mut literal = 0;
        let matched = template.iter().zip(segments).all(|(t, p)| {
            if t.starts_with('{') {
                !p.is_empty()
            } else if t == p {
                literal += 1;
                true
            } else {
                false
            }
        });
        if matched && best.is_none_or(|(_, l)| literal > l) {
            best = Some((i, literal));
        }
    }
    best.map_or(unmatched, |(i, _)| i)
}

fn method_index(method: &str) -> usize {
    METHODS.iter().position(|m| *m == method).unwrap_or(METHODS.len() - 1)
}

fn status_slot(status: u16) -> usize {
    match STATUSES.iter().position(|s| *s == status) {
        Some(i) => i,
        None => STATUSES.len() + usize::from(status.clamp(100, 599) / 100 - 1),
    }
}

fn status_label(slot: usize) -> String {
    match STATUSES.get(slot) {
        Some(s) => s.to_string(),
        None => format!("{}xx", slot - STATUSES.len() + 1),
    }
}

/// A Prometheus histogram over fixed bucket bounds.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus +Inf at the end.
    counts: Vec<AtomicU64>,
    /// Sum of the observations, in millionths of the unit (microseconds for seconds).
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds ascend");
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Observations per bucket (not cumulative), +Inf last.
    pub fn counts(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` is empty or `a="b",` style pairs
    /// without braces.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        render_buckets(out, name, labels, self.bounds.iter().copied(), &counts, sum);
    }
}

/// Histogram lines from per-bucket (not cumulative) `counts`: one per bound, then +Inf.
pub fn render_buckets(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: impl Iterator<Item = f64>,
    counts: &[u64],
    sum: f64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    let mut buckets = 0;
    for (bound, count) in bounds.zip(counts) {
        cumulative += count;
        buckets += 1;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
    }
    debug_assert_eq!(buckets + 1, counts.len(), "one count per bound, plus the overflow");
    cumulative += counts.get(buckets).copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
    let braces = |s: &str| if s.is_empty() { String::new() } else { format!("{{{s}}}") };
    let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
    let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
}

pub struct HttpMetrics {
    /// `ROUTES.len() * METHODS.len() * STATUS_SLOTS` counters.
    requests: Vec<AtomicU64>,
    /// One latency histogram per route and method.
    latency: Vec<Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: (0..ROUTE_LABELS * METHODS.len() * STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..ROUTE_LABELS * METHODS.len()).map(|_| Histogram::new(&LATENCY_BUCKETS_S)).collect(),
        }
    }
}

impl HttpMetrics {
    /// `route`: from `route_index` (an index into `ROUTES`, or the console's).
    pub fn record(&self, route: usize, method: &str, status: u16, took: Duration) {
        assert!(route < ROUTE_LABELS, "route index {route} out of range");
        let endpoint = route * METHODS.len() + method_index(method);
        self.requests[endpoint * STATUS_SLOTS + status_slot(status)].fetch_add(1, Ordering::Relaxed);
        self.latency[endpoint].observe(took.as_secs_f64());
    }

    /// The latency histogram of one route template (`ROUTES`) and method, per bucket of
    /// `LATENCY_BUCKETS_S` (+Inf last); `None` for a route or method it does not know.
    pub fn latency_counts(&self, route: &str, method: &str) -> Option<Vec<u64>> {
        let r = ROUTES.iter().position(|t| *t == route)?;
        let m = METHODS.iter().position(|t| *t == method)?;
        Some(self.latency[r * METHODS.len() + m].counts())
    }

    /// Requests answered so far per status class (1xx..5xx).
    pub fn by_class(&self) -> [u64; 5] {
        let mut classes = [0u64; 5];
        for (i, c) in self.requests.iter().enumerate() {
            let slot = i % STATUS_SLOTS;
            let class = match STATUSES.get(slot) {
                Some(s) => usize::from(s / 100 - 1),
                None => slot - STATUSES.len(),
            };
            classes[class] += c.load(Ordering::Relaxed);
        }
        classes
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP surge_http_requests_total HTTP requests answered, by route template, method and status."
        );
        let _ = writeln!(out, "# TYPE surge_http_requests_total counter");
        for r in 0..ROUTE_LABELS {
            let route = route_label(r);
            for (m, method) in METHODS.iter().enumerate() {
                for slot in 0..STATUS_SLOTS {
                    let n = self.requests[(r * METHODS.len() + m) * STATUS_SLOTS + slot].load(Ordering::Relaxed);
                    if n > 0 {
                        let status = status_label(slot);
                        let _ = writeln!(
                            out,
                            "surge_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                        );
                    }
                }
            }
        }
        let name = "surge_http_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time from request to response, by route template and method.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for r in 0..ROUTE_LABELS {
            let route = route_label(r);
            for (m, method) in METHODS.iter().enumerate() {
                let h = &self.latency[r * METHODS.len() + m];
                if h.count() > 0 {
                    h.render(out, name, &format!("route=\"{route}\",method=\"{method}\""));
                }
            }
        }
    }
}

/// One gauge or counter line with its HELP and TYPE.
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// A counter by outcome: one `{name}{result="..."}` line per entry, with HELP and TYPE.
pub fn counters_by_result(out: &mut String, name: &str, help: &str, counts: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (result, n) in counts {
        let _ = writeln!(out, "{name}{{result=\"{result}\"}} {}", n.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_templates() {
        let name = |p: &str| ROUTES[route_index(p)];
        assert_eq!(name("/v1/orders"), "/v1/orders");
        assert_eq!(name("/v1/orders/ord_1"), "/v1/orders/{id}");
        assert_eq!(name("/v1/orders/ord_1/payments"), "/v1/orders/{id}/payments");
        assert_eq!(name("/v1/items/bulk"), "/v1/items/bulk");
        assert_eq!(name("/v1/items/tee"), "/v1/items/{sku}");
        assert_eq!(name("/v1/queues/q/tokens/qt_1_2"), "/v1/queues/{id}/tokens/{token}");
        assert_eq!(name("/v1/orders/"), UNMATCHED);
        assert_eq!(name("/v1/orders/a/b/c"), UNMATCHED);
        assert_eq!(name("/nope"), UNMATCHED);
        assert_eq!(name(""), UNMATCHED);
    }

    #[test]
    fn statuses_are_bounded() {
        assert_eq!(status_label(status_slot(201)), "201");
        assert_eq!(status_label(status_slot(299)), "2xx");
        assert_eq!(status_label(status_slot(599)), "5xx");
        assert_eq!(status_label(status_slot(0)), "1xx");
        assert_eq!(status_label(status_slot(u16::MAX)), "5xx");
    }
}
