//! `tick(now)`: what time alone decides. Holds and unpaid orders past `expires_at` expire
//! and their stock returns; active tokens past their TTL expire; waiting tokens activate in
//! arrival order into free slots; idempotency records past their retention are forgotten.
//! Each kind is bounded per tick (`limits::TICK_*_MAX`); a backlog drains over later ticks.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::event::{self as ev, Bucket, Event, EventBody};
use crate::ids::UnixMs;
use crate::limits::{TICK_ACTIVATIONS_MAX, TICK_EXPIRIES_MAX, TICK_IDEMPOTENCY_MAX};
use crate::shard::{Deadline, DeadlineKind, Shard};
use crate::state::{HoldStatus, Merchant, OrderStatus, StateLine};

impl Shard {
    /// The events `tick(now)` would apply. Reads only.
    pub fn decide_tick(&self, now: UnixMs) -> Vec<Event> {
        let mut events = Vec::new();
        // Tokens expiring in this tick, per (merchant, queue): their slots free up now.
        let mut freed: BTreeMap<(u32, u64), u64> = BTreeMap::new();
        let due = self.deadlines.iter().take_while(|d| d.at_ms <= now).take(TICK_EXPIRIES_MAX);
        for deadline in due {
            let Some(m) = self.merchants.at(deadline.merchant) else {
                continue;
            };
            let mut push = |body: EventBody| events.push(Event { merchant: m.id.clone(), at_ms: now, body });
            match deadline.kind {
                DeadlineKind::Hold => {
                    let Some(hold) = m.hold(deadline.a) else {
                        continue;
                    };
                    debug_assert_eq!(hold.status, HoldStatus::Held);
                    push(ev::HoldExpired { hold: deadline.a }.into());
                    release(m, &hold.lines, &mut push);
                }
                DeadlineKind::Order => {
                    let Some(order) = m.order(deadline.a) else {
                        continue;
                    };
                    debug_assert_eq!(order.status, OrderStatus::AwaitingPayment);
                    push(ev::OrderExpired { order: deadline.a }.into());
                    release(m, &order.lines, &mut push);
                }
                DeadlineKind::Token => {
                    let Some(queue) = m.queues.at(deadline.a as u32) else {
                        continue;
                    };
                    push(ev::TokenExpired { queue: queue.id.clone(), seq: deadline.b }.into());
                    *freed.entry((deadline.merchant, deadline.a)).or_default() += 1;
                }
            }
        }
        let mut activations_budget = TICK_ACTIVATIONS_MAX as u64;
        let mut idempotency_budget = TICK_IDEMPOTENCY_MAX;
        for (mi, m) in self.merchants.iter().enumerate() {
            for (qi, q) in m.queues.iter().enumerate() {
                let active = q.active - freed.get(&(mi as u32, qi as u64)).copied().unwrap_or(0);
                let n = q.max_active.saturating_sub(active).min(q.waiting()).min(activations_budget);
                activations_budget -= n;
                for seq in q.next_waiting..q.next_waiting + n {
                    events.push(Event {
                        merchant: m.id.clone(),
                        at_ms: now,
                        body: ev::TokenActivated { queue: q.id.clone(), seq }.into(),
                    });
                }
            }
            for (key, record) in m.idempotency.oldest() {
                if record.expires_at_ms > now || idempotency_budget == 0 {
                    break;
                }
                idempotency_budget -= 1;
                events.push(Event {
                    merchant: m.id.clone(),
                    at_ms: now,
                    body: ev::IdempotencyExpired { key: key.clone() }.into(),
                });
            }
        }
        events
    }

    /// When the next deadline falls, if any (a host may sleep until then).
    pub fn next_deadline_ms(&self) -> Option<UnixMs> {
        self.deadlines.first().map(|d: &Deadline| d.at_ms)
    }
}

/// Held stock of `lines` back to available.
fn release(m: &Merchant, lines: &[StateLine], push: &mut impl FnMut(EventBody)) {
    for line in lines {
        let Some(item) = m.items.at(line.item) else {
            continue;
        };
        let sku: Arc<str> = item.sku.clone();
        push(ev::InventoryMoved { sku, qty: u64::from(line.qty), from: Bucket::Held, to: Bucket::Available }.into());
    }
}
