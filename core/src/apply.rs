//! `apply` for merchant-scoped events. Each arm checks its preconditions first and only
//! then mutates, so a refused event leaves the state unchanged. Events that `decide`
//! produced always pass; the checks exist for events that came from bytes.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::command::{CaptureMode, PaymentMethod};
use crate::event::{self as ev, Event, EventBody};
use crate::ids::UnixMs;
use crate::ledger::{Account, AccountTotals};
use crate::state::{
    CardInfo, Customer, DeadLetter, DeadLetterStatus, Hold, HoldStatus, IdempotencyRecord, Item, Merchant, Order,
    OrderStatus, Payment, PaymentStatus, Queue, StateLine, Token, TokenStatus,
};
use crate::state::{Deadline, DeadlineKind, Shard};

type Outcome = Result<(), &'static str>;

pub(crate) fn apply_to_merchant(shard: &mut Shard, position: u32, event: &Event, seq_after: u64) -> Outcome {
    let Shard { merchants, deadlines, .. } = shard;
    let m = merchants.at_mut(position).ok_or("unknown merchant")?;
    let mut cx = Cx { m, deadlines, merchant: position, at_ms: event.at_ms };
    match &event.body {
        EventBody::MerchantCreated(_) => Err("merchant exists"),
        EventBody::ItemPut(e) => cx.item_put(e),
        EventBody::ItemRestocked(e) => cx.item_restocked(e),
        EventBody::InventoryMoved(e) => cx.inventory_moved(e),
        EventBody::HoldCreated(e) => cx.hold_created(e),
        EventBody::HoldReleased(e) => cx.hold_closed(e.hold, HoldStatus::Released, None),
        EventBody::HoldExpired(e) => cx.hold_closed(e.hold, HoldStatus::Expired, None),
        EventBody::HoldConverted(e) => cx.hold_closed(e.hold, HoldStatus::Converted, Some(e.order)),
        EventBody::OrderCreated(e) => cx.order_created(e),
        EventBody::OrderPaid(e) => {
            cx.order_moved(e.order, &[OrderStatus::AwaitingPayment, OrderStatus::PendingPayment], OrderStatus::Paid)
        }
        EventBody::OrderCancelled(e) => cx.order_moved(
            e.order,
            &[OrderStatus::AwaitingPayment, OrderStatus::PendingPayment, OrderStatus::Paid],
            OrderStatus::Cancelled,
        ),
        EventBody::OrderExpired(e) => cx.order_moved(e.order, &[OrderStatus::AwaitingPayment], OrderStatus::Expired),
        EventBody::OrderRefunded(e) => cx.order_moved(e.order, &[OrderStatus::Paid], OrderStatus::Refunded),
        EventBody::PaymentRequested(e) => cx.payment_requested(e),
        EventBody::PaymentSubmitted(e) => cx.payment_submitted(e),
        EventBody::PaymentAuthorized(e) => cx.payment_authorized(e),
        EventBody::PaymentCaptured(e) => cx.payment_captured(e),
        EventBody::PaymentRefunded(e) => cx.payment_refunded(e),
        EventBody::PaymentFailed(e) => cx.payment_failed(e),
        EventBody::PaymentVoided(e) => cx.payment_voided(e),
        EventBody::PointsCredited(e) => cx.points_credited(e),
        EventBody::PointsDebited(e) => cx.points_debited(e),
        EventBody::LedgerPosted(e) => cx.ledger_posted(e),
        EventBody::QueuePut(e) => cx.queue_put(e),
        EventBody::TokenIssued(e) => cx.token_issued(e),
        EventBody::TokenActivated(e) => cx.token_activated(e),
        EventBody::TokenExpired(e) => cx.token_expired(e),
        EventBody::IdempotencyRecorded(e) => cx.idempotency_recorded(e, seq_after),
        EventBody::IdempotencyExpired(e) => cx.idempotency_expired(e),
        EventBody::GatewayRequested(e) => cx.gateway_requested(e),
        EventBody::PaymentSubmittedVia(e) => cx.payment_submitted_via(e),
        EventBody::OrderReopened(e) => cx.order_reopened(e),
        EventBody::GatewayDeadLettered(e) => cx.dead_lettered(e),
        EventBody::DeadLetterRetried(e) => {
            cx.dead_letter_moved(e.dead_letter, DeadLetterStatus::Open, DeadLetterStatus::Retried)
        }
        EventBody::DeadLetterResolved(e) => {
            cx.dead_letter_moved(e.dead_letter, DeadLetterStatus::Retried, DeadLetterStatus::Resolved)
        }
        EventBody::OrderArchived(e) => cx.order_archived(e.order),
        EventBody::PaymentArchived(e) => cx.payment_archived(e.payment),
        EventBody::HoldArchived(e) => cx.hold_archived(e),
        EventBody::TokenArchived(e) => cx.token_archived(e),
        EventBody::ApiKeyRotated(e) => {
            cx.m.api_key_hash = e.api_key_hash;
            Ok(())
        }
    }
}

