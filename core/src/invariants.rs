//! The design's rules as one check over a whole shard, recomputed from first principles
//! (not from running totals). Tests run it after every step; `restore` runs it on every
//! snapshot it loads.

use crate::command::PaymentMethod;
use crate::ledger::Account;
use crate::state::Shard;
use crate::state::{HoldStatus, Merchant, OrderStatus, PaymentStatus, TokenStatus};

impl Shard {
    pub fn check_invariants(&self) -> Result<(), String> {
        for m in self.merchants.iter() {
            check_merchant(m).map_err(|e| format!("merchant {}: {e}", m.id))?;
        }
        if self.derive_deadlines() != self.deadlines {
            return Err("deadline index differs from the state".into());
        }
        Ok(())
    }
}

fn check_merchant(m: &Merchant) -> Result<(), String> {
    check_stock(m)?;
    check_points(m)?;
    check_card_money(m)?;
    check_payments(m)?;
    check_orders(m)?;
    check_queues_and_keys(m)
}

/// Stock: conservation per item, and held / sold equal to what holds and orders claim.
fn check_stock(m: &Merchant) -> Result<(), String> {
    let mut held = vec![0u64; m.items.len()];
    let mut sold = vec![0u64; m.items.len()];
    let claim = |lines: &[crate::state::StateLine], into: &mut Vec<u64>| -> Result<(), String> {
        for l in lines {
            *into.get_mut(l.item as usize).ok_or("line names no item")? += u64::from(l.qty);
        }
        Ok(())
    };
    for (_, h) in m.holds.iter().filter(|(_, h)| h.status == HoldStatus::Held) {
        claim(&h.lines, &mut held)?;
    }
    for (_, o) in m.orders.iter() {
        match o.status.stock_bucket() {
            Some(crate::event::Bucket::Held) => claim(&o.lines, &mut held)?,
            Some(crate::event::Bucket::Sold) => claim(&o.lines, &mut sold)?,
            _ => {}
        }
    }
    for (i, item) in m.items.iter().enumerate() {
        if !item.is_conserved() {
            return Err(format!(
                "item {}: available {} + held {} + sold {} != stock {}",
                item.sku, item.available, item.held, item.sold, item.stock
            ));
        }
        // Archived orders keep what they sold counted in `archived_sold`.
        if item.held != held[i] || Some(item.sold) != sold[i].checked_add(item.archived_sold) {
            return Err(format!(
                "item {}: held {} / sold {} but holds and orders claim {} / {} (+ {} archived)",
                item.sku, item.held, item.sold, held[i], sold[i], item.archived_sold
            ));
        }
    }
    Ok(())
}

/// Points: never negative, each customer's equal to their account, and what manual-capture
/// authorizations park equal to `points:authorized`.
fn check_points(m: &Merchant) -> Result<(), String> {
    // Points: never negative (unsigned), and equal to the customer's points account.
    for c in m.customers.iter() {
        if c.account.credits < c.account.debits || c.account.credits - c.account.debits != u128::from(c.points) {
            return Err(format!(
                "customer {}: points {} but account credits {} debits {}",
                c.id, c.points, c.account.credits, c.account.debits
            ));
        }
    }

    // Points parked by manual-capture authorizations: exactly what authorized points
    // payments hold.
    let parked: u128 = m
        .payments
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.method == PaymentMethod::Points && p.status == PaymentStatus::Authorized)
        .map(|p| u128::from(p.amount))
        .sum();
    let authorized = Account::PointsAuthorized.fixed_index().map(|i| m.ledger.fixed[i]).unwrap_or_default();
    if authorized.credits < authorized.debits || authorized.credits - authorized.debits != parked {
        return Err(format!(
            "points:authorized credits {} debits {} but authorized points payments hold {parked}",
            authorized.credits, authorized.debits
        ));
    }
    Ok(())
}

/// Card money: `gateway:authorized` and `gateway:clearing` equal what card payments hold, and
/// dead letters belong to card payments' captures, voids and refunds.
fn check_card_money(m: &Merchant) -> Result<(), String> {
    // Card authorizations: `gateway:authorized` holds exactly what authorized card payments
    // hold, and `gateway:clearing` what the gateway owes: open authorizations plus captured,
    // unrefunded card payments.
    let card_authorized: u128 = m
        .payments
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.method == PaymentMethod::Card && p.status == PaymentStatus::Authorized)
        .map(|p| u128::from(p.amount))
        .sum();
    let totals = |a: Account| a.fixed_index().map(|i| m.ledger.fixed[i]).unwrap_or_default();
    let gateway_authorized = totals(Account::GatewayAuthorized);
    if gateway_authorized.credits < gateway_authorized.debits
        || gateway_authorized.credits - gateway_authorized.debits != card_authorized
    {
        return Err(format!(
            "gateway:authorized credits {} debits {} but authorized card payments hold {card_authorized}",
            gateway_authorized.credits, gateway_authorized.debits
        ));
    }
    let card_owed: u128 = m
        .payments
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.method == PaymentMethod::Card)
        .map(|p| u128::from(p.captured.saturating_sub(p.refunded)))
        .sum::<u128>()
        + card_authorized
        + m.archived_card_net;
    let clearing = totals(Account::GatewayClearing);
    if clearing.debits < clearing.credits || clearing.debits - clearing.credits != card_owed {
        return Err(format!(
            "gateway:clearing debits {} credits {} but the gateway owes {card_owed}",
            clearing.debits, clearing.credits
        ));
    }

    // Dead letters: captures, voids and refunds of card payments.
    for (i, dl) in m.dead_letters.iter().enumerate() {
        // Only a payment whose dead letters are resolved is archived.
        let archived = m.payment_archived_at(dl.payment).is_some();
        if archived && dl.status != crate::state::DeadLetterStatus::Resolved {
            return Err(format!("dead letter {}: open for an archived payment", i + 1));
        }
        let card = archived || m.payment(dl.payment).is_some_and(|p| p.method == PaymentMethod::Card);
        if !card || dl.op == crate::event::GatewayOp::Authorize || dl.attempts == 0 {
            return Err(format!(
                "dead letter {}: {:?} of payment {} (attempts {})",
                i + 1,
                dl.op,
                dl.payment,
                dl.attempts
            ));
        }
    }
    Ok(())
}

