//! Rows of every table, rendered from core's views (current-state tables) or from the
//! logged events (append-only tables), into chunked multi-row statements.
//!
//! Current-state rows are upserts that only move forward: an update applies only if the
//! incoming `last_lsn` is newer than the stored one, so a row is never overwritten by an
//! older state. (`last_lsn` is assigned last: MariaDB evaluates the assignments left to
//! right, so the guards above it still see the stored value.)
//!
//! Secrets stay out: merchants have no API key hash column, payments keep only the card's
//! last four digits, and the `events` envelope drops the key hash and the card number.

use surge_core::event::{EventBody, PostingKind};
use surge_core::state::Merchant;
use surge_core::view::{OrderView, PaymentView};
use surge_core::UnixMs;
use surge_wal::Lsn;

use super::projection::{order_id, payment_id, Aggregate, Archived, ArchivedView};
use super::schema::Backfill;
use super::sql::{
    push_bare_datetime, push_datetime, push_field, push_opt_datetime, push_opt_str, push_str, push_u64, Chunked, Limits,
};
use crate::batch::LoggedEvent;
use crate::sink::SinkError;

/// ` ON DUPLICATE KEY UPDATE c = IF(VALUES(last_lsn) > last_lsn, VALUES(c), c), ...,
/// last_lsn = GREATEST(...)`.
macro_rules! forward_only_upsert {
    ($($column:literal),*) => {
        concat!(
            " ON DUPLICATE KEY UPDATE ",
            $($column, " = IF(VALUES(last_lsn) > last_lsn, VALUES(", $column, "), ", $column, "), ",)*
            "last_lsn = GREATEST(last_lsn, VALUES(last_lsn))"
        )
    };
}

const MERCHANTS: &str = "INSERT INTO merchants (id, name, currency, created_at, last_lsn)";
const MERCHANTS_UPSERT: &str = forward_only_upsert!("name", "currency", "created_at");
const ITEMS: &str =
    "INSERT INTO items (merchant_id, sku, name, price, stock, available, held, sold, queue_id, last_lsn)";
const ITEMS_UPSERT: &str = forward_only_upsert!("name", "price", "stock", "available", "held", "sold", "queue_id");
const ORDERS: &str = "INSERT INTO orders (merchant_id, id, customer_id, status, total, line_count, hold_id, \
     payment_id, payment_method, payment_status, created_at, updated_at, expires_at, archived_at, last_lsn)";
const ORDERS_UPSERT: &str = forward_only_upsert!(
    "customer_id",
    "status",
    "total",
    "line_count",
    "hold_id",
    "payment_id",
    "payment_method",
    "payment_status",
    "created_at",
    "updated_at",
    "expires_at",
    "archived_at"
);
const ORDER_LINES: &str = "INSERT INTO order_lines (merchant_id, order_id, line_no, sku, qty, unit_price)";
/// Lines never change once the order exists; rewriting them is idempotent.
const ORDER_LINES_UPSERT: &str =
    " ON DUPLICATE KEY UPDATE sku = VALUES(sku), qty = VALUES(qty), unit_price = VALUES(unit_price)";
const PAYMENTS: &str = "INSERT INTO payments (merchant_id, id, order_id, method, status, capture_mode, amount, \
     captured, refunded, card_kind, card_last4, transaction_key, failure_reason, created_at, updated_at, archived_at, \
     last_lsn)";
const PAYMENTS_UPSERT: &str = forward_only_upsert!(
    "order_id",
    "method",
    "status",
    "capture_mode",
    "amount",
    "captured",
    "refunded",
    "card_kind",
    "card_last4",
    "transaction_key",
    "failure_reason",
    "created_at",
    "updated_at",
    "archived_at"
);
const CUSTOMERS: &str = "INSERT INTO customers (merchant_id, id, points, last_lsn)";
const CUSTOMERS_UPSERT: &str = forward_only_upsert!("points");
/// Append-only: a second insert of the same event is an error, never silently skipped
/// (the offset row makes it impossible; if it happens, something else writes here).
const LEDGER: &str = "INSERT INTO ledger_entries (merchant_id, posting, event_id, lsn, debit_account, \
     credit_account, amount, kind, payment_id, occurred_at)";
