//! Latency and outcome recording: each worker records into its own `Stats` and merges it
//! into the shared one now and then (and at the end); merging is exact (hdrhistogram adds
//! counts bucket by bucket).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to one hour (longer ones saturate).
const MAX_US: u64 = 3_600_000_000;
/// Per-second histograms are coarser (2 significant digits) and stop at one minute.
const MAX_SECOND_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_SECOND_US, 2).expect("valid histogram bounds")
}

/// What one HTTP request of an operation ended with, or a finding about such an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `"201"`, `"409 insufficient_stock"`, `"transport: timed out"`.
    pub label: String,
    /// Counts as an error (an expected business refusal such as a sold-out SKU does not).
    pub error: bool,
    /// The answer to one request (or its transport failure). False for a finding about an
    /// answer (one failed operation inside a batch, a 201 without an id): listed with the
    /// answers, always an error, but not a request of its own.
    pub request: bool,
}

impl Outcome {
    /// How one request ended.
    pub fn answer(label: impl Into<String>, error: bool) -> Outcome {
        Outcome { label: label.into(), error, request: true }
    }

    /// Something wrong inside an answer already counted.
    pub fn finding(label: impl Into<String>) -> Outcome {
        Outcome { label: label.into(), error: true, request: false }
    }
}

/// One second of the run (by completion time).
#[derive(Clone, Debug)]
pub struct Second {
    pub ops: u64,
    pub errors: u64,
    pub requests: u64,
    pub hist: Histogram<u64>,
}

impl Default for Second {
    fn default() -> Self {
        Second { ops: 0, errors: 0, requests: 0, hist: second_histogram() }
    }
}

#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency of every operation, in microseconds.
    pub hist: Histogram<u64>,
    pub ops: u64,
    /// Operations with at least one error outcome.
    pub failed_ops: u64,
    /// Requests that ended (answered or failed in transport).
    pub requests: u64,
    /// Outcomes by label (requests and findings).
    pub by_label: BTreeMap<String, (u64, bool)>,
    pub seconds: BTreeMap<u32, Second>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hist: histogram(),
            ops: 0,
            failed_ops: 0,
            requests: 0,
            by_label: BTreeMap::new(),
            seconds: BTreeMap::new(),
        }
    }
}

