//! `tick(now)`: what time alone decides. Holds and unpaid orders past `expires_at` expire
//! and their stock returns; active tokens past their TTL expire; waiting tokens activate in
//! arrival order into free slots; idempotency records past their retention are forgotten;
//! settled aggregates older than the retention are archived. Each kind is bounded per tick
//! (`limits::TICK_*_MAX`); a backlog drains over later ticks.
//!
//! Archiving (`Settings::retain_settled_ms`, R): an aggregate whose last change is at least
//! R old and that nothing can change any more leaves memory, one `*.archived` event each:
//! - an order `cancelled`, `expired`, `refunded`, or `paid` with its payment captured
//!   (partially refunded or not): `payment.archived` of its payment (which must be in a
//!   terminal status and R old too, with no dead letter waiting for an operator), then
//!   `hold.archived` of the hold it came from, then `order.archived`, in one record;
//! - a payment on its own: a failed payment that is no longer its order's payment (the order
//!   was paid again), or any terminal payment whose order was archived;
//! - a hold `released` or `expired`, or `converted` into an order that was archived;
//! - a waiting-room token `expired` (R after the end of its activity).
//!
//! So the refund window of a paid order is the retention: a refund (or a cancellation) is
//! possible until the order is archived, at least R after its last change. Orders waiting
//! for a payment, authorized payments, held holds, and waiting or active tokens are never
//! archived. The scan walks each collection in number order from a cursor and stops at the
//! first aggregate created less than R ago (everything after it is younger), so the work per
//! tick is bounded by `TICK_ARCHIVE_SCAN_MAX` looks and `TICK_ARCHIVES_MAX` events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::event::{self as ev, Bucket, Event, EventBody};
use crate::ids::UnixMs;
use crate::limits::{
    TICK_ACTIVATIONS_MAX, TICK_ARCHIVES_MAX, TICK_ARCHIVE_SCAN_MAX, TICK_EXPIRIES_MAX, TICK_IDEMPOTENCY_MAX,
};
use crate::numbered::NumberedVec;
use crate::state::{DeadLetterStatus, HoldStatus, Merchant, OrderStatus, PaymentStatus, StateLine, TokenStatus};
use crate::state::{Deadline, DeadlineKind, Shard};

/// Archive scan cursors: (merchant position, kind, queue position) -> next index to look at.
pub(crate) type Cursors = BTreeMap<(u32, u8, u32), usize>;

const SCAN_ORDERS: u8 = 0;
const SCAN_PAYMENTS: u8 = 1;
const SCAN_HOLDS: u8 = 2;
const SCAN_TOKENS: u8 = 3;

impl Shard {
    /// The events `tick(now)` would apply. Reads only.
    pub fn decide_tick(&self, now: UnixMs) -> Vec<Event> {
        self.decide_tick_with_cursors(now).0
    }

    /// `decide_tick` and where the archive scan goes on at the next tick.
    pub(crate) fn decide_tick_with_cursors(&self, now: UnixMs) -> (Vec<Event>, Cursors) {
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
        let cursors = self.decide_archives(now, &mut events);
        (events, cursors)
    }

