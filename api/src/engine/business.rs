//! The business in `/metrics`: orders, payments, points, holds, stock and waiting rooms, as
//! counters derived from the events the engine applies, and the answers it gives (idempotent
//! replays, refusals by error code).
//!
//! core knows nothing of metrics; the host tallies each request's (or tick's) events under
//! the shard's lock, where the state they were applied to can still say a payment's method
//! or an item's stock, and adds the tally once the log reports the record durable. So a
//! counter counts exactly what the log holds: a change a storage failure took back (the
//! shards are rebuilt from the log) is never counted, and replaying the log at start counts
//! nothing. The counters live as long as the process (Prometheus' `rate` and `increase`
//! take a restart as a counter reset).
//!
//! Cheap on the hot path: a tally is a fixed array on the stack, carried in the log's
//! callback; adding it is one relaxed atomic add per non-zero entry. Labels are fixed sets
//! (no merchant, customer, order or sku).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use surge_core::event::{Bucket, EventBody};
use surge_core::state::Merchant;
use surge_core::{CoreError, Event, PaymentMethod, Shard};

use super::{ExecError, ExecResult};

/// Every counter derived from events, in the order of `SERIES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum C {
    OrdersCreated,
    OrdersPaid,
    OrdersCancelled,
    OrdersExpired,
    OrdersRefunded,
    OrdersReopened,
    /// Then the payment events of points, then those of card: `payment()`.
    PaymentsRequested,
    PointsCredited = C::PaymentsRequested as usize + 2 * PAYMENT_EVENTS.len(),
    PointsSpent,
    HoldsGranted,
    HoldsReleased,
    HoldsExpired,
    HoldsConverted,
    UnitsReserved,
    UnitsReleased,
    UnitsSold,
    UnitsReturned,
    ItemsSoldOut,
    TokensIssued,
    TokensActivated,
    TokensExpired,
}

const COUNTERS: usize = C::TokensExpired as usize + 1;

/// A payment's events as the `event` label of `surge_payments_total` shows them.
const PAYMENT_EVENTS: [&str; 5] = ["requested", "succeeded", "failed", "voided", "refunded"];

#[derive(Clone, Copy)]
enum PaymentEvent {
    Requested = 0,
    Succeeded = 1,
    Failed = 2,
    Voided = 3,
    Refunded = 4,
}

/// The counter of a payment event for `method` (`None` for a payment without one, which
/// the engine never makes).
fn payment(method: PaymentMethod, event: PaymentEvent) -> Option<usize> {
    let method = match method {
        PaymentMethod::Points => 0,
        PaymentMethod::Card => 1,
        PaymentMethod::None => return None,
    };
    Some(C::PaymentsRequested as usize + method * PAYMENT_EVENTS.len() + event as usize)
}

