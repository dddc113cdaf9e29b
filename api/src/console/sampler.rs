//! The overview's time series: once a second the server reads its cumulative counters and
//! histograms and keeps what changed since the previous reading as one `Sample`, in a ring
//! of the last `SAMPLES_MAX` (so a page opened late still sees the last minutes).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use surge_wal::SYNC_NS_BOUNDS;

use crate::engine::ORDER_EVENTS;
use crate::metrics::LATENCY_BUCKETS_S;
use crate::AppState;

/// Samples kept: five minutes at one a second.
pub const SAMPLES_MAX: usize = 300;
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Cumulative readings are also kept every `READING_INTERVAL`, for `READINGS_MAX` of them
/// (ten minutes), so a window of whole minutes is computed from the counters and histogram
/// buckets at its two ends: exact rates and percentiles over the window, not a mean of
/// per-second figures.
pub const READING_INTERVAL: Duration = Duration::from_secs(10);
pub const READINGS_MAX: usize = 61;
/// The longest window [`Samples::window`] covers, in minutes.
pub const WINDOW_MINUTES_MAX: u64 = 10;

/// What changed over one interval, as rates and percentiles. `None`: nothing to measure
/// (no request, no commit).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// When the interval ended (Unix ms).
    pub at_ms: u64,
    pub interval_s: f64,
    /// Orders per second by event, in the order of `ORDER_EVENTS`.
    pub orders_per_s: [f64; ORDER_EVENTS.len()],
    pub payments_succeeded_per_s: f64,
    pub payments_failed_per_s: f64,
    /// `POST /v1/orders` latency over the interval (from the request histogram).
    pub order_post_p50_ms: Option<f64>,
    pub order_post_p99_ms: Option<f64>,
    /// Records per group commit (one write + one fdatasync), mean over the interval.
    pub group_commit_records: Option<f64>,
    pub fsync_p99_ms: Option<f64>,
}

/// Cumulative figures at one moment.
#[derive(Clone)]
struct Reading {
    at: Instant,
    at_ms: u64,
    orders: [u64; ORDER_EVENTS.len()],
    payments_succeeded: u64,
    payments_failed: u64,
    order_post: Vec<u64>,
    wal_commits: u64,
    wal_records: u64,
    wal_sync: Vec<u64>,
}

#[derive(Default)]
pub struct Samples {
    ring: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    previous: Option<Reading>,
    samples: VecDeque<Sample>,
    /// Every `READING_INTERVAL`, oldest first, at most `READINGS_MAX`.
    readings: VecDeque<Reading>,
}

impl Samples {
    /// Reads the counters and keeps the change since the previous reading.
    pub fn take(&self, state: &AppState) {
        let Some(now) = read(state) else { return };
        let mut ring = self.ring.lock();
        let due = ring.readings.back().is_none_or(|r| now.at.duration_since(r.at) >= READING_INTERVAL);
        if due {
            if ring.readings.len() == READINGS_MAX {
                ring.readings.pop_front();
            }
            ring.readings.push_back(now.clone());
        }
        if let Some(prev) = ring.previous.replace(now.clone()) {
            if ring.samples.len() == SAMPLES_MAX {
                ring.samples.pop_front();
            }
            ring.samples.push_back(sample(&prev, &now));
        }
    }

    /// The samples kept, oldest first.
    pub fn all(&self) -> Vec<Sample> {
        self.ring.lock().samples.iter().cloned().collect()
    }

    /// Rates and percentiles from the kept reading closest to `minutes` ago (at most
    /// `WINDOW_MINUTES_MAX`; the oldest kept if the server has run for less) to the newest.
    /// `None` until two readings exist.
    pub fn window(&self, minutes: u64) -> Option<Sample> {
        let ring = self.ring.lock();
        let newest = ring.previous.as_ref()?;
        let span = Duration::from_secs(minutes.clamp(1, WINDOW_MINUTES_MAX) * 60);
        let oldest = ring
            .readings
            .iter()
            .find(|r| newest.at.duration_since(r.at) <= span)
            .or(ring.readings.front())
            .filter(|r| r.at < newest.at)?;
        Some(sample(oldest, newest))
    }
}

/// Samples once a second for as long as the runtime runs (`surge serve` starts it).
pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            state.console().samples.take(&state);
        }
    });
}

fn read(state: &AppState) -> Option<Reading> {
    let engine = state.engine().ok()?;
    let business = engine.business_figures();
    let wal = engine.stats().wal;
    let order_post = state.http().latency_counts("/v1/orders", "POST").unwrap_or_default();
    Some(Reading {
        at: Instant::now(),
        at_ms: crate::engine::now_ms(),
        orders: business.orders,
        payments_succeeded: business.payments_succeeded,
        payments_failed: business.payments_failed,
        order_post,
        wal_commits: wal.as_ref().map_or(0, |w| w.commits),
        wal_records: wal.as_ref().map_or(0, |w| w.records),
        wal_sync: wal.map(|w| w.sync_ns_hist.to_vec()).unwrap_or_default(),
    })
}

fn sample(prev: &Reading, now: &Reading) -> Sample {
    let interval_s = now.at.duration_since(prev.at).as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / interval_s;
    let diff = |a: &[u64], b: &[u64]| -> Vec<u64> {
        b.iter().enumerate().map(|(i, n)| n.saturating_sub(a.get(i).copied().unwrap_or(0))).collect()
    };
    let latency_ms: Vec<f64> = LATENCY_BUCKETS_S.iter().map(|b| b * 1e3).collect();
    let order_post = diff(&prev.order_post, &now.order_post);
    let sync_ms: Vec<f64> = SYNC_NS_BOUNDS.iter().map(|b| *b as f64 / 1e6).collect();
    let sync = diff(&prev.wal_sync, &now.wal_sync);
    let commits = now.wal_commits.saturating_sub(prev.wal_commits);
    let records = now.wal_records.saturating_sub(prev.wal_records);
    Sample {
        at_ms: now.at_ms,
        interval_s,
        orders_per_s: std::array::from_fn(|i| rate(prev.orders[i], now.orders[i])),
        payments_succeeded_per_s: rate(prev.payments_succeeded, now.payments_succeeded),
        payments_failed_per_s: rate(prev.payments_failed, now.payments_failed),
        order_post_p50_ms: quantile(&latency_ms, &order_post, 0.5),
        order_post_p99_ms: quantile(&latency_ms, &order_post, 0.99),
        group_commit_records: (commits > 0).then(|| records as f64 / commits as f64),
        fsync_p99_ms: quantile(&sync_ms, &sync, 0.99),
    }
}

/// The `q` quantile of observations counted per bucket (`counts`: one per bound, then the
/// overflow), interpolated linearly within its bucket as Prometheus' `histogram_quantile`
/// does; in the overflow bucket, the last bound. `None` without observations.
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, n) in counts.iter().enumerate() {
        if *n > 0 && (below + n) as f64 >= rank {
            let Some(upper) = bounds.get(i) else { return bounds.last().copied() };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some(lower + (upper - lower) * ((rank - below as f64) / *n as f64).clamp(0.0, 1.0));
        }
        below += n;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let bounds = [1.0, 2.0, 4.0];
        assert_eq!(quantile(&bounds, &[0, 0, 0, 0], 0.5), None);
        assert_eq!(quantile(&bounds, &[10, 0, 0, 0], 0.5), Some(0.5));
        assert_eq!(quantile(&bounds, &[0, 10, 0, 0], 0.99), Some(1.99));
        assert_eq!(quantile(&bounds, &[0, 0, 0, 3], 0.5), Some(4.0), "overflow: the last bound");
    }
}
