//! `decide`: validates a command against the state and returns the events that carry it
//! out, or the typed error. It only reads; nothing here mutates. `gateway.rs` holds the card
//! path: what the gateway worker is asked to do, and what its answers change.

mod gateway;

use std::collections::HashSet;
use std::sync::Arc;

use crate::command::{
    CaptureMode, CardSpec, Command, ItemSpec, LineSpec, OrderSource, PaymentMethod, PaymentSpec, Request,
};
use crate::error::CoreError;
use crate::event::{self as ev, Bucket, Event, EventBody, PostingKind};
use crate::ids::{is_valid_id, parse_token, Numbered, UnixMs};
use crate::ledger::Account;
use crate::limits::*;
use crate::state::Shard;
use crate::state::{Item, Merchant, Order, OrderStatus, Payment, PaymentStatus, TokenStatus};

/// The events of one command and what its reply shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub events: Vec<Event>,
    pub target: Target,
}

/// The resource a command's reply shows, as it is after the events are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Merchant,
    Item { sku: Arc<str>, created: bool },
    Items { created: u64, updated: u64 },
    Hold(u64),
    Order(u64),
    Payment(u64),
    Points(Arc<str>),
    Queue(Arc<str>),
    Token { queue: Arc<str>, seq: u64 },
    DeadLetter(u64),
}

/// Room for an order of a few lines paid at once (with its idempotency record), so the
/// usual order never regrows.
const EVENTS_PER_ORDER: usize = 12;
/// Room for the events of most other commands (a hold, a release, a capture). Smaller than
/// an order's on purpose: 12 events (152 bytes each) are past the allocator's small-object
/// size, and that larger allocation cost a hold or a release ~100 instructions more.
const EVENTS_PER_COMMAND: usize = 4;

/// Events under construction, with the numbers the next postings get.
pub(super) struct Draft {
    merchant: Arc<str>,
    at_ms: UnixMs,
    events: Vec<Event>,
    next_posting: u64,
}

impl Draft {
    pub(super) fn push(&mut self, body: impl Into<EventBody>) {
        self.events.push(Event { merchant: self.merchant.clone(), at_ms: self.at_ms, body: body.into() });
    }

    pub(super) fn post(
        &mut self,
        debit: Account,
        credit: Account,
        amount: u64,
        kind: PostingKind,
        payment: Option<u64>,
    ) {
        if amount == 0 {
            return; // nothing moves, nothing to post
        }
        let posting = self.next_posting;
        self.next_posting += 1;
        self.push(ev::LedgerPosted { posting, debit, credit, amount, kind, payment });
    }

    pub(super) fn move_stock(&mut self, lines: impl Iterator<Item = (Arc<str>, u64)>, from: Bucket, to: Bucket) {
        for (sku, qty) in lines {
            self.push(ev::InventoryMoved { sku, qty, from, to });
        }
    }
}

impl Shard {
    /// Validates `request` at time `now` and returns its events. Reads only.
    pub fn decide(&self, request: &Request, now: UnixMs) -> Result<Decided, CoreError> {
        self.decide_at(request, self.merchants.position(&request.merchant), now)
    }

