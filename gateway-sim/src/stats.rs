//! Counters of what the gateway did (`GET /sim/stats`), so a test can prove from the
//! gateway's side that nothing was charged twice.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Default)]
pub(crate) struct Stats {
    pub payment_requests: AtomicU64,
    pub transactions: AtomicU64,
    pub idempotent_replays: AtomicU64,
    pub failed_requests: AtomicU64,
    pub key_conflicts: AtomicU64,
    pub approved: AtomicU64,
    pub declined: AtomicU64,
    pub cancelled: AtomicU64,
    pub captures: AtomicU64,
    pub refunds: AtomicU64,
    pub callbacks_sent: AtomicU64,
    pub callbacks_dropped: AtomicU64,
    pub callback_failures: AtomicU64,
    pub callbacks_abandoned: AtomicU64,
    pub callbacks_overflow: AtomicU64,
    pub rejected_full: AtomicU64,
    pub rejected_busy: AtomicU64,
}

/// One reading of the counters; `charged_twice` comes from the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub payment_requests: u64,
    pub transactions: u64,
    pub idempotent_replays: u64,
    pub failed_requests: u64,
    pub key_conflicts: u64,
    pub approved: u64,
    pub declined: u64,
    pub cancelled: u64,
    pub captures: u64,
    pub refunds: u64,
    pub callbacks_sent: u64,
    pub callbacks_dropped: u64,
    pub callback_failures: u64,
    pub charged_twice: u64,
    pub callbacks_abandoned: u64,
    pub callbacks_overflow: u64,
    pub rejected_full: u64,
    pub rejected_busy: u64,
}

/// Adds one to a counter (they are only read for reports, so no ordering is needed).
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub fn snapshot(&self, charged_twice: u64) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            payment_requests: get(&self.payment_requests),
            transactions: get(&self.transactions),
            idempotent_replays: get(&self.idempotent_replays),
            failed_requests: get(&self.failed_requests),
            key_conflicts: get(&self.key_conflicts),
            approved: get(&self.approved),
            declined: get(&self.declined),
            cancelled: get(&self.cancelled),
            captures: get(&self.captures),
            refunds: get(&self.refunds),
            callbacks_sent: get(&self.callbacks_sent),
            callbacks_dropped: get(&self.callbacks_dropped),
            callback_failures: get(&self.callback_failures),
            charged_twice,
            callbacks_abandoned: get(&self.callbacks_abandoned),
            callbacks_overflow: get(&self.callbacks_overflow),
            rejected_full: get(&self.rejected_full),
            rejected_busy: get(&self.rejected_busy),
        }
    }
}
