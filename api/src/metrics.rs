//! Prometheus text for `GET /metrics`: HTTP requests by method and status, a latency
//! histogram, the engine's health and the log's counters. Relaxed atomics, no locks on the
//! request path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "OTHER"];
const STATUS_MAX: usize = 600;
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_S: [f64; 12] = [0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

pub struct HttpMetrics {
    /// `METHODS.len() * STATUS_MAX` counters.
    requests: Vec<AtomicU64>,
    /// Cumulative histogram counts per bucket, plus +Inf at the end.
    latency: Vec<AtomicU64>,
    latency_ns_sum: AtomicU64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: (0..METHODS.len() * STATUS_MAX).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..=BUCKETS_S.len()).map(|_| AtomicU64::new(0)).collect(),
            latency_ns_sum: AtomicU64::new(0),
        }
    }
}

impl HttpMetrics {
    pub fn record(&self, method: &str, status: u16, took: Duration) {
        let m = METHODS.iter().position(|x| *x == method).unwrap_or(METHODS.len() - 1);
        let s = (status as usize).min(STATUS_MAX - 1);
        self.requests[m * STATUS_MAX + s].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS_S.iter().position(|b| secs <= *b).unwrap_or(BUCKETS_S.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_ns_sum.fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Requests answered so far per status class (1xx..5xx).
    pub fn by_class(&self) -> [u64; 5] {
        let mut classes = [0u64; 5];
        for (i, c) in self.requests.iter().enumerate() {
            let status = i % STATUS_MAX;
            if (100..600).contains(&status) {
                classes[status / 100 - 1] += c.load(Ordering::Relaxed);
            }
        }
        classes
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP surge_http_requests_total HTTP requests answered, by method and status.");
        let _ = writeln!(out, "# TYPE surge_http_requests_total counter");
        for (m, method) in METHODS.iter().enumerate() {
            for status in 0..STATUS_MAX {
                let n = self.requests[m * STATUS_MAX + status].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "surge_http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}");
                }
            }
        }
        let _ = writeln!(out, "# HELP surge_http_request_duration_seconds Time from request to response.");
        let _ = writeln!(out, "# TYPE surge_http_request_duration_seconds histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_S.iter().enumerate() {
            cumulative += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "surge_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.latency[BUCKETS_S.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "surge_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.latency_ns_sum.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "surge_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "surge_http_request_duration_seconds_count {cumulative}");
    }
}

/// One gauge or counter line with its HELP and TYPE.
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}