    /// [`decide`](Self::decide) with the request's merchant already found (`position`:
    /// its place in the shard, `None` if it does not exist), so `execute` hashes its id once.
    pub(crate) fn decide_at(
        &self,
        request: &Request,
        position: Option<u32>,
        now: UnixMs,
    ) -> Result<Decided, CoreError> {
        if let Command::CreateMerchant { name, currency, api_key_hash } = &request.command {
            return self.decide_create_merchant(&request.merchant, name, currency, api_key_hash, now);
        }
        let m = position.and_then(|p| self.merchants.at(p)).ok_or_else(|| CoreError::not_found("merchant"))?;
        let mut d = Draft {
            merchant: m.id.clone(),
            at_ms: now,
            events: Vec::with_capacity(match &request.command {
                Command::CreateOrder { .. } => EVENTS_PER_ORDER,
                _ => EVENTS_PER_COMMAND,
            }),
            next_posting: m.ledger.postings + 1,
        };
        let target = match &request.command {
            Command::CreateMerchant { .. } => unreachable!("handled above"),
            Command::PutItem(spec) => put_item(m, &mut d, spec)?,
            Command::PutItems { items } => put_items(m, &mut d, items)?,
            Command::Restock { sku, qty } => restock(m, &mut d, sku, *qty)?,
            Command::CreateHold { customer, lines, ttl_s, queue_token } => {
                create_hold(m, &mut d, customer, lines, *ttl_s, queue_token.as_deref())?
            }
            Command::ReleaseHold { hold } => release_hold(m, &mut d, hold)?,
            Command::CreateOrder { customer, source, payment, queue_token } => {
                create_order(m, &mut d, customer, source, payment, queue_token.as_deref())?
            }
            Command::PayOrder { order, payment } => pay_order(m, &mut d, order, payment)?,
            Command::CancelOrder { order } => {
                let (n, o) = find_order(m, order)?;
                cancel_order(m, &mut d, n, o)?;
                Target::Order(n)
            }
            Command::CapturePayment { payment, amount } => capture(m, &mut d, payment, *amount)?,
            Command::RefundPayment { payment, amount } => refund_payment(m, &mut d, payment, *amount)?,
            Command::VoidPayment { payment } => void(m, &mut d, payment)?,
            Command::GatewayAccepted { payment, transaction_key, gateway } => {
                gateway::accepted(m, &mut d, payment, transaction_key, gateway)?
            }
            Command::GatewayApproved { payment, transaction_key } => {
                gateway::approved(m, &mut d, payment, transaction_key)?
            }
            Command::GatewayDeclined { payment, reason } => gateway::declined(m, &mut d, payment, reason)?,
            Command::GatewayGaveUp { payment, reason } => gateway::gave_up(m, &mut d, payment, reason)?,
            Command::GatewayOpFailed { payment, op, key, amount, reason } => {
                gateway::op_failed(m, &mut d, payment, *op, key, *amount, reason)?
            }
            Command::RetryDeadLetter { dead_letter } => gateway::retry_dead_letter(m, &mut d, dead_letter)?,
            Command::ResolveDeadLetter { dead_letter } => gateway::resolve_dead_letter(m, &mut d, *dead_letter)?,
            Command::CreditPoints { customer, amount, reason } => credit_points(m, &mut d, customer, *amount, reason)?,
            Command::PutQueue { queue, max_active, active_ttl_s } => {
                put_queue(m, &mut d, queue, *max_active, *active_ttl_s)?
            }
            Command::IssueToken { queue, customer, nonce } => issue_token(m, &mut d, queue, customer, *nonce)?,
            Command::RotateApiKey { api_key_hash } => {
                d.push(ev::ApiKeyRotated { api_key_hash: *api_key_hash });
                Target::Merchant
            }
        };
        Ok(Decided { events: d.events, target })
    }

    fn decide_create_merchant(
        &self,
        id: &str,
        name: &str,
        currency: &str,
        api_key_hash: &[u8; 32],
        now: UnixMs,
    ) -> Result<Decided, CoreError> {
        check_id("id", id)?;
        check_text("name", name, 1)?;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CoreError::invalid("currency", "must be a three-letter ISO 4217 code such as KRW"));
        }
        if self.merchants.get(id).is_some() {
            return Err(CoreError::InvalidState { status: "active" });
        }
        let event = Event {
            merchant: id.into(),
            at_ms: now,
            body: ev::MerchantCreated { name: name.into(), currency: currency.into(), api_key_hash: *api_key_hash }
                .into(),
        };
        Ok(Decided { events: vec![event], target: Target::Merchant })
    }
}

// ---- validation ------------------------------------------------------------------------

fn check_id(field: &'static str, id: &str) -> Result<(), CoreError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(CoreError::invalid(field, "must be 1..=64 characters of [A-Za-z0-9_.:-]"))
    }
}

pub(super) fn check_text(field: &'static str, text: &str, len_min: usize) -> Result<(), CoreError> {
    let (mut chars, mut control) = (0usize, false);
    for c in text.chars() {
        chars += 1;
        control |= c.is_control();
    }
    if chars < len_min || chars > TEXT_CHARS_MAX || control {
        return Err(CoreError::invalid(
            field,
            format!("must be {len_min}..={TEXT_CHARS_MAX} characters without control characters"),
        ));
    }
    Ok(())
}

fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), CoreError> {
    if value < min || value > max {
        return Err(CoreError::invalid(field, format!("must be {min}..={max}")));
    }
    Ok(())
}

/// A card as the events carry it: masked in `PaymentRequested`, sealed for the worker.
pub(super) struct Card {
    masked: ev::CardDetails,
    sealed: ev::SealedCard,
}

