//! The JSON the API shows: core's views with RFC 3339 times (`created_at`) instead of Unix
//! milliseconds (`created_at_ms`). Rendering is a pure function of the view, so a replayed
//! reply renders byte for byte as the first answer did.

use serde::Serialize;
use serde_json::{json, Value};
use surge_core::envelope::rfc3339_ms;
use surge_core::ledger::TrialBalance;
use surge_core::view::{
    AccountView, HoldView, ItemView, LineView, MerchantView, OrderView, PaymentView, PointsView, QueueView, TokenView,
};
use surge_core::Reply;

fn time(ms: u64) -> String {
    rfc3339_ms(ms)
}

pub fn merchant(m: &MerchantView, api_key: Option<&str>) -> Value {
    let mut v = json!({
        "id": m.id,
        "name": m.name,
        "currency": m.currency,
        "created_at": time(m.created_at_ms),
    });
    if let Some(key) = api_key {
        v["api_key"] = Value::from(key);
    }
    v
}

pub fn item(i: &ItemView) -> Value {
    json!({
        "sku": &*i.sku,
        "name": i.name,
        "price": i.price,
        "stock": i.stock,
        "available": i.available,
        "held": i.held,
        "sold": i.sold,
        "queue_id": i.queue_id.as_deref(),
    })
}

fn lines(lines: &[LineView]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| match l.unit_price {
            Some(p) => json!({"sku": &*l.sku, "qty": l.qty, "unit_price": p, "amount": p.saturating_mul(l.qty)}),
            None => json!({"sku": &*l.sku, "qty": l.qty}),
        })
        .collect()
}

pub fn hold(h: &HoldView) -> Value {
    json!({
        "id": h.id.to_string(),
        "customer_id": &*h.customer_id,
        "status": h.status.as_str(),
        "lines": lines(&h.lines),
        "order_id": h.order_id.map(|o| o.to_string()),
        "expires_at": time(h.expires_at_ms),
        "created_at": time(h.created_at_ms),
        "updated_at": time(h.updated_at_ms),
    })
}

pub fn payment(p: &PaymentView) -> Value {
    json!({
        "id": p.id.to_string(),
        "order_id": p.order_id.to_string(),
        "method": p.method.as_str(),
        "status": p.status.as_str(),
        "capture": p.capture.as_str(),
        "amount": p.amount,
        "captured": p.captured,
        "refunded": p.refunded,
        "card": p.card.as_ref().map(|c| json!({"last4": c.last4, "type": c.kind})),
        "transaction_key": p.transaction_key,
        "failure_reason": p.failure_reason,
        "created_at": time(p.created_at_ms),
        "updated_at": time(p.updated_at_ms),
    })
}

pub fn order(o: &OrderView) -> Value {
    json!({
        "id": o.id.to_string(),
        "customer_id": &*o.customer_id,
        "status": o.status.as_str(),
        "lines": lines(&o.lines),
        "total": o.total,
        "hold_id": o.hold_id.map(|h| h.to_string()),
        "payment": o.payment.as_deref().map(payment),
        "expires_at": o.expires_at_ms.map(time),
        "created_at": time(o.created_at_ms),
        "updated_at": time(o.updated_at_ms),
    })
}

pub fn points(p: &PointsView) -> Value {
    json!({"customer_id": &*p.customer_id, "balance": p.balance})
}

pub fn queue(q: &QueueView) -> Value {
    json!({
        "id": q.id,
        "max_active": q.max_active,
        "active_ttl_seconds": q.active_ttl_s,
        "active": q.active,
        "waiting": q.waiting,
    })
}

pub fn token(t: &TokenView) -> Value {
    json!({
        "token": t.token,
        "queue_id": t.queue_id,
        "customer_id": &*t.customer_id,
        "status": t.status.as_str(),
        "position": t.position,
        "active_until": t.active_until_ms.map(time),
    })
}

#[derive(Serialize)]
struct AccountDto<'a> {
    account: &'a str,
    debits: u128,
    credits: u128,
    balance: i128,
}

/// Bytes, not a `Value`: totals are 128-bit, which `Value` cannot hold beyond 64 bits.
pub fn account(a: &AccountView) -> Vec<u8> {
    serde_json::to_vec(&AccountDto { account: &a.account, debits: a.debits, credits: a.credits, balance: a.balance })
        .unwrap_or_default()
}

pub fn trial_balance(t: &TrialBalance) -> Vec<u8> {
    serde_json::to_vec(t).unwrap_or_default()
}

/// A command's reply as JSON (merchant replies carry no key: it is shown once, at creation).
pub fn reply(r: &Reply) -> Value {
    match r {
        Reply::Merchant(m) => merchant(m, None),
        Reply::Item { item: i, .. } => item(i),
        Reply::Items { created, updated } => json!({"created": created, "updated": updated}),
        Reply::Hold(h) => hold(h),
        Reply::Order(o) => order(o),
        Reply::Payment(p) => payment(p),
        Reply::Points(p) => points(p),
        Reply::Queue(q) => queue(q),
        Reply::Token(t) => token(t),
    }
}