const EVENTS: &str =
    "INSERT INTO events (log_partition, lsn, idx, event_id, type, merchant_id, aggregate_id, occurred_at, envelope)";
/// The `events` columns in the order of a [`LoadFile`]'s fields.
pub const EVENTS_LOAD_COLUMNS: &str =
    "(log_partition, lsn, idx, event_id, type, merchant_id, aggregate_id, occurred_at, envelope)";

/// `events` rows as the text of a `LOAD DATA` file: one line per row, fields split by tabs
/// and escaped by [`push_field`].
#[derive(Default)]
pub struct LoadFile {
    pub text: String,
    pub rows: u64,
}

/// One statement builder per table.
pub struct Tables {
    merchants: Chunked,
    items: Chunked,
    orders: Chunked,
    order_lines: Chunked,
    payments: Chunked,
    customers: Chunked,
    ledger: Chunked,
    events: Chunked,
    /// `Some`: `events` rows go here instead of into `events` statements.
    events_file: Option<LoadFile>,
}

impl Tables {
    pub fn new(limits: Limits) -> Tables {
        Tables {
            merchants: Chunked::new(MERCHANTS, MERCHANTS_UPSERT, limits),
            items: Chunked::new(ITEMS, ITEMS_UPSERT, limits),
            orders: Chunked::new(ORDERS, ORDERS_UPSERT, limits),
            order_lines: Chunked::new(ORDER_LINES, ORDER_LINES_UPSERT, limits),
            payments: Chunked::new(PAYMENTS, PAYMENTS_UPSERT, limits),
            customers: Chunked::new(CUSTOMERS, CUSTOMERS_UPSERT, limits),
            ledger: Chunked::new(LEDGER, "", limits),
            events: Chunked::new(EVENTS, "", limits),
            events_file: None,
        }
    }

    /// Like [`Tables::new`], but the `events` rows are gathered for `LOAD DATA`
    /// ([`Tables::take_events_file`]) rather than rendered as `INSERT`s.
    pub fn with_events_file(limits: Limits) -> Tables {
        Tables { events_file: Some(LoadFile::default()), ..Tables::new(limits) }
    }

    /// The `events` rows gathered for `LOAD DATA` (`None` unless built for it).
    pub fn take_events_file(&mut self) -> Option<LoadFile> {
        self.events_file.take()
    }

    /// Rows written so far (all tables).
    pub fn row_count(&self) -> u64 {
        [
            &self.merchants,
            &self.items,
            &self.orders,
            &self.order_lines,
            &self.payments,
            &self.customers,
            &self.ledger,
            &self.events,
        ]
        .iter()
        .map(|c| c.total_rows)
        .sum::<u64>()
            + self.events_file.as_ref().map_or(0, |f| f.rows)
    }

    /// Statements that are full, to run now (keeps memory bounded on big rewrites).
    pub fn take_ready(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for c in self.all_mut() {
            out.append(&mut c.take_ready());
        }
        out
    }

    /// Every remaining statement. Parents before children is not needed (no foreign keys).
    pub fn finish(self) -> Vec<String> {
        let Tables { merchants, items, orders, order_lines, payments, customers, ledger, events, events_file: _ } =
            self;
        [merchants, items, orders, order_lines, payments, customers, ledger, events]
            .into_iter()
            .flat_map(Chunked::finish)
            .collect()
    }

    fn all_mut(&mut self) -> [&mut Chunked; 8] {
        [
            &mut self.merchants,
            &mut self.items,
            &mut self.orders,
            &mut self.order_lines,
            &mut self.payments,
            &mut self.customers,
            &mut self.ledger,
            &mut self.events,
        ]
    }

    /// The current row of one aggregate of `m`, stamped `last_lsn`.
    pub fn aggregate(&mut self, m: &Merchant, aggregate: &Aggregate, last_lsn: Lsn) {
        match aggregate {
            Aggregate::Merchant => self.merchant(m, last_lsn),
            Aggregate::Item(sku) => self.item(m, sku, last_lsn),
            Aggregate::Order(n) => self.order(m, *n, last_lsn),
            Aggregate::Payment(n) => self.payment(m, *n, last_lsn),
            Aggregate::Customer(id) => self.customer(m, id, last_lsn),
        }
    }