/// Card numbers (PANs) have 12 to 19 digits: anything else no gateway takes, so it is
/// refused at intake rather than declined later.
const CARD_DIGITS_MIN: usize = 12;
const CARD_DIGITS_MAX: usize = 19;

fn check_card(payment: &PaymentSpec) -> Result<Option<Card>, CoreError> {
    match (payment.method, &payment.card) {
        (PaymentMethod::Card, None) => Err(CoreError::invalid("payment.card", "is required for method card")),
        (PaymentMethod::Card, Some(CardSpec { number, kind, sealed })) => {
            let digits = number.bytes().filter(u8::is_ascii_digit).count();
            if number.len() > CARD_NUMBER_LEN_MAX
                || !(CARD_DIGITS_MIN..=CARD_DIGITS_MAX).contains(&digits)
                || !number.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b' ')
            {
                return Err(CoreError::invalid(
                    "payment.card.number",
                    "must be 12..=19 digits, with dashes or spaces between them, at most 32 characters",
                ));
            }
            if kind.is_empty() || kind.len() > 32 || !kind.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(CoreError::invalid("payment.card.type", "must be 1..=32 printable characters"));
            }
            // The host seals every card it passes on; an empty or oversized seal is its bug,
            // refused before anything is logged.
            if sealed.is_empty() || sealed.len() > CARD_SEALED_BYTES_MAX {
                return Err(CoreError::invalid("payment.card", "was not sealed for the gateway worker"));
            }
            Ok(Some(Card {
                masked: ev::CardDetails::masked(number, kind),
                sealed: ev::SealedCard { kind: kind.as_str().into(), sealed: sealed.clone() },
            }))
        }
        (_, Some(_)) => Err(CoreError::invalid("payment.card", "is only for method card")),
        (_, None) => Ok(None),
    }
}

/// A requested line, resolved against the merchant's items.
struct Resolved<'a> {
    item: &'a Item,
    position: u32,
    qty: u64,
}

fn resolve_lines<'a>(m: &'a Merchant, lines: &[LineSpec]) -> Result<Vec<Resolved<'a>>, CoreError> {
    if lines.is_empty() || lines.len() > LINES_MAX {
        return Err(CoreError::invalid("lines", format!("must hold 1..={LINES_MAX} lines")));
    }
    let mut out: Vec<Resolved<'a>> = Vec::with_capacity(lines.len());
    for line in lines {
        check_id("lines.sku", &line.sku)?;
        check_range("lines.qty", line.qty, 1, QTY_MAX)?;
        let position = m.items.position(&line.sku).ok_or_else(|| CoreError::not_found("item"))?;
        // At most LINES_MAX lines: a scan beats a hash set for the usual one to three.
        if out.iter().any(|r| r.position == position) {
            return Err(CoreError::invalid("lines.sku", format!("{} appears twice", line.sku)));
        }
        let item = m.items.at(position).ok_or_else(|| CoreError::not_found("item"))?;
        out.push(Resolved { item, position, qty: line.qty });
    }
    Ok(out)
}

fn check_available(lines: &[Resolved<'_>]) -> Result<(), CoreError> {
    for line in lines {
        if line.item.available < line.qty {
            return Err(CoreError::InsufficientStock {
                sku: line.item.sku.to_string(),
                available: line.item.available,
            });
        }
    }
    Ok(())
}

/// Items behind a waiting room need an active token of that room.
fn check_queue_token(m: &Merchant, lines: &[Resolved<'_>], token: Option<&str>, now: UnixMs) -> Result<(), CoreError> {
    for line in lines {
        let Some(queue_id) = &line.item.queue else {
            continue;
        };
        let required = || CoreError::QueueTokenRequired { queue: queue_id.to_string() };
        let (seq, nonce) = token.and_then(parse_token).ok_or_else(required)?;
        let queue = m.queues.get(queue_id).ok_or_else(required)?;
        let t = queue.tokens.get(usize::try_from(seq).map_err(|_| required())?).ok_or_else(required)?;
        let live = t.status == TokenStatus::Active && t.active_until_ms.is_some_and(|until| now < until);
        if t.nonce != nonce || !live {
            return Err(required());
        }
    }
    Ok(())
}

fn total_of(lines: impl Iterator<Item = (u64, u64)>) -> Result<u64, CoreError> {
    let mut total: u128 = 0;
    for (price, qty) in lines {
        total += u128::from(price) * u128::from(qty);
    }
    u64::try_from(total)
        .ok()
        .filter(|t| *t <= AMOUNT_MAX)
        .ok_or_else(|| CoreError::invalid("lines", format!("order total exceeds {AMOUNT_MAX}")))
}

/// Not in memory: archived (naming when), or never existed.
fn missing(what: &'static str, archived_at_ms: Option<UnixMs>) -> CoreError {
    match archived_at_ms {
        Some(archived_at_ms) => CoreError::Archived { what, archived_at_ms },
        None => CoreError::not_found(what),
    }
}

fn find_order<'a>(m: &'a Merchant, id: &str) -> Result<(u64, &'a Order), CoreError> {
    let n = Numbered::Order.parse(id).ok_or_else(|| CoreError::not_found("order"))?;
    Ok((n, m.order(n).ok_or_else(|| missing("order", m.order_archived_at(n)))?))
}

pub(super) fn find_payment<'a>(m: &'a Merchant, id: &str) -> Result<(u64, &'a Payment), CoreError> {
    let n = Numbered::Payment.parse(id).ok_or_else(|| CoreError::not_found("payment"))?;
    Ok((n, m.payment(n).ok_or_else(|| missing("payment", m.payment_archived_at(n)))?))
}