/// The index of number `n` (numbers start at 1).
fn index_of(n: u64) -> Result<usize, &'static str> {
    usize::try_from(n).ok().and_then(|n| n.checked_sub(1)).ok_or("number out of range")
}

#[derive(Clone, Copy)]
enum AccountSlot {
    Fixed(usize),
    Customer(u32),
}

struct Cx<'a> {
    m: &'a mut Merchant,
    deadlines: &'a mut BTreeSet<Deadline>,
    merchant: u32,
    at_ms: UnixMs,
}

impl Cx<'_> {
    fn payment_submitted(&mut self, e: &ev::PaymentSubmitted) -> Result<(), &'static str> {
        let at_ms = self.at_ms;
        let p = self.payment_in(e.payment, &[PaymentStatus::Pending])?;
        p.transaction_key = Some(e.transaction_key.clone());
        p.updated_at_ms = at_ms;
        Ok(())
    }

    fn payment_authorized(&mut self, e: &ev::PaymentAuthorized) -> Result<(), &'static str> {
        let at_ms = self.at_ms;
        let p = self.payment_in(e.payment, &[PaymentStatus::Pending])?;
        // Cards by the gateway; points when the capture is manual (parked points).
        if p.method == PaymentMethod::None || (p.method == PaymentMethod::Points && p.capture != CaptureMode::Manual) {
            return Err("this payment is never authorized");
        }
        p.status = PaymentStatus::Authorized;
        if let Some(key) = &e.transaction_key {
            p.transaction_key = Some(key.clone());
        }
        p.updated_at_ms = at_ms;
        Ok(())
    }

    fn payment_failed(&mut self, e: &ev::PaymentFailed) -> Result<(), &'static str> {
        let at_ms = self.at_ms;
        let p = self.payment_in(e.payment, &[PaymentStatus::Pending])?;
        p.status = PaymentStatus::Failed;
        p.failure_reason = Some(e.reason.clone());
        p.updated_at_ms = at_ms;
        Ok(())
    }

    fn payment_voided(&mut self, e: &ev::PaymentVoided) -> Result<(), &'static str> {
        let at_ms = self.at_ms;
        let p = self.payment_in(e.payment, &[PaymentStatus::Pending, PaymentStatus::Authorized])?;
        p.status = PaymentStatus::Voided;
        p.updated_at_ms = at_ms;
        Ok(())
    }

    fn points_credited(&mut self, e: &ev::PointsCredited) -> Result<(), &'static str> {
        let c = self.customer(&e.customer)?;
        let c = self.m.customers.at_mut(c).ok_or("customer")?;
        c.points = c.points.checked_add(e.amount).ok_or("points overflow")?;
        Ok(())
    }

    fn points_debited(&mut self, e: &ev::PointsDebited) -> Result<(), &'static str> {
        let c = self.m.customers.get_mut(&e.customer).ok_or("unknown customer")?;
        c.points = c.points.checked_sub(e.amount).ok_or("points would go negative")?;
        Ok(())
    }

    fn queue_put(&mut self, e: &ev::QueuePut) -> Result<(), &'static str> {
        if e.max_active == 0 {
            return Err("max_active is 0");
        }
        match self.m.queues.get_mut(&e.queue) {
            Some(q) => {
                q.max_active = e.max_active;
                q.active_ttl_s = e.active_ttl_s;
            }
            None => {
                self.m.queues.push(Queue {
                    id: e.queue.clone(),
                    max_active: e.max_active,
                    active_ttl_s: e.active_ttl_s,
                    tokens: Default::default(),
                    next_waiting: 0,
                    active: 0,
                });
            }
        }
        Ok(())
    }

    fn idempotency_recorded(&mut self, e: &ev::IdempotencyRecorded, seq_after: u64) -> Result<(), &'static str> {
        let ids = &mut self.m.idempotency;
        if ids.records.contains_key(&e.key) {
            return Err("idempotency key already recorded");
        }
        ids.records.insert(
            e.key.clone(),
            IdempotencyRecord {
                fingerprint: e.fingerprint,
                reply: e.reply.clone(),
                expires_at_ms: e.expires_at_ms,
                applied_seq: seq_after,
            },
        );
        ids.order.push_back(e.key.clone());
        Ok(())
    }

    fn idempotency_expired(&mut self, e: &ev::IdempotencyExpired) -> Result<(), &'static str> {
        let ids = &mut self.m.idempotency;
        if ids.order.front() != Some(&e.key) {
            return Err("only the oldest idempotency record expires");
        }
        ids.order.pop_front();
        ids.records.remove(&e.key);
        Ok(())
    }

    fn payment_submitted_via(&mut self, e: &ev::PaymentSubmittedVia) -> Result<(), &'static str> {
        let at_ms = self.at_ms;
        let p = self.m.payment_mut(e.payment).ok_or("unknown payment")?;
        if p.method != PaymentMethod::Card {
            return Err("only card payments go through a gateway");
        }
        if p.transaction_key.as_deref().is_some_and(|known| known != &*e.transaction_key) {
            return Err("a payment has one gateway transaction");
        }
        p.transaction_key = Some(e.transaction_key.clone());
        p.gateway = Some(e.gateway.clone());
        p.updated_at_ms = at_ms;
        Ok(())
    }

    fn hold_archived(&mut self, e: &ev::HoldArchived) -> Result<(), &'static str> {
        let at_ms = self.at_ms;
        let hold = self.m.hold(e.hold).ok_or("unknown hold")?;
        if hold.status == HoldStatus::Held {
            return Err("a held hold is not settled");
        }
        self.m.holds.archive(index_of(e.hold)?, at_ms).ok_or("unknown hold")?;
        Ok(())
    }

    fn token_archived(&mut self, e: &ev::TokenArchived) -> Result<(), &'static str> {
        let at_ms = self.at_ms;
        let (_, q) = self.queue_mut(&e.queue)?;
        let seq = usize::try_from(e.seq).map_err(|_| "unknown token")?;
        if q.tokens.get(seq).ok_or("unknown token")?.status != TokenStatus::Expired {
            return Err("only an expired token is archived");
        }
        q.tokens.archive(seq, at_ms).ok_or("unknown token")?;
        Ok(())
    }

    fn deadline(&self, at_ms: UnixMs, kind: DeadlineKind, a: u64, b: u64) -> Deadline {
        Deadline { at_ms, merchant: self.merchant, kind, a, b }
    }

    /// The customer's position, creating the customer on first sight.
    fn customer(&mut self, id: &Arc<str>) -> Result<u32, &'static str> {
        if let Some(pos) = self.m.customers.position(id) {
            return Ok(pos);
        }
        if !crate::ids::is_valid_id(id) {
            return Err("invalid customer id");
        }
        Ok(self.m.customers.push(Customer { id: id.clone(), points: 0, account: AccountTotals::default() }))
    }

    fn item_put(&mut self, e: &ev::ItemPut) -> Outcome {
        match self.m.items.get_mut(&e.sku) {
            Some(item) => {
                let committed = item.held.checked_add(item.sold).ok_or("overflow")?;
                let available = e.stock.checked_sub(committed).ok_or("stock below held + sold")?;
                item.name = e.name.clone();
                item.price = e.price;
                item.stock = e.stock;
                item.available = available;
                item.queue = e.queue.clone();
                debug_assert!(item.is_conserved());
            }
            None => {
                if !crate::ids::is_valid_id(&e.sku) {
                    return Err("invalid sku");
                }
                self.m.items.push(Item {
                    sku: e.sku.clone(),
                    name: e.name.clone(),
                    price: e.price,
                    stock: e.stock,
                    available: e.stock,
                    held: 0,
                    sold: 0,
                    queue: e.queue.clone(),
                    archived_sold: 0,
                });
            }
        }
        Ok(())
    }

    fn item_restocked(&mut self, e: &ev::ItemRestocked) -> Outcome {
        let item = self.m.items.get_mut(&e.sku).ok_or("unknown sku")?;
        let stock = item.stock.checked_add(e.qty).ok_or("overflow")?;
        let available = item.available.checked_add(e.qty).ok_or("overflow")?;
        item.stock = stock;
        item.available = available;
        debug_assert!(item.is_conserved());
        Ok(())
    }

    fn inventory_moved(&mut self, e: &ev::InventoryMoved) -> Outcome {
        if e.from == e.to {
            return Err("move within one bucket");
        }
        let item = self.m.items.get_mut(&e.sku).ok_or("unknown sku")?;
        let from = item.bucket(e.from).checked_sub(e.qty).ok_or("not enough stock in the source bucket")?;
        let to = item.bucket(e.to).checked_add(e.qty).ok_or("overflow")?;
        *item.bucket_mut(e.from) = from;
        *item.bucket_mut(e.to) = to;
        debug_assert!(item.is_conserved());
        Ok(())
    }

    /// Lines by item position; prices are taken from the event (orders) or 0 (holds).
    /// Built at exact capacity: collecting `Result`s grows from empty and then shrinks.
    fn state_lines<'a>(
        &self,
        lines: impl ExactSizeIterator<Item = (&'a str, u64, u64)>,
    ) -> Result<Box<[StateLine]>, &'static str> {
        let mut out = Vec::with_capacity(lines.len());
        for (sku, qty, unit_price) in lines {
            let item = self.m.items.position(sku).ok_or("unknown sku")?;
            let qty = u32::try_from(qty).map_err(|_| "qty too large")?;
            out.push(StateLine { item, qty, unit_price });
        }
        Ok(out.into_boxed_slice())
    }

    fn hold_created(&mut self, e: &ev::HoldCreated) -> Outcome {
        if e.hold != self.m.holds.len() as u64 + 1 {
            return Err("hold number out of sequence");
        }
        let lines = self.state_lines(e.lines.iter().map(|l| (&*l.sku, l.qty, 0)))?;
        let customer = self.customer(&e.customer)?;
        self.m.holds.push(Hold {
            customer,
            status: HoldStatus::Held,
            lines,
            created_at_ms: self.at_ms,
            expires_at_ms: e.expires_at_ms,
            updated_at_ms: self.at_ms,
            order: None,
        });
        let deadline = self.deadline(e.expires_at_ms, DeadlineKind::Hold, e.hold, 0);
        self.deadlines.insert(deadline);
        Ok(())
    }

    fn hold_closed(&mut self, n: u64, status: HoldStatus, order: Option<u64>) -> Outcome {
        let at_ms = self.at_ms;
        let hold = self.m.hold_mut(n).ok_or("unknown hold")?;
        if hold.status != HoldStatus::Held {
            return Err("hold is not held");
        }
        hold.status = status;
        hold.order = order;
        hold.updated_at_ms = at_ms;
        let expires_at_ms = hold.expires_at_ms;
        let deadline = self.deadline(expires_at_ms, DeadlineKind::Hold, n, 0);
        self.deadlines.remove(&deadline);
        Ok(())
    }

    fn order_created(&mut self, e: &ev::OrderCreated) -> Outcome {
        if e.order != self.m.orders.len() as u64 + 1 {
            return Err("order number out of sequence");
        }
        let lines = self.state_lines(e.lines.iter().map(|l| (&*l.sku, l.qty, l.unit_price)))?;
        let customer = self.customer(&e.customer)?;
        self.m.orders.push(Order {
            customer,
            status: OrderStatus::AwaitingPayment,
            lines,
            total: e.total,
            hold: e.hold,
            payment: None,
            created_at_ms: self.at_ms,
            updated_at_ms: self.at_ms,
            expires_at_ms: e.expires_at_ms,
        });
        if let Some(at_ms) = e.expires_at_ms {
            let deadline = self.deadline(at_ms, DeadlineKind::Order, e.order, 0);
            self.deadlines.insert(deadline);
        }
        Ok(())
    }

    fn order_moved(&mut self, n: u64, from: &[OrderStatus], to: OrderStatus) -> Outcome {
        let at_ms = self.at_ms;
        let order = self.m.order_mut(n).ok_or("unknown order")?;
        if !from.contains(&order.status) {
            return Err("order status does not allow this transition");
        }
        order.status = to;
        order.updated_at_ms = at_ms;
        if let Some(expires_at_ms) = order.expires_at_ms.take() {
            let deadline = self.deadline(expires_at_ms, DeadlineKind::Order, n, 0);
            self.deadlines.remove(&deadline);
        }
        Ok(())
    }

    fn payment_in(&mut self, n: u64, from: &[PaymentStatus]) -> Result<&mut Payment, &'static str> {
        let p = self.m.payment_mut(n).ok_or("unknown payment")?;
        if !from.contains(&p.status) {
            return Err("payment status does not allow this transition");
        }
        Ok(p)
    }

    fn payment_requested(&mut self, e: &ev::PaymentRequested) -> Outcome {
        if e.payment != self.m.payments.len() as u64 + 1 {
            return Err("payment number out of sequence");
        }
        let at_ms = self.at_ms;
        let previous = self.m.order(e.order).ok_or("unknown order")?.payment;
        // A new payment only for an order without one, or whose last one failed.
        if previous.is_some_and(|p| self.m.payment(p).is_none_or(|p| p.status != PaymentStatus::Failed)) {
            return Err("order already has a payment");
        }
        let order = self.m.order_mut(e.order).ok_or("unknown order")?;
        if order.status != OrderStatus::AwaitingPayment {
            return Err("order is not awaiting payment");
        }
        if e.method == PaymentMethod::None || (e.method == PaymentMethod::Card) != e.card.is_some() {
            return Err("payment method and card do not match");
        }
        order.payment = Some(e.payment);
        order.updated_at_ms = at_ms;
        if e.method == PaymentMethod::Card {
            // The gateway decides now; the order no longer expires on its own.
            order.status = OrderStatus::PendingPayment;
            if let Some(expires_at_ms) = order.expires_at_ms.take() {
                let deadline = self.deadline(expires_at_ms, DeadlineKind::Order, e.order, 0);
                self.deadlines.remove(&deadline);
            }
        }
        let card = e.card.as_ref().map(|c| Box::new(CardInfo { last4: c.last4(), kind: c.kind.clone() }));
        self.m.payments.push(Payment {
            order: e.order,
            method: e.method,
            status: PaymentStatus::Pending,
            capture: e.capture,
            amount: e.amount,
            captured: 0,
            refunded: 0,
            card,
            transaction_key: None,
            failure_reason: None,
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
            gateway: None,
        });
        Ok(())
    }

    fn payment_captured(&mut self, e: &ev::PaymentCaptured) -> Outcome {
        let at_ms = self.at_ms;
        let p = self.payment_in(e.payment, &[PaymentStatus::Pending, PaymentStatus::Authorized])?;
        // Cards only once authorized; points straight from pending (automatic capture, and
        // manual capture before points could be authorized: older logs hold those) or once
        // authorized (manual capture).
        if p.status == PaymentStatus::Pending && p.method != PaymentMethod::Points {
            return Err("capture before authorization");
        }
        if e.amount > p.amount {
            return Err("capture above the authorized amount");
        }
        p.status = PaymentStatus::Captured;
        p.captured = e.amount;
        p.updated_at_ms = at_ms;
        Ok(())
    }

    fn payment_refunded(&mut self, e: &ev::PaymentRefunded) -> Outcome {
        let at_ms = self.at_ms;
        let p = self.payment_in(e.payment, &[PaymentStatus::Captured, PaymentStatus::PartiallyRefunded])?;
        let refunded = p.refunded.checked_add(e.amount).ok_or("overflow")?;
        if e.amount == 0 || refunded > p.captured {
            return Err("refund outside the captured amount");
        }
        p.refunded = refunded;
        p.status = if refunded == p.captured { PaymentStatus::Refunded } else { PaymentStatus::PartiallyRefunded };
        p.updated_at_ms = at_ms;
        Ok(())
    }

    /// Where an account's totals live: hashed once, then addressed by slot.
    fn account_slot(&self, account: &Account) -> Result<AccountSlot, &'static str> {
        match account {
            Account::CustomerPoints(c) => {
                Ok(AccountSlot::Customer(self.m.customers.position(c).ok_or("unknown customer account")?))
            }
            fixed => Ok(AccountSlot::Fixed(fixed.fixed_index().ok_or("unknown account")?)),
        }
    }

    fn totals(&mut self, slot: AccountSlot) -> &mut AccountTotals {
        match slot {
            AccountSlot::Fixed(i) => &mut self.m.ledger.fixed[i],
            AccountSlot::Customer(pos) => match self.m.customers.at_mut(pos) {
                Some(c) => &mut c.account,
                None => unreachable!("slot {pos} was just resolved"),
            },
        }
    }

    fn ledger_posted(&mut self, e: &ev::LedgerPosted) -> Outcome {
        if e.posting != self.m.ledger.postings + 1 {
            return Err("posting number out of sequence");
        }
        if e.debit == e.credit || e.amount == 0 {
            return Err("degenerate posting");
        }
        let amount = u128::from(e.amount);
        let (debit, credit) = (self.account_slot(&e.debit)?, self.account_slot(&e.credit)?);
        // Check both legs before touching either.
        let debits = self.totals(debit).debits.checked_add(amount).ok_or("overflow")?;
        let credits = self.totals(credit).credits.checked_add(amount).ok_or("overflow")?;
        self.totals(debit).debits = debits;
        self.totals(credit).credits = credits;
        self.m.ledger.postings += 1;
        Ok(())
    }

    fn gateway_requested(&mut self, e: &ev::GatewayRequested) -> Outcome {
        let p = self.m.payment(e.payment).ok_or("unknown payment")?;
        if p.method != PaymentMethod::Card || p.order != e.order {
            return Err("gateway request for another payment");
        }
        if (e.op == ev::GatewayOp::Authorize) != e.card.is_some() {
            return Err("an authorization, and only an authorization, carries the card");
        }
        if e.op == ev::GatewayOp::Authorize && p.status != PaymentStatus::Pending {
            return Err("authorization of a settled payment");
        }
        let p = self.m.payment_mut(e.payment).ok_or("unknown payment")?;
        // A void of a late approval names the transaction the payment did not know yet.
        if p.transaction_key.is_none() {
            p.transaction_key.clone_from(&e.transaction_key);
        }
        if p.gateway.is_none() {
            p.gateway.clone_from(&e.gateway);
        }
        Ok(())
    }

    fn order_reopened(&mut self, e: &ev::OrderReopened) -> Outcome {
        let at_ms = self.at_ms;
        let order = self.m.order(e.order).ok_or("unknown order")?;
        let failed = order.payment.and_then(|p| self.m.payment(p)).is_some_and(|p| p.status == PaymentStatus::Failed);
        if order.status != OrderStatus::PendingPayment || !failed {
            return Err("only an order whose card payment failed reopens");
        }
        let order = self.m.order_mut(e.order).ok_or("unknown order")?;
        order.status = OrderStatus::AwaitingPayment;
        order.expires_at_ms = Some(e.expires_at_ms);
        order.updated_at_ms = at_ms;
        let deadline = self.deadline(e.expires_at_ms, DeadlineKind::Order, e.order, 0);
        self.deadlines.insert(deadline);
        Ok(())
    }

    fn dead_lettered(&mut self, e: &ev::GatewayDeadLettered) -> Outcome {
        let at_ms = self.at_ms;
        if self.m.payment(e.payment).is_none_or(|p| p.method != PaymentMethod::Card) {
            return Err("dead letter of an unknown or non-card payment");
        }
        if e.dead_letter == self.m.dead_letters.len() as u64 + 1 {
            self.m.dead_letters.push(DeadLetter {
                payment: e.payment,
                op: e.op,
                key: e.key.clone(),
                amount: e.amount,
                reason: e.reason.clone(),
                status: DeadLetterStatus::Open,
                attempts: 1,
                created_at_ms: at_ms,
                updated_at_ms: at_ms,
            });
            return Ok(());
        }
        let dl = self.m.dead_letter_mut(e.dead_letter).ok_or("dead letter number out of sequence")?;
        if dl.status != DeadLetterStatus::Retried || dl.payment != e.payment || dl.key != e.key {
            return Err("only a retried dead letter opens again");
        }
        dl.status = DeadLetterStatus::Open;
        dl.attempts = dl.attempts.saturating_add(1);
        dl.reason = e.reason.clone();
        dl.updated_at_ms = at_ms;
        Ok(())
    }

    fn dead_letter_moved(&mut self, n: u64, from: DeadLetterStatus, to: DeadLetterStatus) -> Outcome {
        let at_ms = self.at_ms;
        let dl = self.m.dead_letter_mut(n).ok_or("unknown dead letter")?;
        if dl.status != from {
            return Err("dead letter status does not allow this transition");
        }
        dl.status = to;
        dl.updated_at_ms = at_ms;
        Ok(())
    }

    /// A settled order leaves memory; its payment left before it (same record). What it sold
    /// stays counted in its items' `archived_sold`.
    fn order_archived(&mut self, n: u64) -> Outcome {
        let at_ms = self.at_ms;
        let order = self.m.order(n).ok_or("unknown order")?;
        let sold = match order.status {
            OrderStatus::Paid | OrderStatus::Refunded => true,
            OrderStatus::Cancelled | OrderStatus::Expired => false,
            OrderStatus::AwaitingPayment | OrderStatus::PendingPayment => return Err("an unpaid order is not settled"),
        };
        if order.payment.is_some_and(|p| self.m.payment(p).is_some()) {
            return Err("an order is archived after its payment");
        }
        if sold {
            for line in order.lines.iter() {
                if self.m.items.at(line.item).is_none() {
                    return Err("order line names no item");
                }
            }
        }
        let order = self.m.orders.archive(index_of(n)?, at_ms).ok_or("unknown order")?;
        if sold {
            for line in order.lines.iter() {
                if let Some(item) = self.m.items.at_mut(line.item) {
                    item.archived_sold += u64::from(line.qty);
                }
            }
        }
        Ok(())
    }

    /// A payment in a terminal status leaves memory: not while its order (live) still waits
    /// for it or may pay again, nor while a dead letter of it waits for an operator.
    fn payment_archived(&mut self, n: u64) -> Outcome {
        let at_ms = self.at_ms;
        let p = self.m.payment(n).ok_or("unknown payment")?;
        if matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized) {
            return Err("a pending or authorized payment is not settled");
        }
        if let Some(order) = self.m.order(p.order) {
            let settled = matches!(
                order.status,
                OrderStatus::Paid | OrderStatus::Cancelled | OrderStatus::Expired | OrderStatus::Refunded
            );
            if order.payment == Some(n) && !settled {
                return Err("the payment of an unsettled order is not archived");
            }
        }
        if self.m.dead_letters.iter().any(|dl| dl.payment == n && dl.status != DeadLetterStatus::Resolved) {
            return Err("a payment with an open dead letter is not archived");
        }
        let net = match p.method {
            PaymentMethod::Card => u128::from(p.captured.checked_sub(p.refunded).ok_or("refunded above captured")?),
            PaymentMethod::Points | PaymentMethod::None => 0,
        };
        let card_net = self.m.archived_card_net.checked_add(net).ok_or("overflow")?;
        self.m.payments.archive(index_of(n)?, at_ms).ok_or("unknown payment")?;
        self.m.archived_card_net = card_net;
        Ok(())
    }

    fn queue_mut(&mut self, id: &str) -> Result<(u32, &mut Queue), &'static str> {
        let pos = self.m.queues.position(id).ok_or("unknown queue")?;
        Ok((pos, self.m.queues.at_mut(pos).ok_or("unknown queue")?))
    }

    fn token_issued(&mut self, e: &ev::TokenIssued) -> Outcome {
        let customer = self.customer(&e.customer)?;
        let at_ms = self.at_ms;
        let (_, q) = self.queue_mut(&e.queue)?;
        if e.seq != q.tokens.len() as u64 {
            return Err("token number out of sequence");
        }
        q.tokens.push(Token {
            customer,
            nonce: e.nonce,
            status: TokenStatus::Waiting,
            issued_at_ms: at_ms,
            active_until_ms: None,
        });
        Ok(())
    }

    fn token_activated(&mut self, e: &ev::TokenActivated) -> Outcome {
        let at_ms = self.at_ms;
        let (pos, q) = self.queue_mut(&e.queue)?;
        if e.seq != q.next_waiting || q.active >= q.max_active {
            return Err("activation out of order or beyond max_active");
        }
        let until_ms = at_ms.saturating_add(q.active_ttl_s.saturating_mul(1_000));
        let token = q.tokens.get_mut(e.seq as usize).ok_or("unknown token")?;
        debug_assert_eq!(token.status, TokenStatus::Waiting);
        token.status = TokenStatus::Active;
        token.active_until_ms = Some(until_ms);
        q.next_waiting += 1;
        q.active += 1;
        let deadline = self.deadline(until_ms, DeadlineKind::Token, u64::from(pos), e.seq);
        self.deadlines.insert(deadline);
        Ok(())
    }

    fn token_expired(&mut self, e: &ev::TokenExpired) -> Outcome {
        let (pos, q) = self.queue_mut(&e.queue)?;
        let token = q.tokens.get_mut(e.seq as usize).ok_or("unknown token")?;
        if token.status != TokenStatus::Active {
            return Err("token is not active");
        }
        token.status = TokenStatus::Expired;
        let until_ms = token.active_until_ms.unwrap_or_default();
        q.active -= 1;
        let deadline = self.deadline(until_ms, DeadlineKind::Token, u64::from(pos), e.seq);
        self.deadlines.remove(&deadline);
        Ok(())
    }
}

