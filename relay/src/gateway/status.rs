//! What the gateway worker is doing, shared with whoever renders `/metrics`. Updated by the
//! worker's thread only; read by anyone. Labels are bounded: gateways are configured (at
//! most 32), operations and outcomes are fixed sets.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::breaker::BreakerState;

/// The calls the worker makes, as the `op` label shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOp {
    Authorize = 0,
    Capture = 1,
    Void = 2,
    Refund = 3,
    Lookup = 4,
}

const CALL_OPS: [&str; 5] = ["authorize", "capture", "void", "refund", "lookup"];

/// How a call ended, as the `outcome` label shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// 2xx.
    Ok = 0,
    /// 4xx: the gateway answered and refused (not a gateway failure).
    Refused = 1,
    /// 5xx.
    Error = 2,
    /// No answer in time: the call may or may not have been done.
    Timeout = 3,
    /// No connection: the call was not made.
    Unreachable = 4,
}

const CALL_RESULTS: [&str; 5] = ["ok", "refused", "error", "timeout", "unreachable"];

/// Upper bounds of the call latency histogram, in seconds.
const LATENCY_BUCKETS_S: [f64; 9] = [0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0];

#[derive(Debug, Default)]
pub struct GatewayCounters {
    pub name: String,
    calls: [[AtomicU64; 5]; 5],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    breaker: AtomicU8,
}

/// Outcomes of reconciliation look-ups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Settled = 0,
    Pending = 1,
    Failed = 2,
}

#[derive(Debug, Default)]
pub struct GatewayStatus {
    pub gateways: Vec<GatewayCounters>,
    /// Card payments requested and not yet settled, as the worker knows them.
    pub payments_pending: AtomicU64,
    /// When the oldest of them was requested (Unix ms; 0: none).
    pub oldest_pending_at_ms: AtomicU64,
    /// Operations (authorizations, captures, voids, refunds) not finished.
    pub ops_open: AtomicU64,
    pub in_flight: AtomicU64,
    lookups: [AtomicU64; 3],
    /// Reports to the engine by result: ok, refused, unavailable.
    reports: [AtomicU64; 3],
    pub gave_up: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Last LSN the worker has read.
    pub read_lsn: AtomicU64,
    /// Durable LSN of the log when last looked at.
    pub durable_lsn: AtomicU64,
}

impl GatewayStatus {
    pub fn new(names: impl IntoIterator<Item = String>) -> GatewayStatus {
        let gateways = names.into_iter().map(|name| GatewayCounters { name, ..GatewayCounters::default() }).collect();
        GatewayStatus { gateways, ..GatewayStatus::default() }
    }

