//! The JSON the API shows: core's views with RFC 3339 times (`created_at`) instead of Unix
//! milliseconds (`created_at_ms`). Borrowing `Serialize` structs (no intermediate `Value`):
//! rendering is a pure function of the view, so a replayed reply renders byte for byte as
//! the first answer did. Ids stay typed: they write their `hold_1` / `ord_1` / `pay_1` text
//! straight into the output (`collect_str`), with no `String` per id.

use std::cell::RefCell;

use serde::{Serialize, Serializer};
use surge_core::envelope::push_utc_ms;
#[cfg(any(doc, test))]
use surge_core::envelope::rfc3339_ms;
use surge_core::ids::{DeadLetterId, HoldId, OrderId, PaymentId};
use surge_core::ledger::TrialBalance;
use surge_core::view::{
    AccountView, CardView, DeadLetterView, HoldView, ItemView, LineView, MerchantView, OrderView, PaymentView,
    PointsView, QueueView, TokenView,
};
use surge_core::{Reply, UnixMs};

use utoipa::openapi::{KnownFormat, ObjectBuilder, RefOr, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::openapi::schema;
use crate::order_json::write_order;

/// Unix milliseconds rendered as RFC 3339 UTC.
#[derive(Clone, Copy)]
pub struct Time(pub u64);

impl PartialSchema for Time {
    fn schema() -> RefOr<Schema> {
        let format = SchemaFormat::KnownFormat(KnownFormat::DateTime);
        ObjectBuilder::new().schema_type(Type::String).format(Some(format)).into()
    }
}

impl ToSchema for Time {}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with_rfc3339(self.0, |text| s.serialize_str(text))
    }
}

thread_local! {
    /// The last time rendered on this thread and its text: an order reply shows the same
    /// millisecond four times (order and payment, created and updated).
    static LAST_RFC3339: RefCell<(Option<UnixMs>, String)> = const { RefCell::new((None, String::new())) };
}

/// Runs `f` on the RFC 3339 text of `ms` (as [`rfc3339_ms`] writes it), without allocating.
pub fn with_rfc3339<R>(ms: UnixMs, f: impl FnOnce(&str) -> R) -> R {
    LAST_RFC3339.with_borrow_mut(|(last, text)| {
        if *last != Some(ms) {
            text.clear();
            push_utc_ms(text, ms, 'T');
            text.push('Z');
            *last = Some(ms);
        }
        debug_assert_eq!(text.len(), 24);
        f(text)
    })
}

#[derive(Serialize, ToSchema)]
pub struct Merchant<'a> {
    id: &'a str,
    name: &'a str,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<&'a str>,
    created_at: Time,
}

pub fn merchant<'a>(m: &'a MerchantView, api_key: Option<&'a str>) -> Merchant<'a> {
    Merchant { id: &m.id, name: &m.name, currency: &m.currency, api_key, created_at: Time(m.created_at_ms) }
}

#[derive(Serialize, ToSchema)]
pub struct Item<'a> {
    sku: &'a str,
    name: &'a str,
    price: u64,
    stock: u64,
    available: u64,
    held: u64,
    sold: u64,
    queue_id: Option<&'a str>,
}

pub fn item(i: &ItemView) -> Item<'_> {
    Item {
        sku: &i.sku,
        name: &i.name,
        price: i.price,
        stock: i.stock,
        available: i.available,
        held: i.held,
        sold: i.sold,
        queue_id: i.queue_id.as_deref(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Line<'a> {
    sku: &'a str,
    qty: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<u64>,
}

fn lines(lines: &[LineView]) -> Vec<Line<'_>> {
    lines
        .iter()
        .map(|l| Line {
            sku: &l.sku,
            qty: l.qty,
            unit_price: l.unit_price,
            amount: l.unit_price.map(|p| p.saturating_mul(l.qty)),
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct Hold<'a> {
    #[schema(value_type = String)]
    id: HoldId,
    customer_id: &'a str,
    #[schema(schema_with = schema::hold_status)]
    status: &'static str,
    lines: Vec<Line<'a>>,
    #[schema(value_type = Option<String>)]
    order_id: Option<OrderId>,
    expires_at: Time,
    created_at: Time,
    updated_at: Time,
}

pub fn hold(h: &HoldView) -> Hold<'_> {
    Hold {
        id: h.id,
        customer_id: &h.customer_id,
        status: h.status.as_str(),
        lines: lines(&h.lines),
        order_id: h.order_id,
        expires_at: Time(h.expires_at_ms),
        created_at: Time(h.created_at_ms),
        updated_at: Time(h.updated_at_ms),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Card<'a> {
    last4: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

fn card(c: &CardView) -> Card<'_> {
    Card { last4: &c.last4, kind: &c.kind }
}

#[derive(Serialize, ToSchema)]
pub struct Payment<'a> {
    #[schema(value_type = String)]
    id: PaymentId,
    #[schema(value_type = String)]
    order_id: OrderId,
    #[schema(schema_with = schema::payment_method)]
    method: &'static str,
    #[schema(schema_with = schema::payment_status)]
    status: &'static str,
    #[schema(schema_with = schema::capture_mode_out)]
    capture: &'static str,
    amount: u64,
    captured: u64,
    refunded: u64,
    card: Option<Card<'a>>,
    transaction_key: Option<&'a str>,
    failure_reason: Option<&'a str>,
    created_at: Time,
    updated_at: Time,
    /// Only in an answer from the cold store: when the payment was archived (absent, never
    /// null, otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    archived_at: Option<Time>,
}

pub fn payment(p: &PaymentView) -> Payment<'_> {
    Payment {
        id: p.id,
        order_id: p.order_id,
        method: p.method.as_str(),
        status: p.status.as_str(),
        capture: p.capture.as_str(),
        amount: p.amount,
        captured: p.captured,
        refunded: p.refunded,
        card: p.card.as_ref().map(card),
        transaction_key: p.transaction_key.as_deref(),
        failure_reason: p.failure_reason.as_deref(),
        created_at: Time(p.created_at_ms),
        updated_at: Time(p.updated_at_ms),
        archived_at: None,
    }
}