    /// Every row of `m` as of `last_lsn` (after a restore from a snapshot).
    pub fn everything_of(&mut self, m: &Merchant, last_lsn: Lsn) {
        self.merchant(m, last_lsn);
        for item in m.items.iter() {
            self.item(m, &item.sku, last_lsn);
        }
        // What is in memory; archived rows were marked when their archive was applied.
        for (i, _) in m.orders.iter() {
            let n = i as u64 + 1;
            self.order(m, n, last_lsn);
            if let Some(v) = m.order_view(&order_id(n)) {
                self.order_lines(&m.id, &v);
            }
        }
        for (i, _) in m.payments.iter() {
            self.payment(m, i as u64 + 1, last_lsn);
        }
        self.backfill(m, Backfill::Customers, last_lsn);
    }

    /// The rows a backfill migration adds, for `m` as of `last_lsn`.
    pub fn backfill(&mut self, m: &Merchant, backfill: Backfill, last_lsn: Lsn) {
        match backfill {
            Backfill::Customers => {
                for c in m.customers.iter() {
                    self.customer(m, &c.id, last_lsn);
                }
            }
        }
    }

    fn customer(&mut self, m: &Merchant, id: &str, last_lsn: Lsn) {
        assert!(m.customers.get(id).is_some(), "customer {id} of merchant {} was touched by an applied event", m.id);
        let v = m.points_view(id);
        self.customers.row(|out| {
            push_str(out, &m.id);
            out.push(',');
            push_str(out, &v.customer_id);
            out.push(',');
            push_u64(out, v.balance);
            out.push(',');
            push_u64(out, last_lsn);
        });
    }

    fn merchant(&mut self, m: &Merchant, last_lsn: Lsn) {
        let v = m.view();
        self.merchants.row(|out| {
            push_str(out, &v.id);
            out.push(',');
            push_str(out, &v.name);
            out.push(',');
            push_str(out, &v.currency);
            out.push(',');
            push_datetime(out, v.created_at_ms);
            out.push(',');
            push_u64(out, last_lsn);
        });
    }

    fn item(&mut self, m: &Merchant, sku: &str, last_lsn: Lsn) {
        let v = m.item_view(sku);
        assert!(v.is_some(), "item {sku} of merchant {} was touched by an applied event", m.id);
        let Some(v) = v else { return };
        self.items.row(|out| {
            push_str(out, &m.id);
            out.push(',');
            push_str(out, &v.sku);
            out.push(',');
            push_str(out, &v.name);
            for n in [v.price, v.stock, v.available, v.held, v.sold] {
                out.push(',');
                push_u64(out, n);
            }
            out.push(',');
            push_opt_str(out, v.queue_id.as_deref());
            out.push(',');
            push_u64(out, last_lsn);
        });
    }

    fn order(&mut self, m: &Merchant, n: u64, last_lsn: Lsn) {
        let v = m.order_view(&order_id(n));
        assert!(v.is_some(), "order {n} of merchant {} was touched by an applied event", m.id);
        let Some(v) = v else { return };
        self.order_row(&m.id, &v, None, last_lsn);
    }

    /// The row of an order or payment as it was when it was archived, marked archived.
    pub fn archived(&mut self, merchant: &str, archived: &Archived) {
        match &archived.view {
            ArchivedView::Order(v) => self.order_row(merchant, v, Some(archived.at_ms), archived.lsn),
            ArchivedView::Payment(v) => self.payment_row(merchant, v, Some(archived.at_ms), archived.lsn),
        }
    }

    fn order_row(&mut self, merchant: &str, v: &OrderView, archived_at_ms: Option<UnixMs>, last_lsn: Lsn) {
        self.orders.row(|out| {
            push_str(out, merchant);
            out.push(',');
            push_str(out, &v.id.to_string());
            out.push(',');
            push_str(out, &v.customer_id);
            out.push(',');
            push_str(out, v.status.as_str());
            out.push(',');
            push_u64(out, v.total);
            out.push(',');
            push_u64(out, v.lines.len() as u64);
            out.push(',');
            push_opt_str(out, v.hold_id.map(|h| h.to_string()).as_deref());
            out.push(',');
            let p = v.payment.as_deref();
            push_opt_str(out, p.map(|p| p.id.to_string()).as_deref());
            out.push(',');
            push_opt_str(out, p.map(|p| p.method.as_str()));
            out.push(',');
            push_opt_str(out, p.map(|p| p.status.as_str()));
            out.push(',');
            push_datetime(out, v.created_at_ms);
            out.push(',');
            push_datetime(out, v.updated_at_ms);
            out.push(',');
            push_opt_datetime(out, v.expires_at_ms);
            out.push(',');
            push_opt_datetime(out, archived_at_ms);
            out.push(',');
            push_u64(out, last_lsn);
        });
    }

