//! What each sink is doing, shared with whoever renders metrics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::breaker::BreakerState;

/// Updated by the sink's driver thread, read by `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStatus {
    pub name: &'static str,
    /// Cluster mode: the partition whose log the sink reads (a `partition` label).
    pub partition: Option<u32>,
    /// Last LSN the sink acknowledged.
    pub written_lsn: AtomicU64,
    /// Durable LSN of the log when last looked at.
    pub durable_lsn: AtomicU64,
    /// 0 when caught up; while behind, the age of the newest written event (streaming) or
    /// of the oldest durable event not yet written (while the sink is down).
    pub lag_ms: AtomicU64,
    pub events_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub failures: AtomicU64,
    breaker: AtomicU8,
    stopped: AtomicU8,
}

impl SinkStatus {
    pub fn new(name: &'static str) -> Arc<SinkStatus> {
        SinkStatus::labelled(name, None)
    }

    pub fn labelled(name: &'static str, partition: Option<u32>) -> Arc<SinkStatus> {
        Arc::new(SinkStatus { name, partition, ..SinkStatus::default() })
    }

    pub fn lag_records(&self) -> u64 {
        self.durable_lsn.load(Ordering::Relaxed).saturating_sub(self.written_lsn.load(Ordering::Relaxed))
    }

    pub fn breaker(&self) -> BreakerState {
        BreakerState::from_u8(self.breaker.load(Ordering::Relaxed))
    }

    pub(crate) fn set_breaker(&self, state: BreakerState) {
        self.breaker.store(state as u8, Ordering::Relaxed);
    }

    /// True once the sink stopped for good (a fatal error).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn set_stopped(&self) {
        self.stopped.store(1, Ordering::Relaxed);
    }
}

/// Appends the relay's metrics in Prometheus text format.
pub fn render_prometheus(statuses: &[Arc<SinkStatus>], out: &mut String) {
    type Metric = (&'static str, &'static str, &'static str, fn(&SinkStatus) -> f64);
    let metrics: [Metric; 8] = [
        ("surge_relay_lag_records", "gauge", "Durable records the sink has not written yet", |s| {
            s.lag_records() as f64
        }),
        ("surge_relay_lag_seconds", "gauge", "How far behind the sink is in time (0 when caught up)", |s| {
            s.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
        }),
        ("surge_relay_written_lsn", "gauge", "Last LSN the sink acknowledged", |s| {
            s.written_lsn.load(Ordering::Relaxed) as f64
        }),
        ("surge_relay_events_total", "counter", "Events written to the sink", |s| {
            s.events_written.load(Ordering::Relaxed) as f64
        }),
        ("surge_relay_batches_total", "counter", "Batches the sink acknowledged (events per batch: the ratio)", |s| {
            s.batches_written.load(Ordering::Relaxed) as f64
        }),
        ("surge_relay_failures_total", "counter", "Failed connects or writes", |s| {
            s.failures.load(Ordering::Relaxed) as f64
        }),
        ("surge_relay_breaker_state", "gauge", "Circuit breaker: 0 closed, 1 open, 2 half-open", |s| {
            s.breaker() as u8 as f64
        }),
        ("surge_relay_stopped", "gauge", "1 once the sink stopped on a fatal error", |s| {
            u8::from(s.is_stopped()) as f64
        }),
    ];
    for (name, kind, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in statuses {
            let partition = s.partition.map(|p| format!(",partition=\"{p}\"")).unwrap_or_default();
            let _ = writeln!(out, "{name}{{sink=\"{}\"{partition}}} {}", s.name, value(s));
        }
    }
}