    pub fn record_call(&self, gateway: usize, op: CallOp, result: CallResult, took_s: f64) {
        let Some(g) = self.gateways.get(gateway) else { return };
        g.calls[op as usize][result as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| took_s <= *b) {
            g.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        g.latency_count.fetch_add(1, Ordering::Relaxed);
        g.latency_sum_us.fetch_add((took_s * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn calls(&self, gateway: usize, op: CallOp, result: CallResult) -> u64 {
        self.gateways.get(gateway).map_or(0, |g| g.calls[op as usize][result as usize].load(Ordering::Relaxed))
    }

    pub fn set_breaker(&self, gateway: usize, state: BreakerState) {
        if let Some(g) = self.gateways.get(gateway) {
            g.breaker.store(state as u8, Ordering::Relaxed);
        }
    }

    pub fn breaker(&self, gateway: usize) -> BreakerState {
        self.gateways
            .get(gateway)
            .map_or(BreakerState::Closed, |g| BreakerState::from_u8(g.breaker.load(Ordering::Relaxed)))
    }

    pub fn record_lookup(&self, result: Lookup) {
        self.lookups[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn lookups(&self, result: Lookup) -> u64 {
        self.lookups[result as usize].load(Ordering::Relaxed)
    }

    /// `result`: 0 ok, 1 refused, 2 unavailable.
    pub fn record_report(&self, result: usize) {
        if let Some(c) = self.reports.get(result) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One status for several workers on the same gateways (cluster mode: one worker per
    /// partition a node owns): counters and gauges of work are summed, so `read_lsn` and
    /// `durable_lsn` are sums too and their difference is the total lag; the oldest pending
    /// payment is the oldest of all; a gateway's breaker shows the worst state of any
    /// worker's (open, then half-open, then closed).
    pub fn sum(statuses: &[std::sync::Arc<GatewayStatus>]) -> GatewayStatus {
        let names = statuses.first().map(|s| s.gateways.iter().map(|g| g.name.clone()).collect::<Vec<_>>());
        let total = GatewayStatus::new(names.unwrap_or_default());
        let add = |to: &AtomicU64, from: &AtomicU64| {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        for s in statuses {
            for (t, g) in total.gateways.iter().zip(&s.gateways) {
                for (t_row, row) in t.calls.iter().zip(&g.calls) {
                    t_row.iter().zip(row).for_each(|(t, c)| add(t, c));
                }
                t.latency_buckets.iter().zip(&g.latency_buckets).for_each(|(t, c)| add(t, c));
                add(&t.latency_count, &g.latency_count);
                add(&t.latency_sum_us, &g.latency_sum_us);
                let worst = |b: u8| match BreakerState::from_u8(b) {
                    BreakerState::Open => 2,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Closed => 0,
                };
                let (mine, theirs) = (t.breaker.load(Ordering::Relaxed), g.breaker.load(Ordering::Relaxed));
                if worst(theirs) > worst(mine) {
                    t.breaker.store(theirs, Ordering::Relaxed);
                }
            }
            for (t, c) in [
                (&total.payments_pending, &s.payments_pending),
                (&total.ops_open, &s.ops_open),
                (&total.in_flight, &s.in_flight),
                (&total.gave_up, &s.gave_up),
                (&total.dead_lettered, &s.dead_lettered),
                (&total.read_lsn, &s.read_lsn),
                (&total.durable_lsn, &s.durable_lsn),
            ] {
                add(t, c);
            }
            total.lookups.iter().zip(&s.lookups).for_each(|(t, c)| add(t, c));
            total.reports.iter().zip(&s.reports).for_each(|(t, c)| add(t, c));
            let oldest = s.oldest_pending_at_ms.load(Ordering::Relaxed);
            let current = total.oldest_pending_at_ms.load(Ordering::Relaxed);
            if oldest != 0 && (current == 0 || oldest < current) {
                total.oldest_pending_at_ms.store(oldest, Ordering::Relaxed);
            }
        }
        total
    }

    /// Age of the oldest unsettled card payment, in seconds (0: none).
    pub fn oldest_pending_age_s(&self) -> f64 {
        match self.oldest_pending_at_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            at_ms => now_ms().saturating_sub(at_ms) as f64 / 1000.0,
        }
    }

    /// Appends the worker's metrics in Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        let _ = writeln!(
            out,
            "# HELP surge_gateway_calls_total Calls to payment gateways by gateway, operation and outcome\n\
             # TYPE surge_gateway_calls_total counter"
        );
        for g in &self.gateways {
            for (op, row) in CALL_OPS.iter().zip(&g.calls) {
                for (result, c) in CALL_RESULTS.iter().zip(row) {
                    let _ = writeln!(
                        out,
                        "surge_gateway_calls_total{{gateway=\"{}\",op=\"{op}\",outcome=\"{result}\"}} {}",
                        g.name,
                        c.load(Ordering::Relaxed)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP surge_gateway_call_duration_seconds Time from sending a gateway call to its answer or timeout\n\
             # TYPE surge_gateway_call_duration_seconds histogram"
        );
        for g in &self.gateways {
            let mut cumulative = 0;
            for (bound, c) in LATENCY_BUCKETS_S.iter().zip(&g.latency_buckets) {
                cumulative += c.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "surge_gateway_call_duration_seconds_bucket{{gateway=\"{}\",le=\"{bound}\"}} {cumulative}",
                    g.name
                );
            }
            let count = g.latency_count.load(Ordering::Relaxed);
            let sum_s = g.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let name = &g.name;
            let _ = writeln!(
                out,
                "surge_gateway_call_duration_seconds_bucket{{gateway=\"{name}\",le=\"+Inf\"}} {count}\n\
                 surge_gateway_call_duration_seconds_sum{{gateway=\"{name}\"}} {sum_s}\n\
                 surge_gateway_call_duration_seconds_count{{gateway=\"{name}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP surge_gateway_breaker_state Circuit breaker per gateway: 0 closed, 1 open, 2 half-open\n\
             # TYPE surge_gateway_breaker_state gauge"
        );
        for g in &self.gateways {
            let _ = writeln!(
                out,
                "surge_gateway_breaker_state{{gateway=\"{}\"}} {}",
                g.name,
                g.breaker.load(Ordering::Relaxed)
            );
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        gauge(
            out,
            "surge_gateway_payments_pending",
            "Card payments requested and not settled yet",
            load(&self.payments_pending),
        );
        gauge(
            out,
            "surge_gateway_oldest_pending_seconds",
            "Age of the oldest card payment not settled yet (0: none)",
            self.oldest_pending_age_s(),
        );
        gauge(
            out,
            "surge_gateway_ops_open",
            "Gateway operations (authorize, capture, void, refund) not finished",
            load(&self.ops_open),
        );
        gauge(out, "surge_gateway_in_flight", "Gateway calls and engine reports in flight", load(&self.in_flight));
        gauge(out, "surge_gateway_read_lsn", "Last log record the gateway worker has read", load(&self.read_lsn));
        let lag = self.durable_lsn.load(Ordering::Relaxed).saturating_sub(self.read_lsn.load(Ordering::Relaxed));
        gauge(out, "surge_gateway_lag_records", "Durable log records the gateway worker has not read yet", lag as f64);
        let _ = writeln!(
            out,
            "# HELP surge_gateway_reconcile_lookups_total Look-ups of payments whose callback did not come, by result\n\
             # TYPE surge_gateway_reconcile_lookups_total counter"
        );
        for (i, result) in ["settled", "pending", "failed"].iter().enumerate() {
            let _ = writeln!(
                out,
                "surge_gateway_reconcile_lookups_total{{result=\"{result}\"}} {}",
                self.lookups[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP surge_gateway_reports_total Results fed back to the engine as commands, by outcome\n\
             # TYPE surge_gateway_reports_total counter"
        );
        for (i, result) in ["ok", "refused", "unavailable"].iter().enumerate() {
            let _ = writeln!(
                out,
                "surge_gateway_reports_total{{result=\"{result}\"}} {}",
                self.reports[i].load(Ordering::Relaxed)
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            out,
            "surge_gateway_gave_up_total",
            "Card payments failed because no gateway took or settled them in time",
            self.gave_up.load(Ordering::Relaxed),
        );
        counter(
            out,
            "surge_gateway_dead_lettered_total",
            "Captures, voids and refunds that kept failing and became dead letters",
            self.dead_lettered.load(Ordering::Relaxed),
        );
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