impl Stats {
    /// Records one operation that finished `at` after the start of the run.
    pub fn record(&mut self, latency: Duration, at: Duration, outcomes: &[Outcome]) {
        let us = (latency.as_micros() as u64).max(1);
        self.hist.saturating_record(us);
        self.ops += 1;
        let failed = outcomes.iter().any(|o| o.error);
        let requests = outcomes.iter().filter(|o| o.request).count() as u64;
        self.failed_ops += u64::from(failed);
        self.requests += requests;
        for o in outcomes {
            match self.by_label.get_mut(&o.label) {
                Some(e) => e.0 += 1,
                None => {
                    self.by_label.insert(o.label.clone(), (1, o.error));
                }
            }
        }
        let s = self.seconds.entry(at.as_secs() as u32).or_default();
        s.ops += 1;
        s.errors += u64::from(failed);
        s.requests += requests;
        s.hist.saturating_record(us);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.ops += other.ops;
        self.failed_ops += other.failed_ops;
        self.requests += other.requests;
        for (label, (n, error)) in &other.by_label {
            let e = self.by_label.entry(label.clone()).or_insert((0, *error));
            e.0 += n;
        }
        for (sec, s) in &other.seconds {
            let d = self.seconds.entry(*sec).or_default();
            d.ops += s.ops;
            d.errors += s.errors;
            d.requests += s.requests;
            d.hist.add(&s.hist).expect("same histogram bounds");
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    pub fn clear(&mut self) {
        *self = Stats::default();
    }

    pub fn errors(&self) -> u64 {
        self.by_label.values().filter(|(_, e)| *e).map(|(n, _)| n).sum()
    }

    /// Percentiles and shape of the whole run, in milliseconds.
    pub fn latency(&self) -> Latency {
        let q = |p: f64| if self.hist.is_empty() { 0.0 } else { self.hist.value_at_quantile(p) as f64 / 1000.0 };
        Latency {
            min_ms: if self.hist.is_empty() { 0.0 } else { self.hist.min() as f64 / 1000.0 },
            mean_ms: self.hist.mean() / 1000.0,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if self.hist.is_empty() { 0.0 } else { self.hist.max() as f64 / 1000.0 },
        }
    }

    /// One row per second from the first to the last one seen (gaps are zero rows).
    pub fn timeline(&self) -> Vec<SecondRow> {
        let Some(last) = self.seconds.keys().next_back().copied() else { return Vec::new() };
        (0..=last)
            .map(|sec| match self.seconds.get(&sec) {
                Some(s) => SecondRow {
                    second: sec,
                    ops: s.ops,
                    errors: s.errors,
                    requests: s.requests,
                    p50_ms: s.hist.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: s.hist.value_at_quantile(0.99) as f64 / 1000.0,
                    max_ms: s.hist.max() as f64 / 1000.0,
                },
                None => SecondRow { second: sec, ..SecondRow::default() },
            })
            .collect()
    }
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct SecondRow {
    pub second: u32,
    pub ops: u64,
    pub errors: u64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Vec<Outcome> {
        vec![Outcome::answer("201", false)]
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut all = Stats::default();
        let mut parts = vec![Stats::default(), Stats::default(), Stats::default()];
        for i in 0..3000u64 {
            let lat = Duration::from_micros(100 + (i * 7919) % 50_000);
            let at = Duration::from_millis(i);
            let outcomes = if i % 10 == 0 { vec![Outcome::answer("503 storage_unavailable", true)] } else { ok() };
            all.record(lat, at, &outcomes);
            parts[(i % 3) as usize].record(lat, at, &outcomes);
        }
        let mut merged = Stats::default();
        for p in &parts {
            merged.merge(p);
        }
        assert_eq!(merged.ops, 3000);
        assert_eq!(merged.failed_ops, 300);
        assert_eq!(merged.errors(), 300);
        assert_eq!(merged.hist, all.hist);
        assert_eq!(merged.latency(), all.latency());
        assert_eq!(merged.timeline(), all.timeline());
        assert_eq!(merged.by_label, all.by_label);
        assert_eq!(merged.timeline().len(), 3);
        assert_eq!(merged.timeline()[0].ops, 1000);
    }

    #[test]
    fn percentiles_are_within_histogram_precision() {
        let mut s = Stats::default();
        for ms in 1..=1000u64 {
            s.record(Duration::from_millis(ms), Duration::ZERO, &ok());
        }
        let l = s.latency();
        assert!((l.p50_ms - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99_ms - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max_ms - 1000.0).abs() <= 1.0, "{l:?}");
        assert!((l.min_ms - 1.0).abs() <= 0.01, "{l:?}");
    }

    #[test]
    fn findings_are_listed_with_the_answers_but_are_not_requests() {
        let mut s = Stats::default();
        let batch = [Outcome::answer("200", false), Outcome::finding("batch op 409 insufficient_stock")];
        s.record(Duration::from_millis(1), Duration::ZERO, &batch);
        assert_eq!((s.ops, s.requests, s.failed_ops), (1, 1, 1));
        assert_eq!(s.by_label.len(), 2);
        assert_eq!(s.timeline()[0].requests, 1);
    }

    #[test]
    fn timeline_fills_gaps_with_zero_rows() {
        let mut s = Stats::default();
        s.record(Duration::from_millis(1), Duration::from_millis(100), &ok());
        s.record(Duration::from_millis(1), Duration::from_millis(3100), &ok());
        let t = s.timeline();
        assert_eq!(t.iter().map(|r| r.ops).collect::<Vec<_>>(), vec![1, 0, 0, 1]);
    }
}