fn find_hold<'a>(m: &'a Merchant, id: &str) -> Result<(u64, &'a crate::state::Hold), CoreError> {
    let n = Numbered::Hold.parse(id).ok_or_else(|| CoreError::not_found("hold"))?;
    Ok((n, m.hold(n).ok_or_else(|| missing("hold", m.hold_archived_at(n)))?))
}

fn customer_arc(m: &Merchant, id: &str) -> Arc<str> {
    m.customers.get(id).map_or_else(|| id.into(), |c| c.id.clone())
}

fn customer_points(m: &Merchant, id: &str) -> u64 {
    m.customers.get(id).map_or(0, |c| c.points)
}

fn order_customer(m: &Merchant, order: &Order) -> Arc<str> {
    m.customers.at(order.customer).map(|c| c.id.clone()).unwrap_or_else(|| "".into())
}

/// The (sku, qty) of an order's lines.
pub(super) fn order_stock<'a>(m: &'a Merchant, order: &'a Order) -> impl Iterator<Item = (Arc<str>, u64)> + 'a {
    order.lines.iter().filter_map(|l| Some((m.items.at(l.item)?.sku.clone(), u64::from(l.qty))))
}

// ---- items -----------------------------------------------------------------------------

fn check_item(spec: &ItemSpec) -> Result<(), CoreError> {
    check_id("sku", &spec.sku)?;
    check_text("name", &spec.name, 1)?;
    check_range("price", spec.price, 0, AMOUNT_MAX)?;
    check_range("stock", spec.stock, 0, AMOUNT_MAX)?;
    if let Some(queue) = &spec.queue {
        check_id("queue_id", queue)?;
    }
    Ok(())
}

fn item_put_event(m: &Merchant, spec: &ItemSpec) -> Result<(ev::ItemPut, bool), CoreError> {
    let existing = m.items.get(&spec.sku);
    if let Some(item) = existing {
        if spec.stock < item.held + item.sold {
            return Err(CoreError::InsufficientStock { sku: spec.sku.clone(), available: item.available });
        }
    }
    let sku = existing.map_or_else(|| spec.sku.as_str().into(), |i| i.sku.clone());
    let queue = spec.queue.as_deref().map(|q| m.queues.get(q).map_or_else(|| q.into(), |q| q.id.clone()));
    let event = ev::ItemPut { sku, name: spec.name.as_str().into(), price: spec.price, stock: spec.stock, queue };
    Ok((event, existing.is_none()))
}

fn put_item(m: &Merchant, d: &mut Draft, spec: &ItemSpec) -> Result<Target, CoreError> {
    check_item(spec)?;
    let (event, created) = item_put_event(m, spec)?;
    let sku = event.sku.clone();
    d.push(event);
    Ok(Target::Item { sku, created })
}

