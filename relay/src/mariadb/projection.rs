//! The sink's own copy of the business state: shards to which it applies every logged
//! event with core's `apply`, so the rows it writes are rendered from core's views and are
//! what the API shows, by construction. Rebuilt from the log (newest snapshot plus the
//! records after it) whenever it may differ from what the database holds.

use std::collections::HashMap;
use std::sync::Arc;

use surge_core::event::EventBody;
use surge_core::ids::Numbered;
use surge_core::image;
use surge_core::ledger::Account;
use surge_core::state::Merchant;
use surge_core::view::{OrderView, PaymentView};
use surge_core::{Event, Shard, UnixMs};
use surge_wal::Lsn;

use crate::batch::{BatchLimits, LoggedEvent, ReadError};
use crate::sink::SinkError;
use crate::source::LogSource;

pub struct Projection {
    shards: Vec<Shard>,
    /// Every event of every record up to here is applied.
    lsn: Lsn,
}

/// What the log directory gave for a wanted position.
pub enum Rebuilt {
    /// The state at exactly the wanted LSN.
    At(Projection),
    /// The wanted LSN is older than the newest snapshot, so only the snapshot's state can
    /// be had: the projection is at the snapshot's LSN.
    Snapshot(Projection),
}

/// An aggregate whose row must be written, keyed within its merchant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Merchant,
    Item(Arc<str>),
    Order(u64),
    Payment(u64),
    Customer(Arc<str>),
}

/// The rows a batch changes: aggregates (with the LSN of the newest event that touched
/// each), the orders created in it (whose lines are written once), and the orders and
/// payments it archived (their rows as they were when they left the state, marked archived).
#[derive(Default)]
pub struct Touched {
    pub aggregates: HashMap<(Arc<str>, Aggregate), Lsn>,
    pub new_orders: Vec<(Arc<str>, u64)>,
    pub archived: HashMap<(Arc<str>, Aggregate), Archived>,
}

/// An order or payment as it was when its `*.archived` event was applied.
pub struct Archived {
    pub view: ArchivedView,
    pub lsn: Lsn,
    pub at_ms: UnixMs,
}

pub enum ArchivedView {
    Order(Box<OrderView>),
    Payment(Box<PaymentView>),
}

impl Projection {
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    pub fn merchant(&self, id: &str) -> Option<&Merchant> {
        let i = surge_core::shard_of(id, self.shards.len());
        self.shards[i].merchant(id)
    }

    pub fn merchants(&self) -> impl Iterator<Item = &Merchant> {
        self.shards.iter().flat_map(Shard::merchants)
    }

    /// The state at `wanted`, or at the newest snapshot if that is later (see [`Rebuilt`]).
    /// Reads the log without changing it, while the server may be writing it: the newest
    /// snapshot, then the durable records after it (a cursor never reads beyond what is
    /// durable, unlike a recovery scan that would trip over a write in progress).
    pub fn rebuild(source: &dyn LogSource, wanted: Lsn) -> Result<Rebuilt, SinkError> {
        let (mut shards, base) = match source.snapshot()? {
            Some((lsn, shards)) => (shards, lsn),
            None => (vec![Shard::new()], 0),
        };
        if wanted < base {
            return Ok(Rebuilt::Snapshot(Projection { shards, lsn: base }));
        }
        let mut lsn = base;
        if wanted > base {
            let mut cursor = source
                .open(base + 1)
                .map_err(|e| SinkError::Transient(format!("opening the log ({source:?}): {e}")))?;
            let limits = BatchLimits { events_max: 10_000, wait_ms: 0 };
            // Bounded by `wanted`: every round applies the next records or returns.
            while lsn < wanted {
                let batch = cursor.read_batch(limits).map_err(|e| match e {
                    ReadError::Record { .. } => SinkError::Fatal(e.to_string()),
                    other => SinkError::Transient(other.to_string()),
                })?;
                if batch.is_empty() {
                    return Err(SinkError::Fatal(format!(
                        "the cold store is at LSN {wanted} but the log ({source:?}) is durable only up to LSN {lsn}: \
                         the database belongs to another log, or the log lost records"
                    )));
                }
                assert_eq!(batch.first_lsn, lsn + 1, "a cursor yields consecutive records");
                // A batch may reach past `wanted`: apply up to it only.
                let upto = batch.last_lsn.min(wanted);
                let events: Vec<Event> =
                    batch.events.into_iter().take_while(|e| e.lsn <= upto).map(|e| e.event).collect();
                image::apply_events(&mut shards, &events)
                    .map_err(|e| SinkError::Fatal(format!("log records {}..={upto}: {e}", lsn + 1)))?;
                lsn = upto;
            }
        }
        Ok(Rebuilt::At(Projection { shards, lsn }))
    }

    /// Applies a batch's events in log order and returns what they touched. On `Err` the
    /// projection is partly applied and must be rebuilt.
    pub fn apply(&mut self, first_lsn: Lsn, last_lsn: Lsn, events: &[LoggedEvent]) -> Result<Touched, SinkError> {
        assert_eq!(first_lsn, self.lsn + 1, "batches follow the projection");
        let mut touched = Touched::default();
        for e in events {
            // An archive takes the aggregate out of the state: its row is rendered now.
            let leaving = self.leaving(&touched, &e.event);
            image::apply_events(&mut self.shards, std::slice::from_ref(&e.event))
                .map_err(|reason| SinkError::Fatal(format!("log record at LSN {}: {reason}", e.lsn)))?;
            self.touch(&mut touched, e.lsn, &e.event);
            if let Some((aggregate, view)) = leaving {
                let key = (e.event.merchant.clone(), aggregate);
                touched.aggregates.remove(&key);
                touched.archived.insert(key, Archived { view, lsn: e.lsn, at_ms: e.event.at_ms });
            }
        }
        self.lsn = last_lsn;
        Ok(touched)
    }