/// (metric, labels) of each counter, in the order of `C`.
const SERIES: [(&str, &str); COUNTERS] = [
    ("surge_orders_total", r#"event="created""#),
    ("surge_orders_total", r#"event="paid""#),
    ("surge_orders_total", r#"event="cancelled""#),
    ("surge_orders_total", r#"event="expired""#),
    ("surge_orders_total", r#"event="refunded""#),
    ("surge_orders_total", r#"event="reopened""#),
    ("surge_payments_total", r#"method="points",event="requested""#),
    ("surge_payments_total", r#"method="points",event="succeeded""#),
    ("surge_payments_total", r#"method="points",event="failed""#),
    ("surge_payments_total", r#"method="points",event="voided""#),
    ("surge_payments_total", r#"method="points",event="refunded""#),
    ("surge_payments_total", r#"method="card",event="requested""#),
    ("surge_payments_total", r#"method="card",event="succeeded""#),
    ("surge_payments_total", r#"method="card",event="failed""#),
    ("surge_payments_total", r#"method="card",event="voided""#),
    ("surge_payments_total", r#"method="card",event="refunded""#),
    ("surge_points_total", r#"event="credited""#),
    ("surge_points_total", r#"event="spent""#),
    ("surge_holds_total", r#"event="granted""#),
    ("surge_holds_total", r#"event="released""#),
    ("surge_holds_total", r#"event="expired""#),
    ("surge_holds_total", r#"event="converted""#),
    ("surge_inventory_units_total", r#"event="reserved""#),
    ("surge_inventory_units_total", r#"event="released""#),
    ("surge_inventory_units_total", r#"event="sold""#),
    ("surge_inventory_units_total", r#"event="returned""#),
    ("surge_items_sold_out_total", ""),
    ("surge_queue_tokens_total", r#"event="issued""#),
    ("surge_queue_tokens_total", r#"event="activated""#),
    ("surge_queue_tokens_total", r#"event="expired""#),
];

/// HELP of each metric of `SERIES`.
const HELP: [(&str, &str); 7] = [
    (
        "surge_orders_total",
        "Orders by lifecycle event made durable: created, paid, cancelled, expired (unpaid in time), \
         refunded (in full), reopened (a card payment failed).",
    ),
    (
        "surge_payments_total",
        "Payments by method and event made durable: requested; then once succeeded (authorized or captured, \
         its order paid) or failed (declined, or no gateway settled it in time); voided; refunded (each refund, \
         partial ones too).",
    ),
    (
        "surge_points_total",
        "Points credited to customers (credits, refunds, released authorizations) and spent on payments.",
    ),
    ("surge_holds_total", "Holds by event: granted, released by the customer, expired, converted into an order."),
    (
        "surge_inventory_units_total",
        "Units of stock moved: reserved (available to held), released (held to available), sold, returned \
         (sold to available).",
    ),
    ("surge_items_sold_out_total", "Times a reservation or sale took an item's last available unit."),
    ("surge_queue_tokens_total", "Waiting-room tokens issued, activated (admitted), expired (active time over)."),
];

/// The contract's error codes (`CoreError::code`), the `code` label of refusals.
const REFUSAL_CODES: [&str; 9] = [
    "invalid_request",
    "not_found",
    "insufficient_stock",
    "invalid_state",
    "idempotency_key_in_use",
    "idempotency_key_reused",
    "insufficient_points",
    "queue_token_required",
    "archived",
];

/// What one group of records will add to the counters once durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tally([u64; COUNTERS]);

impl Default for Tally {
    fn default() -> Tally {
        Tally([0; COUNTERS])
    }
}

impl Tally {
    fn add(&mut self, counter: usize, n: u64) {
        self.0[counter] = self.0[counter].saturating_add(n);
    }

    fn count(&mut self, counter: C, n: u64) {
        self.add(counter as usize, n);
    }

    /// Tallies `events`, just applied to `shard` (its state is what they left behind).
    pub(super) fn events(&mut self, shard: &Shard, events: &[Event]) {
        // A request's events share one merchant, a tick's come merchant by merchant: look
        // each merchant up once per run of its events.
        let mut merchant: Option<&Merchant> = None;
        for event in events {
            if merchant.is_none_or(|m| m.id != event.merchant) {
                merchant = shard.merchant(&event.merchant);
            }
            let method_of = |n: u64| merchant.and_then(|m| m.payment(n)).map(|p| p.method);
            let pay = |n: Option<u64>, e: PaymentEvent, t: &mut Tally| {
                if let Some(c) = n.and_then(method_of).and_then(|m| payment(m, e)) {
                    t.add(c, 1);
                }
            };
            match &event.body {
                EventBody::OrderCreated(_) => self.count(C::OrdersCreated, 1),
                EventBody::OrderPaid(e) => {
                    self.count(C::OrdersPaid, 1);
                    // Every successful payment pays its order, in the same record.
                    let paid_with = merchant.and_then(|m| m.order(e.order)).and_then(|o| o.payment);
                    pay(paid_with, PaymentEvent::Succeeded, self);
                }
                EventBody::OrderCancelled(_) => self.count(C::OrdersCancelled, 1),
                EventBody::OrderExpired(_) => self.count(C::OrdersExpired, 1),
                EventBody::OrderRefunded(_) => self.count(C::OrdersRefunded, 1),
                EventBody::OrderReopened(_) => self.count(C::OrdersReopened, 1),
                EventBody::PaymentRequested(e) => {
                    if let Some(c) = payment(e.method, PaymentEvent::Requested) {
                        self.add(c, 1);
                    }
                }
                EventBody::PaymentFailed(e) => pay(Some(e.payment), PaymentEvent::Failed, self),
                EventBody::PaymentVoided(e) => pay(Some(e.payment), PaymentEvent::Voided, self),
                EventBody::PaymentRefunded(e) => pay(Some(e.payment), PaymentEvent::Refunded, self),
                EventBody::PointsCredited(e) => self.count(C::PointsCredited, e.amount),
                EventBody::PointsDebited(e) => self.count(C::PointsSpent, e.amount),
                EventBody::HoldCreated(_) => self.count(C::HoldsGranted, 1),
                EventBody::HoldReleased(_) => self.count(C::HoldsReleased, 1),
                EventBody::HoldExpired(_) => self.count(C::HoldsExpired, 1),
                EventBody::HoldConverted(_) => self.count(C::HoldsConverted, 1),
                EventBody::InventoryMoved(m) => {
                    let counter = match (m.from, m.to) {
                        (Bucket::Available, Bucket::Held) => Some(C::UnitsReserved),
                        (Bucket::Held, Bucket::Available) => Some(C::UnitsReleased),
                        (_, Bucket::Sold) => Some(C::UnitsSold),
                        (Bucket::Sold, _) => Some(C::UnitsReturned),
                        _ => None,
                    };
                    if let Some(c) = counter {
                        self.count(c, m.qty);
                    }
                    // A command names a sku once (core refuses repeated lines), so one move
                    // per item takes from its available stock: the one that may empty it.
                    let emptied = m.from == Bucket::Available
                        && merchant.and_then(|mc| mc.items.get(&m.sku)).is_some_and(|item| item.available == 0);
                    if emptied {
                        self.count(C::ItemsSoldOut, 1);
                    }
                }
                EventBody::TokenIssued(_) => self.count(C::TokensIssued, 1),
                EventBody::TokenActivated(_) => self.count(C::TokensActivated, 1),
                EventBody::TokenExpired(_) => self.count(C::TokensExpired, 1),
                _ => {}
            }
        }
    }
}

/// Orders by event (as `ORDER_EVENTS` names them) and settled payments of every method,
/// since start: what the console's overview turns into rates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusinessFigures {
    pub orders: [u64; ORDER_EVENTS.len()],
    pub payments_succeeded: u64,
    pub payments_failed: u64,
}

/// The `event` label of `surge_orders_total`, in the order of `BusinessFigures::orders`.
pub const ORDER_EVENTS: [&str; 6] = ["created", "paid", "cancelled", "expired", "refunded", "reopened"];

/// The counters, shared by the request path, the log's writer thread and `/metrics`.
pub(super) struct BusinessCounters {
    durable: [AtomicU64; COUNTERS],
    replays: AtomicU64,
    refused: [AtomicU64; REFUSAL_CODES.len()],
}

impl Default for BusinessCounters {
    fn default() -> BusinessCounters {
        BusinessCounters {
            durable: std::array::from_fn(|_| AtomicU64::new(0)),
            replays: AtomicU64::new(0),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl BusinessCounters {
    /// A group's tally, once the log reported it durable.
    pub(super) fn add(&self, tally: &Tally) {
        for (counter, n) in self.durable.iter().zip(tally.0) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// An answer of the engine: an idempotent replay, or a refusal by its error code.
    /// Storage failures are not refusals (they show as 503s and in `surge_ready`).
    pub(super) fn answered(&self, result: &ExecResult) {
        match result {
            Ok(executed) if executed.replayed => {
                self.replays.fetch_add(1, Ordering::Relaxed);
            }
            Err(ExecError::Core(e)) => self.refused(e),
            _ => {}
        }
    }

    fn refused(&self, e: &CoreError) {
        if let Some(i) = REFUSAL_CODES.iter().position(|code| *code == e.code()) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The orders and payments counters the console charts (`BusinessFigures`).
    pub(super) fn figures(&self) -> BusinessFigures {
        let load = |c: usize| self.durable[c].load(Ordering::Relaxed);
        let paid = |event: PaymentEvent| {
            [PaymentMethod::Points, PaymentMethod::Card].iter().filter_map(|m| payment(*m, event)).map(load).sum()
        };
        BusinessFigures {
            orders: std::array::from_fn(|i| load(C::OrdersCreated as usize + i)),
            payments_succeeded: paid(PaymentEvent::Succeeded),
            payments_failed: paid(PaymentEvent::Failed),
        }
    }

    /// Every series, zeros included: a series that exists from the start lets `rate` and
    /// `increase` see its first change.
    pub(super) fn render(&self, out: &mut String) {
        let mut family = "";
        for ((name, labels), value) in SERIES.iter().zip(&self.durable) {
            if *name != family {
                family = name;
                let help = HELP.iter().find(|(n, _)| n == name).map_or("", |(_, h)| h);
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            }
            let value = value.load(Ordering::Relaxed);
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        let name = "surge_idempotent_replays_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests answered with the stored reply of an earlier request with the same \
             Idempotency-Key.\n# TYPE {name} counter\n{name} {}",
            self.replays.load(Ordering::Relaxed)
        );
        let name = "surge_commands_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Commands the engine refused, by the contract's error code (requests, batch operations, \
             gateway callbacks and reports); idempotency key conflicts are code idempotency_key_reused (another \
             request) and idempotency_key_in_use (its first answer not durable yet).\n# TYPE {name} counter"
        );
        for (code, n) in REFUSAL_CODES.iter().zip(&self.refused) {
            let _ = writeln!(out, "{name}{{code=\"{code}\"}} {}", n.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_core::command::{ItemSpec, LineSpec, OrderSource, PaymentSpec};
    use surge_core::{CaptureMode, Command, Outcome, Request};

    fn run(shard: &mut Shard, tally: &mut Tally, command: Command, now: u64) {
        let req = Request { merchant: "m".into(), idempotency: None, command };
        match shard.execute(&req, now) {
            Ok(Outcome::Applied { events, .. }) => tally.events(shard, &events),
            other => panic!("{other:?}"),
        }
    }

    fn value(tally: &Tally, name: &str, labels: &str) -> u64 {
        let i = SERIES.iter().position(|s| *s == (name, labels)).unwrap_or_else(|| panic!("{name}{{{labels}}}"));
        tally.0[i]
    }

    #[test]
    fn series_and_help_agree() {
        for (i, (name, _)) in SERIES.iter().enumerate() {
            assert!(HELP.iter().any(|(n, _)| n == name), "{name} has no HELP");
            assert!(name.ends_with("_total"), "{name}");
            assert!(!SERIES[i + 1..].iter().any(|s| *s == SERIES[i]), "{:?} twice", SERIES[i]);
        }
        for (method, m) in [(PaymentMethod::Points, "points"), (PaymentMethod::Card, "card")] {
            for (e, event) in [(PaymentEvent::Requested, "requested"), (PaymentEvent::Refunded, "refunded")] {
                let labels = format!("method=\"{m}\",event=\"{event}\"");
                assert_eq!(payment(method, e).map(|i| SERIES[i]), Some(("surge_payments_total", labels.as_str())));
            }
        }
        assert_eq!(SERIES[C::PointsCredited as usize], ("surge_points_total", r#"event="credited""#));
        assert_eq!(SERIES[C::TokensExpired as usize], ("surge_queue_tokens_total", r#"event="expired""#));
    }

    /// Expiries come from `tick`, minutes later: the end-to-end test cannot wait for an
    /// unpaid order's 15 minutes, this one can.
    #[test]
    fn orders_holds_points_and_sell_outs_from_commands_and_ticks() {
        let mut shard = Shard::new();
        let mut t = Tally::default();
        let now = 1_000_000;
        let create = Command::CreateMerchant { name: "Shop".into(), currency: "KRW".into(), api_key_hash: [0; 32] };
        run(&mut shard, &mut t, create, now);
        let item = |sku: &str, stock| ItemSpec { sku: sku.into(), name: "x".into(), price: 100, stock, queue: None };
        run(&mut shard, &mut t, Command::PutItems { items: vec![item("tee", 2), item("cap", 5)] }, now);
        run(
            &mut shard,
            &mut t,
            Command::CreditPoints { customer: "c".into(), amount: 500, reason: "gift".into() },
            now,
        );
        let lines = |sku: &str, qty| vec![LineSpec { sku: sku.into(), qty }];
        let order = |sku: &str, qty, method| Command::CreateOrder {
            customer: "c".into(),
            source: OrderSource::Lines(lines(sku, qty)),
            payment: PaymentSpec { method, capture: CaptureMode::Automatic, card: None },
            queue_token: None,
        };
        run(&mut shard, &mut t, order("tee", 2, PaymentMethod::Points), now);
        run(&mut shard, &mut t, order("cap", 2, PaymentMethod::None), now);
        run(
            &mut shard,
            &mut t,
            Command::CreateHold { customer: "c".into(), lines: lines("cap", 3), ttl_s: Some(60), queue_token: None },
            now,
        );
        assert_eq!(value(&t, "surge_orders_total", r#"event="created""#), 2);
        assert_eq!(value(&t, "surge_orders_total", r#"event="paid""#), 1);
        assert_eq!(value(&t, "surge_payments_total", r#"method="points",event="requested""#), 1);
        assert_eq!(value(&t, "surge_payments_total", r#"method="points",event="succeeded""#), 1);
        assert_eq!(value(&t, "surge_points_total", r#"event="credited""#), 500);
        assert_eq!(value(&t, "surge_points_total", r#"event="spent""#), 200);
        assert_eq!(value(&t, "surge_inventory_units_total", r#"event="sold""#), 2);
        assert_eq!(value(&t, "surge_inventory_units_total", r#"event="reserved""#), 5);
        assert_eq!(value(&t, "surge_holds_total", r#"event="granted""#), 1);
        assert_eq!(value(&t, "surge_items_sold_out_total", ""), 2, "tee by the order, cap by the hold");

        let mut later = Tally::default();
        let events = shard.tick(now + 16 * 60 * 1000);
        later.events(&shard, &events);
        assert_eq!(value(&later, "surge_orders_total", r#"event="expired""#), 1);
        assert_eq!(value(&later, "surge_holds_total", r#"event="expired""#), 1);
        assert_eq!(value(&later, "surge_inventory_units_total", r#"event="released""#), 5);
        assert_eq!(value(&later, "surge_items_sold_out_total", ""), 0);

        let counters = BusinessCounters::default();
        counters.add(&t);
        counters.add(&later);
        let mut text = String::new();
        counters.render(&mut text);
        assert!(text.contains("surge_orders_total{event=\"expired\"} 1\n"), "{text}");
        assert!(text.contains("surge_items_sold_out_total 2\n"), "{text}");
        assert!(text.contains("surge_commands_refused_total{code=\"archived\"} 0\n"), "{text}");
    }
}