fn put_items(m: &Merchant, d: &mut Draft, items: &[ItemSpec]) -> Result<Target, CoreError> {
    if items.is_empty() || items.len() > BULK_ITEMS_MAX {
        return Err(CoreError::invalid("items", format!("must hold 1..={BULK_ITEMS_MAX} items")));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let (mut created, mut updated) = (0, 0);
    for spec in items {
        check_item(spec)?;
        if !seen.insert(spec.sku.as_str()) {
            return Err(CoreError::invalid("items.sku", format!("{} appears twice", spec.sku)));
        }
        let (event, is_new) = item_put_event(m, spec)?;
        if is_new {
            created += 1;
        } else {
            updated += 1;
        }
        d.push(event);
    }
    Ok(Target::Items { created, updated })
}

fn restock(m: &Merchant, d: &mut Draft, sku: &str, qty: u64) -> Result<Target, CoreError> {
    check_range("qty", qty, 1, QTY_MAX)?;
    let item = m.items.get(sku).ok_or_else(|| CoreError::not_found("item"))?;
    if item.stock + qty > AMOUNT_MAX {
        return Err(CoreError::invalid("qty", format!("stock would exceed {AMOUNT_MAX}")));
    }
    d.push(ev::ItemRestocked { sku: item.sku.clone(), qty });
    Ok(Target::Item { sku: item.sku.clone(), created: false })
}

// ---- holds -----------------------------------------------------------------------------

fn create_hold(
    m: &Merchant,
    d: &mut Draft,
    customer: &str,
    lines: &[LineSpec],
    ttl_s: Option<u64>,
    token: Option<&str>,
) -> Result<Target, CoreError> {
    check_id("customer_id", customer)?;
    let ttl_s = ttl_s.unwrap_or(HOLD_TTL_S_DEFAULT);
    check_range("ttl_seconds", ttl_s, 1, TTL_S_MAX)?;
    let lines = resolve_lines(m, lines)?;
    check_queue_token(m, &lines, token, d.at_ms)?;
    check_available(&lines)?;
    let hold = m.holds.len() as u64 + 1;
    d.push(ev::HoldCreated {
        hold,
        customer: customer_arc(m, customer),
        lines: lines.iter().map(|l| ev::Line { sku: l.item.sku.clone(), qty: l.qty }).collect(),
        expires_at_ms: d.at_ms.saturating_add(ttl_s * 1_000),
    });
    d.move_stock(lines.iter().map(|l| (l.item.sku.clone(), l.qty)), Bucket::Available, Bucket::Held);
    Ok(Target::Hold(hold))
}

fn release_hold(m: &Merchant, d: &mut Draft, id: &str) -> Result<Target, CoreError> {
    let (n, hold) = find_hold(m, id)?;
    if hold.status != crate::state::HoldStatus::Held {
        return Err(CoreError::InvalidState { status: hold.status.as_str() });
    }
    d.push(ev::HoldReleased { hold: n });
    let stock = hold.lines.iter().filter_map(|l| Some((m.items.at(l.item)?.sku.clone(), u64::from(l.qty))));
    d.move_stock(stock, Bucket::Held, Bucket::Available);
    Ok(Target::Hold(n))
}

// ---- orders and payments ---------------------------------------------------------------

fn create_order(
    m: &Merchant,
    d: &mut Draft,
    customer: &str,
    source: &OrderSource,
    payment: &PaymentSpec,
    token: Option<&str>,
) -> Result<Target, CoreError> {
    check_id("customer_id", customer)?;
    let card = check_card(payment)?;
    let order = m.orders.len() as u64 + 1;
    // Lines with prices, whether the stock is already held (order from a hold), the hold.
    let (priced, from_hold): (Vec<ev::PricedLine>, Option<u64>) = match source {
        OrderSource::Lines(lines) => {
            let lines = resolve_lines(m, lines)?;
            check_queue_token(m, &lines, token, d.at_ms)?;
            check_available(&lines)?;
            let priced = lines
                .iter()
                .map(|l| ev::PricedLine { sku: l.item.sku.clone(), qty: l.qty, unit_price: l.item.price })
                .collect();
            (priced, None)
        }
        OrderSource::Hold(id) => {
            // A malformed id in a body is a bad request naming its field; a well-formed one
            // that names no hold of this merchant is 404.
            check_id("hold_id", id)?;
            let (n, hold) = find_hold(m, id)?;
            if hold.status != crate::state::HoldStatus::Held {
                return Err(CoreError::InvalidState { status: hold.status.as_str() });
            }
            if d.at_ms >= hold.expires_at_ms {
                return Err(CoreError::InvalidState { status: "expired" });
            }
            if m.customers.at(hold.customer).map(|c| &*c.id) != Some(customer) {
                return Err(CoreError::invalid("hold_id", "belongs to another customer"));
            }
            let priced = hold
                .lines
                .iter()
                .filter_map(|l| {
                    let item = m.items.at(l.item)?;
                    Some(ev::PricedLine { sku: item.sku.clone(), qty: u64::from(l.qty), unit_price: item.price })
                })
                .collect();
            (priced, Some(n))
        }
    };
    let total = total_of(priced.iter().map(|l| (l.unit_price, l.qty)))?;
    let known = m.customers.get(customer);
    if payment.method == PaymentMethod::Points {
        let balance = known.map_or(0, |c| c.points);
        if balance < total {
            return Err(CoreError::InsufficientPoints { balance, required: total });
        }
    }
    let customer: Arc<str> = known.map_or_else(|| customer.into(), |c| c.id.clone());
    let expires_at_ms = (payment.method == PaymentMethod::None).then(|| d.at_ms.saturating_add(UNPAID_ORDER_TTL_MS));
    // Paid at once by points: the stock goes straight to sold, else it is held. The moves
    // come first so the lines can go into `OrderCreated` without a copy.
    let paid_now = payment.method == PaymentMethod::Points;
    let to = if paid_now { Bucket::Sold } else { Bucket::Held };
    let moves = priced.iter().map(|l| (l.sku.clone(), l.qty));
    match from_hold {
        Some(_) if paid_now => d.move_stock(moves, Bucket::Held, to),
        Some(_) => {}
        None => d.move_stock(moves, Bucket::Available, to),
    }
    d.push(ev::OrderCreated {
        order,
        customer: customer.clone(),
        lines: priced,
        total,
        hold: from_hold,
        expires_at_ms,
    });
    if let Some(hold) = from_hold {
        d.push(ev::HoldConverted { hold, order });
    }
    let payment_n = m.payments.len() as u64 + 1;
    match payment.method {
        PaymentMethod::None => {}
        PaymentMethod::Card => {
            let card = card.ok_or_else(|| CoreError::invalid("payment.card", "is required for method card"))?;
            gateway::request_card_payment(d, payment_n, order, total, payment.capture, card);
        }
        PaymentMethod::Points => {
            pay_by_points(d, &customer, order, payment_n, total, payment);
            d.push(ev::OrderPaid { order });
        }
    }
    Ok(Target::Order(order))
}

/// Pays with points (the balance was checked): the points leave the customer's balance at
/// once. Automatic capture: captured now. Manual capture: authorized, the points parked in
/// `points:authorized` until `capture` (or a void gives them back).
fn pay_by_points(d: &mut Draft, customer: &Arc<str>, order: u64, payment: u64, total: u64, spec: &PaymentSpec) {
    d.push(ev::PaymentRequested {
        payment,
        order,
        method: PaymentMethod::Points,
        amount: total,
        capture: spec.capture,
        card: None,
    });
    if total > 0 {
        d.push(ev::PointsDebited { customer: customer.clone(), amount: total, payment });
    }
    let from = Account::CustomerPoints(customer.clone());
    match spec.capture {
        CaptureMode::Automatic => {
            d.push(ev::PaymentCaptured { payment, amount: total });
            d.post(from, Account::SalesRevenue, total, PostingKind::Capture, Some(payment));
        }
        CaptureMode::Manual => {
            d.push(ev::PaymentAuthorized { payment, transaction_key: None });
            d.post(from, Account::PointsAuthorized, total, PostingKind::Authorize, Some(payment));
        }
    }
}

/// Gives the customer back `amount` of an authorized points payment's parked points.
fn release_points(m: &Merchant, d: &mut Draft, n: u64, p: &Payment, amount: u64, reason: &str) {
    debug_assert!(p.method == PaymentMethod::Points && p.status == PaymentStatus::Authorized);
    debug_assert!(amount <= p.amount);
    if amount == 0 {
        return;
    }
    let customer = m.order(p.order).map(|o| order_customer(m, o)).unwrap_or_else(|| "".into());
    d.push(ev::PointsCredited { customer: customer.clone(), amount, reason: reason.into() });
    d.post(Account::PointsAuthorized, Account::CustomerPoints(customer), amount, PostingKind::Release, Some(n));
}

fn pay_order(m: &Merchant, d: &mut Draft, id: &str, spec: &PaymentSpec) -> Result<Target, CoreError> {
    let (n, order) = find_order(m, id)?;
    if spec.method == PaymentMethod::None {
        return Err(CoreError::invalid("method", "must be points or card to pay an order"));
    }
    let card = check_card(spec)?;
    if order.status != OrderStatus::AwaitingPayment {
        return Err(CoreError::InvalidState { status: order.status.as_str() });
    }
    // Paying again is for an order whose last payment failed (a declined card).
    if let Some(previous) = order.payment.and_then(|p| m.payment(p)) {
        if previous.status != PaymentStatus::Failed {
            return Err(CoreError::InvalidState { status: order.status.as_str() });
        }
    }
    if order.expires_at_ms.is_some_and(|at| d.at_ms >= at) {
        return Err(CoreError::InvalidState { status: "expired" });
    }
    let customer = order_customer(m, order);
    let payment = m.payments.len() as u64 + 1;
    match spec.method {
        PaymentMethod::None => unreachable!("refused above"),
        PaymentMethod::Card => {
            let card = card.ok_or_else(|| CoreError::invalid("payment.card", "is required for method card"))?;
            gateway::request_card_payment(d, payment, n, order.total, spec.capture, card);
        }
        PaymentMethod::Points => {
            let balance = customer_points(m, &customer);
            if balance < order.total {
                return Err(CoreError::InsufficientPoints { balance, required: order.total });
            }
            pay_by_points(d, &customer, n, payment, order.total, spec);
            d.move_stock(order_stock(m, order), Bucket::Held, Bucket::Sold);
            d.push(ev::OrderPaid { order: n });
        }
    }
    Ok(Target::Order(n))
}

/// Refund `amount` of a captured payment to where it came from.
pub(super) fn refund(m: &Merchant, d: &mut Draft, n: u64, p: &Payment, amount: u64) {
    d.push(ev::PaymentRefunded { payment: n, amount });
    match p.method {
        PaymentMethod::Points => {
            let customer = m.order(p.order).map(|o| order_customer(m, o)).unwrap_or_else(|| "".into());
            d.push(ev::PointsCredited { customer: customer.clone(), amount, reason: "refund".into() });
            d.post(Account::Refunds, Account::CustomerPoints(customer), amount, PostingKind::Refund, Some(n));
        }
        PaymentMethod::Card | PaymentMethod::None => {
            d.post(Account::Refunds, Account::GatewayClearing, amount, PostingKind::Refund, Some(n));
            gateway::request_op(d, n, p, ev::GatewayOp::Refund, amount, gateway::refund_key(p.refunded));
        }
    }
}

/// Cancels an order: stock back to available, the payment voided or refunded in full.
pub(super) fn cancel_order(m: &Merchant, d: &mut Draft, n: u64, order: &Order) -> Result<(), CoreError> {
    let bucket = match order.status {
        OrderStatus::AwaitingPayment | OrderStatus::PendingPayment | OrderStatus::Paid => order.status.stock_bucket(),
        other => return Err(CoreError::InvalidState { status: other.as_str() }),
    };
    if let Some((pn, p)) = order.payment.and_then(|pn| Some((pn, m.payment(pn)?))) {
        match p.status {
            PaymentStatus::Pending | PaymentStatus::Authorized => {
                d.push(ev::PaymentVoided { payment: pn });
                match p.method {
                    PaymentMethod::Points if p.status == PaymentStatus::Authorized => {
                        release_points(m, d, pn, p, p.amount, "authorization voided");
                    }
                    // Whatever the gateway holds or may still approve is voided there.
                    PaymentMethod::Card => gateway::void_card(d, pn, p),
                    PaymentMethod::Points | PaymentMethod::None => {}
                }
            }
            PaymentStatus::Captured | PaymentStatus::PartiallyRefunded => {
                let remaining = p.captured - p.refunded;
                if remaining > 0 {
                    refund(m, d, pn, p, remaining);
                }
            }
            PaymentStatus::Refunded | PaymentStatus::Failed | PaymentStatus::Voided => {}
        }
    }
    d.push(ev::OrderCancelled { order: n });
    if let Some(from) = bucket {
        d.move_stock(order_stock(m, order), from, Bucket::Available);
    }
    Ok(())
}

fn capture(m: &Merchant, d: &mut Draft, id: &str, amount: Option<u64>) -> Result<Target, CoreError> {
    let (n, p) = find_payment(m, id)?;
    if p.status != PaymentStatus::Authorized {
        return Err(CoreError::InvalidState { status: p.status.as_str() });
    }
    let amount = amount.unwrap_or(p.amount);
    // A zero-amount authorization (an order of free items) captures zero.
    check_range("amount", amount, p.amount.min(1), p.amount)?;
    match p.method {
        PaymentMethod::Points => {
            d.push(ev::PaymentCaptured { payment: n, amount });
            d.post(Account::PointsAuthorized, Account::SalesRevenue, amount, PostingKind::Capture, Some(n));
            // Partial capture: the rest of the authorization is released.
            release_points(m, d, n, p, p.amount - amount, "authorization released");
        }
        PaymentMethod::Card | PaymentMethod::None => {
            gateway::capture_card(d, n, p.amount, amount);
            gateway::request_op(d, n, p, ev::GatewayOp::Capture, amount, gateway::capture_key());
        }
    }
    Ok(Target::Payment(n))
}

fn refund_payment(m: &Merchant, d: &mut Draft, id: &str, amount: Option<u64>) -> Result<Target, CoreError> {
    let (n, p) = find_payment(m, id)?;
    if !matches!(p.status, PaymentStatus::Captured | PaymentStatus::PartiallyRefunded) {
        return Err(CoreError::InvalidState { status: p.status.as_str() });
    }
    let remaining = p.captured - p.refunded;
    if remaining == 0 {
        return Err(CoreError::InvalidState { status: PaymentStatus::Refunded.as_str() });
    }
    let amount = amount.unwrap_or(remaining);
    check_range("amount", amount, 1, remaining)?;
    refund(m, d, n, p, amount);
    if amount == remaining && m.order(p.order).is_some_and(|o| o.status == OrderStatus::Paid) {
        d.push(ev::OrderRefunded { order: p.order });
    }
    Ok(Target::Payment(n))
}

fn void(m: &Merchant, d: &mut Draft, id: &str) -> Result<Target, CoreError> {
    let (n, p) = find_payment(m, id)?;
    if !matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized) {
        return Err(CoreError::InvalidState { status: p.status.as_str() });
    }
    let order = m.order(p.order).ok_or_else(|| CoreError::not_found("order"))?;
    // Voiding the payment cancels its order: the stock must not stay reserved unpaid.
    cancel_order(m, d, p.order, order)?;
    Ok(Target::Payment(n))
}