    /// The view of the order or payment `event` archives, before it leaves the state. An
    /// order's payment left just before it (same record): its view comes from `touched`.
    fn leaving(&self, touched: &Touched, event: &Event) -> Option<(Aggregate, ArchivedView)> {
        let m = self.merchant(&event.merchant)?;
        match &event.body {
            EventBody::PaymentArchived(e) => {
                let view = m.payment_view(&payment_id(e.payment))?;
                Some((Aggregate::Payment(e.payment), ArchivedView::Payment(Box::new(view))))
            }
            EventBody::OrderArchived(e) => {
                let mut view = m.order_view(&order_id(e.order))?;
                let payment = m.order(e.order).and_then(|o| o.payment);
                if let (None, Some(p)) = (&view.payment, payment) {
                    let key = (event.merchant.clone(), Aggregate::Payment(p));
                    if let Some(Archived { view: ArchivedView::Payment(p), .. }) = touched.archived.get(&key) {
                        view.payment = Some(p.clone());
                    }
                }
                Some((Aggregate::Order(e.order), ArchivedView::Order(Box::new(view))))
            }
            _ => None,
        }
    }

    fn touch(&self, touched: &mut Touched, lsn: Lsn, event: &Event) {
        use EventBody as B;
        let merchant = &event.merchant;
        let mut mark = |aggregate: Aggregate| {
            touched.aggregates.insert((merchant.clone(), aggregate), lsn);
        };
        match &event.body {
            B::MerchantCreated(_) | B::ApiKeyRotated(_) => mark(Aggregate::Merchant),
            B::ItemPut(e) => mark(Aggregate::Item(e.sku.clone())),
            B::ItemRestocked(e) => mark(Aggregate::Item(e.sku.clone())),
            B::InventoryMoved(e) => mark(Aggregate::Item(e.sku.clone())),
            B::OrderCreated(e) => {
                mark(Aggregate::Order(e.order));
                mark(Aggregate::Customer(e.customer.clone()));
                touched.new_orders.push((merchant.clone(), e.order));
            }
            B::OrderPaid(e) => mark(Aggregate::Order(e.order)),
            B::OrderCancelled(e) => mark(Aggregate::Order(e.order)),
            B::OrderExpired(e) => mark(Aggregate::Order(e.order)),
            B::OrderRefunded(e) => mark(Aggregate::Order(e.order)),
            B::PaymentRequested(e) => {
                mark(Aggregate::Payment(e.payment));
                mark(Aggregate::Order(e.order));
            }
            // The order row shows its payment's status.
            B::PaymentSubmitted(e) => self.touch_payment(&mut mark, merchant, e.payment),
            B::PaymentAuthorized(e) => self.touch_payment(&mut mark, merchant, e.payment),
            B::PaymentCaptured(e) => self.touch_payment(&mut mark, merchant, e.payment),
            B::PaymentRefunded(e) => self.touch_payment(&mut mark, merchant, e.payment),
            B::PaymentFailed(e) => self.touch_payment(&mut mark, merchant, e.payment),
            B::PaymentVoided(e) => self.touch_payment(&mut mark, merchant, e.payment),
            B::PaymentSubmittedVia(e) => self.touch_payment(&mut mark, merchant, e.payment),
            // A void of a late approval may name the payment's transaction.
            B::GatewayRequested(e) => self.touch_payment(&mut mark, merchant, e.payment),
            B::OrderReopened(e) => mark(Aggregate::Order(e.order)),
            // Customers appear with their first hold, order, token or points; their
            // balance moves with every posting to their points account.
            B::HoldCreated(e) => mark(Aggregate::Customer(e.customer.clone())),
            B::TokenIssued(e) => mark(Aggregate::Customer(e.customer.clone())),
            B::PointsCredited(e) => mark(Aggregate::Customer(e.customer.clone())),
            B::PointsDebited(e) => mark(Aggregate::Customer(e.customer.clone())),
            B::LedgerPosted(e) => {
                for account in [&e.debit, &e.credit] {
                    if let Account::CustomerPoints(c) = account {
                        mark(Aggregate::Customer(c.clone()));
                    }
                }
            }
            // Holds, queues, idempotency records and dead letters have no table of their own; ledger
            // postings and every public event are append-only rows too.
            B::HoldReleased(_)
            | B::HoldExpired(_)
            | B::HoldConverted(_)
            | B::QueuePut(_)
            | B::TokenActivated(_)
            | B::TokenExpired(_)
            | B::IdempotencyRecorded(_)
            | B::IdempotencyExpired(_)
            | B::GatewayDeadLettered(_)
            | B::DeadLetterRetried(_)
            | B::DeadLetterResolved(_)
            // Archived orders and payments are rendered before they leave (`leaving`).
            | B::OrderArchived(_)
            | B::PaymentArchived(_)
            | B::HoldArchived(_)
            | B::TokenArchived(_) => {}
        }
    }

    fn touch_payment(&self, mark: &mut impl FnMut(Aggregate), merchant: &str, payment: u64) {
        mark(Aggregate::Payment(payment));
        if let Some(p) = self.merchant(merchant).and_then(|m| m.payment(payment)) {
            mark(Aggregate::Order(p.order));
        }
    }
}

/// `ord_{n}` and friends, as the views show them.
pub fn order_id(n: u64) -> String {
    Numbered::Order.id(n)
}

pub fn payment_id(n: u64) -> String {
    Numbered::Payment.id(n)
}