/// The trial balance is zero; payments' amounts nest and their statuses agree with their orders.
fn check_payments(m: &Merchant) -> Result<(), String> {
    // Ledger: the trial balance over every account is zero.
    let tb = m.trial_balance();
    if !tb.balanced {
        return Err(format!("trial balance: debits {} credits {}", tb.total_debits, tb.total_credits));
    }

    // Payments: amounts nest, statuses agree with them and with their order.
    for (i, p) in m.payments.iter() {
        let n = i as u64 + 1;
        if p.captured > p.amount || p.refunded > p.captured {
            return Err(format!("payment {n}: amount {} captured {} refunded {}", p.amount, p.captured, p.refunded));
        }
        let refunds_agree = match p.status {
            PaymentStatus::Captured => p.refunded == 0,
            PaymentStatus::PartiallyRefunded => p.refunded > 0 && p.refunded < p.captured,
            PaymentStatus::Refunded => p.refunded == p.captured,
            _ => p.captured == 0 && p.refunded == 0,
        };
        if !refunds_agree {
            return Err(format!(
                "payment {n}: status {:?} with captured {} refunded {}",
                p.status, p.captured, p.refunded
            ));
        }
        let Some(order) = m.order(p.order) else {
            // The order left before this payment: only an earlier payment that failed.
            if m.order_archived_at(p.order).is_none() || p.status != PaymentStatus::Failed {
                return Err(format!("payment {n}: no order"));
            }
            continue;
        };
        if order.payment != Some(n) {
            // An order is paid again only after a failed payment: earlier ones all failed.
            if p.status != PaymentStatus::Failed || order.payment.is_none_or(|current| current < n) {
                return Err(format!("payment {n}: its order does not point back"));
            }
            continue;
        }
        let consistent = match order.status {
            OrderStatus::PendingPayment => p.status == PaymentStatus::Pending,
            OrderStatus::Paid => matches!(
                p.status,
                PaymentStatus::Authorized | PaymentStatus::Captured | PaymentStatus::PartiallyRefunded
            ),
            OrderStatus::Refunded => p.status == PaymentStatus::Refunded,
            // Waiting for a payment again after a card payment failed.
            OrderStatus::AwaitingPayment => p.status == PaymentStatus::Failed,
            OrderStatus::Cancelled | OrderStatus::Expired => {
                !matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized)
            }
        };
        if !consistent {
            return Err(format!("payment {n}: {:?} while its order is {:?}", p.status, order.status));
        }
    }
    Ok(())
}

/// Orders: a payment in memory while unsettled, paid ones have one, only payable ones expire.
fn check_orders(m: &Merchant) -> Result<(), String> {
    for (i, o) in m.orders.iter() {
        // The payment of an order in memory is in memory until the order is settled.
        let settled = !matches!(o.status, OrderStatus::AwaitingPayment | OrderStatus::PendingPayment);
        if o.payment.is_some_and(|p| m.payment(p).is_none()) && !settled {
            return Err(format!("order {}: its payment was archived while {:?}", i + 1, o.status));
        }
        if o.status == OrderStatus::Paid && o.payment.is_none() {
            return Err(format!("order {}: paid without a payment", i + 1));
        }
        // Only an order waiting for a payment expires (it has none yet, or its last failed).
        let payable = o.status == OrderStatus::AwaitingPayment
            && o.payment.and_then(|p| m.payment(p)).is_none_or(|p| p.status == PaymentStatus::Failed);
        if o.expires_at_ms.is_some() && !payable {
            return Err(format!("order {}: expiry set in status {:?}", i + 1, o.status));
        }
    }
    Ok(())
}

/// Waiting rooms' lines and active counts; the idempotency index matches its order.
fn check_queues_and_keys(m: &Merchant) -> Result<(), String> {
    // Tokens before next_waiting have left the line, the rest wait.
    for q in m.queues.iter() {
        let mut active = 0;
        for (seq, t) in q.tokens.iter() {
            let waiting = (seq as u64) >= q.next_waiting;
            if waiting != (t.status == TokenStatus::Waiting) {
                return Err(format!(
                    "queue {}: token {seq} is {:?} at next_waiting {}",
                    q.id, t.status, q.next_waiting
                ));
            }
            active += u64::from(t.status == TokenStatus::Active);
        }
        if active != q.active {
            return Err(format!("queue {}: {} active tokens, count says {}", q.id, active, q.active));
        }
    }

    if m.idempotency.records.len() != m.idempotency.order.len() {
        return Err("idempotency index and order differ".into());
    }
    Ok(())
}