    /// Archive events of settled aggregates at least the retention old (module doc).
    fn decide_archives(&self, now: UnixMs, events: &mut Vec<Event>) -> Cursors {
        let Some(cutoff) = now.checked_sub(self.settings.retain_settled_ms) else {
            return self.archive_cursors.clone();
        };
        let mut budget = Budget { scan: TICK_ARCHIVE_SCAN_MAX, events: TICK_ARCHIVES_MAX };
        let mut cursors = Cursors::new();
        let cursor = |key| self.archive_cursors.get(&key).copied().unwrap_or(0);
        for (mi, m) in self.merchants.iter().enumerate() {
            let mi = mi as u32;
            // Payments a dead letter still waits on stay (an operator may retry them).
            let blocked: BTreeSet<u64> = m
                .dead_letters
                .iter()
                .filter(|dl| dl.status != DeadLetterStatus::Resolved)
                .map(|dl| dl.payment)
                .collect();
            let mut out = Vec::new();
            let key = (mi, SCAN_ORDERS, 0);
            let next = scan(
                &m.orders,
                cursor(key),
                cutoff,
                |o| o.created_at_ms,
                &mut budget,
                |i, o| archive_order(m, i as u64 + 1, o, cutoff, &blocked, &mut out),
            );
            keep(&mut cursors, key, next);
            let key = (mi, SCAN_PAYMENTS, 0);
            let next = scan(
                &m.payments,
                cursor(key),
                cutoff,
                |p| p.created_at_ms,
                &mut budget,
                |i, p| {
                    let n = i as u64 + 1;
                    let terminal = !matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized);
                    // The current payment of an order in memory goes with its order.
                    let alone = m.order(p.order).is_none_or(|o| o.payment != Some(n));
                    if terminal && alone && p.updated_at_ms <= cutoff && !blocked.contains(&n) {
                        out.push(ev::PaymentArchived { payment: n }.into());
                        return 1;
                    }
                    0
                },
            );
            keep(&mut cursors, key, next);
            let key = (mi, SCAN_HOLDS, 0);
            let next = scan(
                &m.holds,
                cursor(key),
                cutoff,
                |h| h.created_at_ms,
                &mut budget,
                |i, h| {
                    let settled = match h.status {
                        HoldStatus::Held => false,
                        HoldStatus::Released | HoldStatus::Expired => true,
                        // A converted hold goes with its order, or alone once the order is gone.
                        HoldStatus::Converted => h.order.is_none_or(|o| m.order(o).is_none()),
                    };
                    if settled && h.updated_at_ms <= cutoff {
                        out.push(ev::HoldArchived { hold: i as u64 + 1 }.into());
                        return 1;
                    }
                    0
                },
            );
            keep(&mut cursors, key, next);
            for (qi, q) in m.queues.iter().enumerate() {
                let key = (mi, SCAN_TOKENS, qi as u32);
                let next = scan(
                    &q.tokens,
                    cursor(key),
                    cutoff,
                    |t| t.issued_at_ms,
                    &mut budget,
                    |seq, t| {
                        let ended = t.active_until_ms.unwrap_or(t.issued_at_ms);
                        if t.status == TokenStatus::Expired && ended <= cutoff {
                            out.push(ev::TokenArchived { queue: q.id.clone(), seq: seq as u64 }.into());
                            return 1;
                        }
                        0
                    },
                );
                keep(&mut cursors, key, next);
            }
            events.extend(out.into_iter().map(|body| Event { merchant: m.id.clone(), at_ms: now, body }));
        }
        cursors
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

/// What one tick's archive scan may still do.
struct Budget {
    scan: usize,
    events: usize,
}

/// Looks at the live entries of `seq` from index `start` on; `decide(index, entry)` pushes
/// the archive events of an entry and returns how many. Returns where the next tick goes
/// on: 0 (the front) once it reaches an entry created after `cutoff` or the end.
fn scan<T>(
    seq: &NumberedVec<T>,
    start: usize,
    cutoff: UnixMs,
    created_at: impl Fn(&T) -> UnixMs,
    budget: &mut Budget,
    mut decide: impl FnMut(usize, &T) -> usize,
) -> usize {
    for (i, entry) in seq.iter_from(start) {
        if created_at(entry) > cutoff {
            return 0;
        }
        // An order's archive is up to three events.
        if budget.scan == 0 || budget.events < 3 {
            return i;
        }
        budget.scan -= 1;
        budget.events = budget.events.saturating_sub(decide(i, entry));
    }
    0
}

fn keep(cursors: &mut Cursors, key: (u32, u8, u32), next: usize) {
    if next > 0 {
        cursors.insert(key, next);
    }
}

/// The archive of order `n` with its payment and hold, if all of it is settled and old.
fn archive_order(
    m: &Merchant,
    n: u64,
    o: &crate::state::Order,
    cutoff: UnixMs,
    blocked: &BTreeSet<u64>,
    out: &mut Vec<EventBody>,
) -> usize {
    let settled = match o.status {
        OrderStatus::Cancelled | OrderStatus::Expired | OrderStatus::Refunded | OrderStatus::Paid => true,
        OrderStatus::AwaitingPayment | OrderStatus::PendingPayment => false,
    };
    if !settled || o.updated_at_ms > cutoff {
        return 0;
    }
    let payment = o.payment.and_then(|pn| Some((pn, m.payment(pn)?)));
    if let Some((pn, p)) = payment {
        let terminal = !matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized);
        if !terminal || p.updated_at_ms > cutoff || blocked.contains(&pn) {
            return 0;
        }
    }
    let before = out.len();
    if let Some((pn, _)) = payment {
        out.push(ev::PaymentArchived { payment: pn }.into());
    }
    if let Some(h) = o.hold.filter(|h| m.hold(*h).is_some()) {
        out.push(ev::HoldArchived { hold: h }.into());
    }
    out.push(ev::OrderArchived { order: n }.into());
    out.len() - before
}