/// An archived payment read back from the cold store: the payment as it was, and when it
/// was archived.
pub fn archived_payment(p: &PaymentView, archived_at_ms: UnixMs) -> Payment<'_> {
    Payment { archived_at: Some(Time(archived_at_ms)), ..payment(p) }
}

/// A dead letter; `merchant_id` in the admin listing, which spans merchants.
#[derive(Serialize, ToSchema)]
pub struct DeadLetter<'a> {
    #[schema(value_type = String)]
    id: DeadLetterId,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_id: Option<&'a str>,
    #[schema(value_type = String)]
    payment_id: PaymentId,
    #[schema(value_type = String)]
    order_id: OrderId,
    #[schema(schema_with = schema::dead_letter_op)]
    op: &'static str,
    amount: u64,
    operation_key: &'a str,
    reason: &'a str,
    #[schema(schema_with = schema::dead_letter_status)]
    status: &'static str,
    attempts: u32,
    created_at: Time,
    updated_at: Time,
}

pub fn dead_letter<'a>(d: &'a DeadLetterView, merchant_id: Option<&'a str>) -> DeadLetter<'a> {
    DeadLetter {
        id: d.id,
        merchant_id,
        payment_id: d.payment_id,
        order_id: d.order_id,
        op: d.op.as_str(),
        amount: d.amount,
        operation_key: &d.key,
        reason: &d.reason,
        status: d.status.as_str(),
        attempts: d.attempts,
        created_at: Time(d.created_at_ms),
        updated_at: Time(d.updated_at_ms),
    }
}

/// `GET /v1/admin/dead-letters`.
#[derive(Serialize, ToSchema)]
pub struct DeadLetters<'a> {
    pub dead_letters: Vec<DeadLetter<'a>>,
}

#[derive(Serialize, ToSchema)]
pub struct Order<'a> {
    #[schema(value_type = String)]
    id: OrderId,
    customer_id: &'a str,
    #[schema(schema_with = schema::order_status)]
    status: &'static str,
    lines: Vec<Line<'a>>,
    total: u64,
    #[schema(value_type = Option<String>)]
    hold_id: Option<HoldId>,
    payment: Option<Payment<'a>>,
    expires_at: Option<Time>,
    created_at: Time,
    updated_at: Time,
    /// Only in an answer from the cold store: when the order was archived (absent, never
    /// null, otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    archived_at: Option<Time>,
}

pub fn order(o: &OrderView) -> Order<'_> {
    Order {
        id: o.id,
        customer_id: &o.customer_id,
        status: o.status.as_str(),
        lines: lines(&o.lines),
        total: o.total,
        hold_id: o.hold_id,
        payment: o.payment.as_deref().map(payment),
        expires_at: o.expires_at_ms.map(Time),
        created_at: Time(o.created_at_ms),
        updated_at: Time(o.updated_at_ms),
        archived_at: None,
    }
}

/// An archived order read back from the cold store: the order as it was (its payment
/// too), and when it was archived.
pub fn archived_order(o: &OrderView, archived_at_ms: UnixMs) -> Order<'_> {
    Order { archived_at: Some(Time(archived_at_ms)), ..order(o) }
}

#[derive(Serialize, ToSchema)]
pub struct Points<'a> {
    customer_id: &'a str,
    balance: u64,
}

pub fn points(p: &PointsView) -> Points<'_> {
    Points { customer_id: &p.customer_id, balance: p.balance }
}

#[derive(Serialize, ToSchema)]
pub struct Queue<'a> {
    id: &'a str,
    max_active: u64,
    active_ttl_seconds: u64,
    active: u64,
    waiting: u64,
}