impl Shard {
    /// Deadlines as the state implies them (restore, and the invariant check).
    pub(crate) fn derive_deadlines(&self) -> BTreeSet<Deadline> {
        let mut out = BTreeSet::new();
        for (mi, m) in self.merchants.iter().enumerate() {
            let merchant = mi as u32;
            for (i, h) in m.holds.iter() {
                if h.status == HoldStatus::Held {
                    out.insert(Deadline {
                        at_ms: h.expires_at_ms,
                        merchant,
                        kind: DeadlineKind::Hold,
                        a: i as u64 + 1,
                        b: 0,
                    });
                }
            }
            for (i, o) in m.orders.iter() {
                if let Some(at_ms) = o.expires_at_ms {
                    out.insert(Deadline { at_ms, merchant, kind: DeadlineKind::Order, a: i as u64 + 1, b: 0 });
                }
            }
            for (qi, q) in m.queues.iter().enumerate() {
                for (seq, t) in q.tokens.iter() {
                    if let (TokenStatus::Active, Some(at_ms)) = (t.status, t.active_until_ms) {
                        out.insert(Deadline {
                            at_ms,
                            merchant,
                            kind: DeadlineKind::Token,
                            a: qi as u64,
                            b: seq as u64,
                        });
                    }
                }
            }
        }
        out
    }
}
