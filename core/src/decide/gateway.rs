//! The card path. A card payment is requested here and settled by the gateway worker's
//! reports (`GatewayAccepted`, `GatewayApproved`, `GatewayDeclined`, `GatewayGaveUp`);
//! captures, voids and refunds of card payments are decided at once and carried out at the
//! gateway afterwards. Every call the worker must make is a `GatewayRequested` event, so the
//! worker needs nothing but the log, and every call carries a key that makes its retries
//! harmless at the gateway.
//!
//! Rules kept here:
//! - A card payment settles exactly once: approved (authorized; captured too when its capture
//!   is automatic), declined, given up or voided. A report about a settled payment changes
//!   nothing, except an approval of a payment that failed or was voided: that charge must not
//!   stand, so it is voided at the gateway.
//! - A failed card payment sends its order back to `awaiting_payment` with the stock still
//!   held until the order's payment window (`UNPAID_ORDER_TTL_MS` from its creation) ends; an
//!   order whose window has already ended expires at once and its stock returns.
//! - A payment the worker gave up on may still exist at the gateway (a request that went
//!   unanswered): it is voided there too.
//! - A capture, void or refund that keeps failing becomes one dead letter per operation; an
//!   operator's retry requests the same operation with the same key.

use super::{check_text, find_payment, order_stock, Card, Draft, Target};
use crate::command::{CaptureMode, PaymentMethod};
use crate::error::CoreError;
use crate::event::{self as ev, Bucket, GatewayOp, PostingKind};
use crate::ids::Numbered;
use crate::ledger::Account;
use crate::limits::{ID_LEN_MAX, UNPAID_ORDER_TTL_MS};
use crate::state::{DeadLetterStatus, Merchant, OrderStatus, Payment, PaymentStatus};

/// Idempotency key suffixes (`GatewayRequested::key`).
const KEY_AUTHORIZE: &str = "authorize";
const KEY_CAPTURE: &str = "capture";
const KEY_VOID: &str = "void";

/// Refunds are told apart by how much was refunded before each: that grows with every
/// refund, so no two refunds of a payment share a key.
pub(super) fn refund_key(refunded_before: u64) -> Box<str> {
    format!("refund:{refunded_before}").into()
}

pub(super) fn capture_key() -> Box<str> {
    KEY_CAPTURE.into()
}

/// A card payment of `amount` for `order`: the payment, pending, and the authorization the
/// worker is to ask for.
pub(super) fn request_card_payment(
    d: &mut Draft,
    payment: u64,
    order: u64,
    amount: u64,
    capture: CaptureMode,
    card: Card,
) {
    d.push(ev::PaymentRequested {
        payment,
        order,
        method: PaymentMethod::Card,
        amount,
        capture,
        card: Some(card.masked),
    });
    d.push(ev::GatewayRequested {
        payment,
        order,
        op: GatewayOp::Authorize,
        amount,
        key: KEY_AUTHORIZE.into(),
        capture,
        transaction_key: None,
        gateway: None,
        card: Some(card.sealed),
        retry_of: None,
    });
}

/// Asks the worker to carry out `op` on card payment `n` at its gateway.
pub(super) fn request_op(d: &mut Draft, n: u64, p: &Payment, op: GatewayOp, amount: u64, key: Box<str>) {
    debug_assert!(p.method == PaymentMethod::Card && op != GatewayOp::Authorize);
    d.push(ev::GatewayRequested {
        payment: n,
        order: p.order,
        op,
        amount,
        key,
        capture: p.capture,
        transaction_key: p.transaction_key.clone(),
        gateway: p.gateway.clone(),
        card: None,
        retry_of: None,
    });
}

/// Captures `amount` of a card authorization of `authorized`; the rest is released.
pub(super) fn capture_card(d: &mut Draft, payment: u64, authorized: u64, amount: u64) {
    debug_assert!(amount <= authorized);
    d.push(ev::PaymentCaptured { payment, amount });
    d.post(Account::GatewayAuthorized, Account::SalesRevenue, amount, PostingKind::Capture, Some(payment));
    let rest = authorized - amount;
    d.post(Account::GatewayAuthorized, Account::GatewayClearing, rest, PostingKind::Release, Some(payment));
}