    /// The lines of an order (written when the order is created; they never change).
    pub fn order_lines(&mut self, merchant: &str, v: &OrderView) {
        let id = v.id.to_string();
        for (i, line) in v.lines.iter().enumerate() {
            self.order_lines.row(|out| {
                push_str(out, merchant);
                out.push(',');
                push_str(out, &id);
                out.push(',');
                push_u64(out, i as u64 + 1);
                out.push(',');
                push_str(out, &line.sku);
                out.push(',');
                push_u64(out, line.qty);
                out.push(',');
                push_u64(out, line.unit_price.unwrap_or(0));
            });
        }
    }

    fn payment(&mut self, m: &Merchant, n: u64, last_lsn: Lsn) {
        let v = m.payment_view(&payment_id(n));
        assert!(v.is_some(), "payment {n} of merchant {} was touched by an applied event", m.id);
        let Some(v) = v else { return };
        self.payment_row(&m.id, &v, None, last_lsn);
    }

    fn payment_row(&mut self, merchant: &str, v: &PaymentView, archived_at_ms: Option<UnixMs>, last_lsn: Lsn) {
        self.payments.row(|out| {
            push_str(out, merchant);
            out.push(',');
            push_str(out, &v.id.to_string());
            out.push(',');
            push_str(out, &v.order_id.to_string());
            out.push(',');
            push_str(out, v.method.as_str());
            out.push(',');
            push_str(out, v.status.as_str());
            out.push(',');
            push_str(out, v.capture.as_str());
            for n in [v.amount, v.captured, v.refunded] {
                out.push(',');
                push_u64(out, n);
            }
            out.push(',');
            push_opt_str(out, v.card.as_ref().map(|c| c.kind.as_str()));
            out.push(',');
            push_opt_str(out, v.card.as_ref().map(|c| c.last4.as_str()));
            out.push(',');
            push_opt_str(out, v.transaction_key.as_deref());
            out.push(',');
            push_opt_str(out, v.failure_reason.as_deref());
            out.push(',');
            push_datetime(out, v.created_at_ms);
            out.push(',');
            push_datetime(out, v.updated_at_ms);
            out.push(',');
            push_opt_datetime(out, archived_at_ms);
            out.push(',');
            push_u64(out, last_lsn);
        });
    }

    /// The `events` row of a public event (nothing for an internal one). Internal events
    /// write no append-only row at all.
    pub fn event_row(&mut self, e: &LoggedEvent) -> Result<(), SinkError> {
        let Some((_, aggregate_id)) = e.event.aggregate() else { return Ok(()) };
        let event_id = e.event_id();
        let envelope = envelope_json(e)?;
        // Single-node mode's log is partition 0 of the table.
        let partition = u64::from(e.partition.unwrap_or(0));
        if let Some(file) = &mut self.events_file {
            let out = &mut file.text;
            push_u64(out, partition);
            out.push('\t');
            push_u64(out, e.lsn);
            out.push('\t');
            push_u64(out, u64::from(e.index));
            out.push('\t');
            push_field(out, &event_id);
            out.push('\t');
            push_field(out, e.event.type_name());
            out.push('\t');
            push_field(out, &e.event.merchant);
            out.push('\t');
            push_field(out, &aggregate_id);
            out.push('\t');
            push_bare_datetime(out, e.event.at_ms);
            out.push('\t');
            push_field(out, &envelope);
            out.push('\n');
            file.rows += 1;
        } else {
            self.events.row(|out| {
                push_u64(out, partition);
                out.push(',');
                push_u64(out, e.lsn);
                out.push(',');
                push_u64(out, u64::from(e.index));
                out.push(',');
                push_str(out, &event_id);
                out.push(',');
                push_str(out, e.event.type_name());
                out.push(',');
                push_str(out, &e.event.merchant);
                out.push(',');
                push_str(out, &aggregate_id);
                out.push(',');
                push_datetime(out, e.event.at_ms);
                out.push(',');
                push_str(out, &envelope);
            });
        }
        Ok(())
    }