pub fn queue(q: &QueueView) -> Queue<'_> {
    Queue {
        id: &q.id,
        max_active: q.max_active,
        active_ttl_seconds: q.active_ttl_s,
        active: q.active,
        waiting: q.waiting,
    }
}

#[derive(Serialize, ToSchema)]
pub struct Token<'a> {
    token: &'a str,
    queue_id: &'a str,
    customer_id: &'a str,
    #[schema(schema_with = schema::token_status)]
    status: &'static str,
    position: u64,
    active_until: Option<Time>,
}

pub fn token(t: &TokenView) -> Token<'_> {
    Token {
        token: &t.token,
        queue_id: &t.queue_id,
        customer_id: &t.customer_id,
        status: t.status.as_str(),
        position: t.position,
        active_until: t.active_until_ms.map(Time),
    }
}

/// Totals are 128-bit; serde_json writes them as plain JSON integers.
#[derive(Serialize, ToSchema)]
pub struct Account<'a> {
    account: &'a str,
    debits: u128,
    credits: u128,
    balance: i128,
}

pub fn account(a: &AccountView) -> Account<'_> {
    Account { account: &a.account, debits: a.debits, credits: a.credits, balance: a.balance }
}

#[derive(Serialize, ToSchema)]
pub struct TrialBalanceDto {
    total_debits: u128,
    total_credits: u128,
    balanced: bool,
    accounts: u64,
}

pub fn trial_balance(t: &TrialBalance) -> TrialBalanceDto {
    TrialBalanceDto {
        total_debits: t.total_debits,
        total_credits: t.total_credits,
        balanced: t.balanced,
        accounts: t.accounts,
    }
}

#[derive(Serialize, ToSchema)]
pub struct Items {
    created: u64,
    updated: u64,
}

/// A command's reply (merchant replies carry no key: it is shown once, at creation).
#[derive(Serialize)]
#[serde(untagged)]
pub enum ReplyDto<'a> {
    Merchant(Merchant<'a>),
    Item(Item<'a>),
    Items(Items),
    Hold(Hold<'a>),
    Order(Order<'a>),
    Payment(Payment<'a>),
    Points(Points<'a>),
    Queue(Queue<'a>),
    Token(Token<'a>),
    DeadLetter(DeadLetter<'a>),
}

pub fn reply(r: &Reply) -> ReplyDto<'_> {
    match r {
        Reply::Merchant(m) => ReplyDto::Merchant(merchant(m, None)),
        Reply::Item { item: i, .. } => ReplyDto::Item(item(i)),
        Reply::Items { created, updated } => ReplyDto::Items(Items { created: *created, updated: *updated }),
        Reply::Hold(h) => ReplyDto::Hold(hold(h)),
        Reply::Order(o) => ReplyDto::Order(order(o)),
        Reply::Payment(p) => ReplyDto::Payment(payment(p)),
        Reply::Points(p) => ReplyDto::Points(points(p)),
        Reply::Queue(q) => ReplyDto::Queue(queue(q)),
        Reply::Token(t) => ReplyDto::Token(token(t)),
        Reply::DeadLetter(d) => ReplyDto::DeadLetter(dead_letter(d, None)),
    }
}

/// An order with its payment is ~600 bytes: from serde_json's 128 the buffer would grow (and
/// copy) three times.
const REPLY_BYTES_TYPICAL: usize = 1024;

/// JSON bytes of any DTO (serializing these cannot fail).
pub fn to_vec(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_BYTES_TYPICAL);
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// JSON bytes of an order: the same bytes as `to_vec(&order(o))`, written directly
/// (`order_json`).
pub fn order_to_vec(o: &OrderView) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_BYTES_TYPICAL);
    write_order(&mut out, o);
    out
}

/// JSON bytes of a command's reply: `to_vec(&reply(r))`, orders written directly.
pub fn reply_to_vec(r: &Reply) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_BYTES_TYPICAL);
    write_reply(&mut out, r);
    out
}

/// Appends the JSON of a command's reply to `out` (see [`reply_to_vec`]).
pub fn write_reply(out: &mut Vec<u8>, r: &Reply) {
    match r {
        Reply::Order(o) => write_order(out, o),
        // Writing into a Vec cannot fail.
        other => {
            let _ = serde_json::to_writer(out, &reply(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo must never answer for another millisecond: both sides of order_json's own
    /// test go through it, so only a comparison with `rfc3339_ms` can catch a stale text.
    #[test]
    fn rfc3339_memo_renders_what_rfc3339_ms_renders_for_every_sequence() {
        let times = [0, 999, 1_000, 1_763_700_000_000, 1_763_700_000_001, 951_782_400_120, u64::MAX];
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let ms = times[(rng % times.len() as u64) as usize];
            assert_eq!(with_rfc3339(ms, str::to_string), rfc3339_ms(ms), "{ms}");
            let json = serde_json::to_string(&Time(ms)).unwrap();
            assert_eq!(json, format!("\"{}\"", rfc3339_ms(ms)));
        }
    }
}