// ---- points and queues -----------------------------------------------------------------

fn credit_points(m: &Merchant, d: &mut Draft, customer: &str, amount: u64, reason: &str) -> Result<Target, CoreError> {
    check_id("customer_id", customer)?;
    check_range("amount", amount, 0, AMOUNT_MAX)?;
    check_text("reason", reason, 0)?;
    if customer_points(m, customer).checked_add(amount).is_none() {
        return Err(CoreError::invalid("amount", "the balance would overflow"));
    }
    let customer = customer_arc(m, customer);
    d.push(ev::PointsCredited { customer: customer.clone(), amount, reason: reason.into() });
    d.post(Account::PointsIssued, Account::CustomerPoints(customer.clone()), amount, PostingKind::PointsCredit, None);
    Ok(Target::Points(customer))
}

fn put_queue(m: &Merchant, d: &mut Draft, id: &str, max_active: u64, ttl_s: u64) -> Result<Target, CoreError> {
    check_id("id", id)?;
    check_range("max_active", max_active, 1, QUEUE_ACTIVE_MAX)?;
    check_range("active_ttl_seconds", ttl_s, 1, TTL_S_MAX)?;
    let queue: Arc<str> = m.queues.get(id).map_or_else(|| id.into(), |q| q.id.clone());
    d.push(ev::QueuePut { queue: queue.clone(), max_active, active_ttl_s: ttl_s });
    // Raising max_active frees slots now rather than at the next tick.
    if let Some(q) = m.queues.get(id) {
        let free = max_active.saturating_sub(q.active).min(q.waiting()).min(TICK_ACTIVATIONS_MAX as u64);
        for seq in q.next_waiting..q.next_waiting + free {
            d.push(ev::TokenActivated { queue: queue.clone(), seq });
        }
    }
    Ok(Target::Queue(queue))
}

fn issue_token(m: &Merchant, d: &mut Draft, id: &str, customer: &str, nonce: u64) -> Result<Target, CoreError> {
    check_id("customer_id", customer)?;
    let q = m.queues.get(id).ok_or_else(|| CoreError::not_found("queue"))?;
    let seq = q.tokens.len() as u64;
    d.push(ev::TokenIssued { queue: q.id.clone(), seq, nonce, customer: customer_arc(m, customer) });
    // Nobody ahead and a free slot: straight in. Otherwise the tick activates in order.
    if q.waiting() == 0 && q.active < q.max_active {
        d.push(ev::TokenActivated { queue: q.id.clone(), seq });
    }
    Ok(Target::Token { queue: q.id.clone(), seq })
}