/// The gateway side of voiding card payment `n` (its `PaymentVoided` is the caller's): an
/// authorization's amount is released, and the worker voids whatever the gateway holds or
/// may still approve.
pub(super) fn void_card(d: &mut Draft, n: u64, p: &Payment) {
    debug_assert!(matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized));
    if p.status == PaymentStatus::Authorized {
        d.post(Account::GatewayAuthorized, Account::GatewayClearing, p.amount, PostingKind::Release, Some(n));
    }
    request_op(d, n, p, GatewayOp::Void, p.amount, KEY_VOID.into());
}

fn check_transaction_key(key: &str) -> Result<(), CoreError> {
    if key.is_empty() || key.len() > ID_LEN_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CoreError::invalid("transaction_key", "must be 1..=64 printable characters"));
    }
    Ok(())
}

fn card_payment<'a>(m: &'a Merchant, id: &str) -> Result<(u64, &'a Payment), CoreError> {
    let (n, p) = find_payment(m, id)?;
    if p.method != PaymentMethod::Card {
        return Err(CoreError::InvalidState { status: p.status.as_str() });
    }
    Ok((n, p))
}

pub(super) fn accepted(m: &Merchant, d: &mut Draft, id: &str, key: &str, gateway: &str) -> Result<Target, CoreError> {
    check_transaction_key(key)?;
    if gateway.is_empty() || gateway.len() > ID_LEN_MAX * 2 || !gateway.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CoreError::invalid("gateway", "must be 1..=128 printable characters"));
    }
    let (n, p) = card_payment(m, id)?;
    match (p.transaction_key.as_deref(), p.gateway.as_deref()) {
        // One payment, one gateway transaction: its idempotency key sees to that.
        (Some(known), _) if known != key => return Err(CoreError::InvalidState { status: "submitted" }),
        (Some(_), Some(_)) => {} // told again: nothing new
        // First news, or the approval came first (it names the key, not the gateway).
        _ => d.push(ev::PaymentSubmittedVia { payment: n, transaction_key: key.into(), gateway: gateway.into() }),
    }
    Ok(Target::Payment(n))
}

pub(super) fn approved(m: &Merchant, d: &mut Draft, id: &str, key: &str) -> Result<Target, CoreError> {
    check_transaction_key(key)?;
    let (n, p) = card_payment(m, id)?;
    let same_transaction = p.transaction_key.as_deref().is_none_or(|known| known == key);
    match p.status {
        PaymentStatus::Pending => {
            if !same_transaction {
                return Err(CoreError::invalid("transaction_key", "does not match the payment's transaction"));
            }
            let order = m.order(p.order).ok_or_else(|| CoreError::not_found("order"))?;
            if order.status != OrderStatus::PendingPayment {
                return Err(CoreError::InvalidState { status: order.status.as_str() });
            }
            d.push(ev::PaymentAuthorized { payment: n, transaction_key: Some(key.into()) });
            d.post(Account::GatewayClearing, Account::GatewayAuthorized, p.amount, PostingKind::Authorize, Some(n));
            if p.capture == CaptureMode::Automatic {
                // The gateway captured on approval (the authorization asked it to).
                capture_card(d, n, p.amount, p.amount);
            }
            d.move_stock(order_stock(m, order), Bucket::Held, Bucket::Sold);
            d.push(ev::OrderPaid { order: p.order });
        }
        // A late approval: this charge must not stand.
        PaymentStatus::Failed | PaymentStatus::Voided => {
            if p.transaction_key.as_deref() != Some(key) {
                d.push(ev::GatewayRequested {
                    payment: n,
                    order: p.order,
                    op: GatewayOp::Void,
                    amount: p.amount,
                    key: KEY_VOID.into(),
                    capture: p.capture,
                    transaction_key: Some(key.into()),
                    gateway: p.gateway.clone(),
                    card: None,
                    retry_of: None,
                });
            }
        }
        // Approved before: a repeated callback or look-up.
        _ if same_transaction => {}
        _ => return Err(CoreError::invalid("transaction_key", "does not match the payment's transaction")),
    }
    Ok(Target::Payment(n))
}

pub(super) fn declined(m: &Merchant, d: &mut Draft, id: &str, reason: &str) -> Result<Target, CoreError> {
    settle_failed(m, d, id, reason, false)
}

pub(super) fn gave_up(m: &Merchant, d: &mut Draft, id: &str, reason: &str) -> Result<Target, CoreError> {
    settle_failed(m, d, id, reason, true)
}

