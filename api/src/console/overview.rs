//! What the operator sees at a glance, as one JSON document: readiness and storage, orders
//! and payments, the log's group commits, the relay's sinks, the gateways and dead letters,
//! and the last minutes as samples. Only reads: the engine's figures, the relay's and the
//! gateway worker's status, and one bounded read per shard for the open dead letters.
//! Kept apart from the pages so that another client of the same figures (the MCP server's
//! `health` and `metrics_summary`) can render it too.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::sampler::Sample;
use crate::engine::ORDER_EVENTS;
use crate::AppState;

/// Samples the overview's "last minute" figures are taken over.
pub const WINDOW_SAMPLES: usize = 60;

#[derive(Serialize)]
pub struct Overview {
    pub at_ms: u64,
    pub ready: bool,
    pub storage: Option<Storage>,
    /// Orders by event since start (`ORDER_EVENTS`), and settled payments.
    pub orders_total: Vec<(&'static str, u64)>,
    pub payments_succeeded_total: u64,
    pub payments_failed_total: u64,
    /// Over the last `WINDOW_SAMPLES` samples (about a minute): succeeded / settled, `None`
    /// while nothing settled.
    pub payment_success_rate: Option<f64>,
    pub last_minute: Window,
    pub relay: Vec<Sink>,
    /// `None` without payment gateways.
    pub gateway: Option<Gateway>,
    pub dead_letters_open: Option<u64>,
    /// Answers by class, 1xx..5xx, since start.
    pub http_by_class: [u64; 5],
    pub order_events: [&'static str; ORDER_EVENTS.len()],
    /// One a second, oldest first, the last few minutes.
    pub samples: Vec<Sample>,
}

#[derive(Serialize)]
pub struct Storage {
    pub healthy: bool,
    pub last_failure: Option<String>,
    pub storage_failures: u64,
    pub shards: usize,
    pub merchants: usize,
    pub durable_lsn: Option<u64>,
    pub queued_records: Option<u64>,
    pub snapshots_written: u64,
    pub records_since_snapshot: u64,
    pub snapshot_bytes: u64,
}

#[derive(Serialize, Default)]
pub struct Window {
    pub seconds: f64,
    pub orders_created_per_s: f64,
    pub orders_paid_per_s: f64,
    pub order_post_p50_ms: Option<f64>,
    pub order_post_p99_ms: Option<f64>,
    pub group_commit_records: Option<f64>,
    pub fsync_p99_ms: Option<f64>,
}

#[derive(Serialize)]
pub struct Sink {
    pub name: &'static str,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub breaker: &'static str,
    pub stopped: bool,
}

#[derive(Serialize)]
pub struct Gateway {
    /// `false` when the worker runs in `surge relay` (`--gateway-worker external`).
    pub worker_in_process: bool,
    pub breakers: Vec<(String, &'static str)>,
    pub payments_pending: Option<u64>,
    pub oldest_pending_s: Option<f64>,
}

pub async fn overview(state: &AppState) -> Overview {
    let engine = state.engine().ok();
    let samples = state.console().samples.all();
    let storage = engine.as_ref().map(|e| {
        let s = e.stats();
        Storage {
            healthy: s.healthy,
            last_failure: e.last_failure(),
            storage_failures: s.storage_failures,
            shards: s.shards,
            merchants: s.merchants,
            durable_lsn: s.wal.as_ref().map(|w| w.durable_lsn),
            queued_records: s.wal.as_ref().map(|w| w.queued_records),
            snapshots_written: s.snapshots_written,
            records_since_snapshot: s.records_since_snapshot,
            snapshot_bytes: s.snapshot_bytes,
        }
    });
    let business = engine.as_ref().map(|e| e.business_figures()).unwrap_or_default();
    let recent = &samples[samples.len().saturating_sub(WINDOW_SAMPLES)..];
    let (ok, failed) = recent.iter().fold((0.0, 0.0), |(ok, failed), s| {
        (ok + s.payments_succeeded_per_s * s.interval_s, failed + s.payments_failed_per_s * s.interval_s)
    });
    let relay = state
        .relay_statuses()
        .iter()
        .map(|s| Sink {
            name: s.name,
            lag_records: s.lag_records(),
            lag_seconds: s.lag_ms.load(Ordering::Relaxed) as f64 / 1e3,
            breaker: s.breaker().as_str(),
            stopped: s.is_stopped(),
        })
        .collect();
    let gateway = state.gateway().map(|host| match host.worker_status() {
        Some(w) => {
            let pending = w.payments_pending.load(Ordering::Relaxed);
            Gateway {
                worker_in_process: true,
                breakers: w.gateways.iter().enumerate().map(|(i, g)| (g.name.clone(), w.breaker(i).as_str())).collect(),
                payments_pending: Some(pending),
                oldest_pending_s: (pending > 0).then(|| w.oldest_pending_age_s()),
            }
        }
        None => {
            Gateway { worker_in_process: false, breakers: Vec::new(), payments_pending: None, oldest_pending_s: None }
        }
    });
    let dead_letters_open = match (&engine, state.gateway()) {
        (Some(e), Some(_)) => crate::gateway::dead_letters_open(e).await,
        _ => None,
    };
    Overview {
        at_ms: crate::engine::now_ms(),
        ready: storage.as_ref().is_some_and(|s| s.healthy),
        storage,
        orders_total: ORDER_EVENTS.iter().copied().zip(business.orders).collect(),
        payments_succeeded_total: business.payments_succeeded,
        payments_failed_total: business.payments_failed,
        payment_success_rate: (ok + failed > 0.0).then(|| ok / (ok + failed)),
        last_minute: window(recent),
        relay,
        gateway,
        dead_letters_open,
        http_by_class: state.http().by_class(),
        order_events: ORDER_EVENTS,
        samples,
    }
}

/// Rates over the window, and its slowest percentiles (a minute's p99 is at least its
/// slowest second's, so the worst second is the honest figure without the raw buckets).
fn window(recent: &[Sample]) -> Window {
    let seconds: f64 = recent.iter().map(|s| s.interval_s).sum();
    if seconds <= 0.0 {
        return Window::default();
    }
    let per_s = |f: fn(&Sample) -> f64| recent.iter().map(|s| f(s) * s.interval_s).sum::<f64>() / seconds;
    let max = |f: fn(&Sample) -> Option<f64>| recent.iter().filter_map(f).reduce(f64::max);
    Window {
        seconds,
        orders_created_per_s: per_s(|s| s.orders_per_s[0]),
        orders_paid_per_s: per_s(|s| s.orders_per_s[1]),
        order_post_p50_ms: max(|s| s.order_post_p50_ms),
        order_post_p99_ms: max(|s| s.order_post_p99_ms),
        group_commit_records: max(|s| s.group_commit_records),
        fsync_p99_ms: max(|s| s.fsync_p99_ms),
    }
}