    /// The `ledger_entries` row of a posting (nothing for any other event).
    pub fn ledger_row(&mut self, e: &LoggedEvent) {
        if let EventBody::LedgerPosted(p) = &e.event.body {
            let event_id = e.event_id();
            self.ledger.row(|out| {
                push_str(out, &e.event.merchant);
                out.push(',');
                push_u64(out, p.posting);
                out.push(',');
                push_str(out, &event_id);
                out.push(',');
                push_u64(out, e.lsn);
                out.push(',');
                push_str(out, &p.debit.name());
                out.push(',');
                push_str(out, &p.credit.name());
                out.push(',');
                push_u64(out, p.amount);
                out.push(',');
                push_str(out, posting_kind(p.kind));
                out.push(',');
                push_opt_str(out, p.payment.map(payment_id).as_deref());
                out.push(',');
                push_datetime(out, e.event.at_ms);
            });
        }
    }
}

pub fn posting_kind(kind: PostingKind) -> &'static str {
    match kind {
        PostingKind::PointsCredit => "points_credit",
        PostingKind::Capture => "capture",
        PostingKind::Refund => "refund",
        PostingKind::Authorize => "authorize",
        PostingKind::Release => "release",
    }
}

/// The event's envelope (`surge_core::envelope`) as stored in `events.envelope`. Core's
/// envelope already leaves secrets out (no API key hash; a card's last four digits only).
pub fn envelope_json(e: &LoggedEvent) -> Result<String, SinkError> {
    serde_json::to_string(&e.envelope())
        .map_err(|err| SinkError::Fatal(format!("event {}: envelope: {err}", e.event_id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_move_forward_only_and_assign_last_lsn_last() {
        assert!(ITEMS_UPSERT
            .starts_with(" ON DUPLICATE KEY UPDATE name = IF(VALUES(last_lsn) > last_lsn, VALUES(name), name), "));
        assert!(ITEMS_UPSERT.ends_with(", last_lsn = GREATEST(last_lsn, VALUES(last_lsn))"));
        for upsert in [MERCHANTS_UPSERT, ORDERS_UPSERT, PAYMENTS_UPSERT] {
            assert_eq!(upsert.matches("last_lsn = GREATEST").count(), 1);
            assert!(upsert.ends_with("last_lsn = GREATEST(last_lsn, VALUES(last_lsn))"));
        }
    }

    #[test]
    fn envelopes_hold_no_secrets() {
        use surge_core::command::{CaptureMode, PaymentMethod};
        use surge_core::event::{CardDetails, MerchantCreated, PaymentRequested};
        use surge_core::Event;
        let card = Event {
            merchant: "m-1".into(),
            at_ms: 1,
            body: PaymentRequested {
                payment: 1,
                order: 1,
                method: PaymentMethod::Card,
                amount: 10,
                capture: CaptureMode::Automatic,
                card: Some(CardDetails { number: "1234-5678-9814-1451".into(), kind: "KB".into() }),
            }
            .into(),
        };
        let json = envelope_json(&LoggedEvent { partition: None, lsn: 7, index: 0, event: card }).unwrap_or_default();
        assert!(
            !json.contains("9814") && json.contains(r#""last4":"1451""#) && json.contains(r#""kind":"KB""#),
            "{json}"
        );
        let merchant = Event {
            merchant: "m-1".into(),
            at_ms: 1,
            body: MerchantCreated { name: "shop".into(), currency: "KRW".into(), api_key_hash: [0xab; 32] }.into(),
        };
        let json =
            envelope_json(&LoggedEvent { partition: None, lsn: 7, index: 1, event: merchant }).unwrap_or_default();
        assert!(
            !json.contains("abab") && !json.contains("api_key_hash") && json.contains(r#""name":"shop""#),
            "{json}"
        );
    }
}