/// Fails a pending card payment; `void_at_gateway` when the gateway may hold a transaction
/// for it that nobody reported.
fn settle_failed(
    m: &Merchant,
    d: &mut Draft,
    id: &str,
    reason: &str,
    void_at_gateway: bool,
) -> Result<Target, CoreError> {
    check_text("reason", reason, 0)?;
    let (n, p) = card_payment(m, id)?;
    match p.status {
        PaymentStatus::Pending => {}
        // Settled already (a repeated callback, or a decline after the worker gave up).
        PaymentStatus::Failed | PaymentStatus::Voided => return Ok(Target::Payment(n)),
        other => return Err(CoreError::InvalidState { status: other.as_str() }),
    }
    let order = m.order(p.order).ok_or_else(|| CoreError::not_found("order"))?;
    if order.status != OrderStatus::PendingPayment {
        return Err(CoreError::InvalidState { status: order.status.as_str() });
    }
    d.push(ev::PaymentFailed { payment: n, reason: reason.into() });
    let expires_at_ms = order.created_at_ms.saturating_add(UNPAID_ORDER_TTL_MS);
    d.push(ev::OrderReopened { order: p.order, expires_at_ms });
    if d.at_ms >= expires_at_ms {
        d.push(ev::OrderExpired { order: p.order });
        d.move_stock(order_stock(m, order), Bucket::Held, Bucket::Available);
    }
    if void_at_gateway {
        request_op(d, n, p, GatewayOp::Void, p.amount, KEY_VOID.into());
    }
    Ok(Target::Payment(n))
}

pub(super) fn op_failed(
    m: &Merchant,
    d: &mut Draft,
    id: &str,
    op: GatewayOp,
    key: &str,
    amount: u64,
    reason: &str,
) -> Result<Target, CoreError> {
    check_text("reason", reason, 0)?;
    check_text("key", key, 1)?;
    let (n, _) = card_payment(m, id)?;
    if op == GatewayOp::Authorize {
        return Err(CoreError::invalid("op", "an authorization that fails fails its payment instead"));
    }
    // Dead letters are rare; the newest match is the operation's own.
    let known = m.dead_letters.iter().enumerate().rev().find(|(_, dl)| dl.payment == n && &*dl.key == key);
    let dead_letter = match known {
        None => m.dead_letters.len() as u64 + 1,
        Some((i, dl)) if dl.status == DeadLetterStatus::Retried => i as u64 + 1,
        // Open already, or resolved since: a repeated or late report.
        Some(_) => return Ok(Target::Payment(n)),
    };
    d.push(ev::GatewayDeadLettered { dead_letter, payment: n, op, key: key.into(), amount, reason: reason.into() });
    Ok(Target::Payment(n))
}

fn find_dead_letter<'a>(m: &'a Merchant, id: &str) -> Result<(u64, &'a crate::state::DeadLetter), CoreError> {
    let n = Numbered::DeadLetter.parse(id).ok_or_else(|| CoreError::not_found("dead letter"))?;
    Ok((n, m.dead_letter(n).ok_or_else(|| CoreError::not_found("dead letter"))?))
}

pub(super) fn retry_dead_letter(m: &Merchant, d: &mut Draft, id: &str) -> Result<Target, CoreError> {
    let (n, dl) = find_dead_letter(m, id)?;
    if dl.status != DeadLetterStatus::Open {
        return Err(CoreError::InvalidState { status: dl.status.as_str() });
    }
    let p = m.payment(dl.payment).ok_or_else(|| CoreError::not_found("payment"))?;
    d.push(ev::DeadLetterRetried { dead_letter: n });
    d.push(ev::GatewayRequested {
        payment: dl.payment,
        order: p.order,
        op: dl.op,
        amount: dl.amount,
        key: dl.key.clone(),
        capture: p.capture,
        transaction_key: p.transaction_key.clone(),
        gateway: p.gateway.clone(),
        card: None,
        retry_of: Some(n),
    });
    Ok(Target::DeadLetter(n))
}

pub(super) fn resolve_dead_letter(m: &Merchant, d: &mut Draft, n: u64) -> Result<Target, CoreError> {
    let dl = m.dead_letter(n).ok_or_else(|| CoreError::not_found("dead letter"))?;
    if dl.status == DeadLetterStatus::Retried {
        d.push(ev::DeadLetterResolved { dead_letter: n });
    }
    Ok(Target::DeadLetter(n))
}
