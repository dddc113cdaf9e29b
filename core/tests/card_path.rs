//! The card path through `Shard::execute` and `tick`: what the gateway worker is asked to do
//! (`GatewayRequested`), and what its reports change, with every invariant checked after
//! each step (including `gateway:authorized` and `gateway:clearing` against the payments).

mod common;

use common::*;
use surge_core::event::{EventBody, GatewayOp, GatewayRequested};

const TX: &str = "20261205:TR:9577c5";

fn requests(events: &[Event]) -> Vec<GatewayRequested> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::GatewayRequested(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn one_request(events: &[Event]) -> GatewayRequested {
    let mut all = requests(events);
    assert_eq!(all.len(), 1, "one gateway request in {events:?}");
    all.remove(0)
}

fn manual_card() -> PaymentSpec {
    PaymentSpec { capture: CaptureMode::Manual, ..pay(PaymentMethod::Card) }
}

fn card_order(f: &mut Fixture, qty: u64, payment: PaymentSpec) -> Vec<Event> {
    f.events(Command::CreateOrder {
        customer: "c".into(),
        source: OrderSource::Lines(lines(&[("sku", qty)])),
        payment,
        queue_token: None,
    })
}

fn accepted(payment: &str, key: &str) -> Command {
    Command::GatewayAccepted { payment: payment.into(), transaction_key: key.into(), gateway: "127.0.0.1:9300".into() }
}

fn approved(payment: &str, key: &str) -> Command {
    Command::GatewayApproved { payment: payment.into(), transaction_key: key.into() }
}

fn declined(payment: &str) -> Command {
    Command::GatewayDeclined { payment: payment.into(), reason: "limit exceeded".into() }
}

fn order_status(f: &Fixture, id: &str) -> String {
    f.m().order_view(id).expect("order").status.as_str().to_string()
}

fn payment(f: &Fixture, id: &str) -> surge_core::view::PaymentView {
    f.m().payment_view(id).expect("payment")
}

#[test]
fn a_card_order_asks_for_an_authorization_and_keeps_only_the_last_four_digits() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 3));
    let events = card_order(&mut f, 1, pay(PaymentMethod::Card));
    let requested = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::PaymentRequested(p) => Some(p.clone()),
            _ => None,
        })
        .expect("payment requested");
    let card = requested.card.expect("card");
    assert_eq!((&*card.number, &*card.kind), ("************1451", "SAMSUNG"), "the number is masked in the log");
    let r = one_request(&events);
    assert_eq!((r.op, &*r.key, r.amount, r.payment, r.order), (GatewayOp::Authorize, "authorize", 1_000, 1, 1));
    assert_eq!(r.card.as_ref().map(|c| (&*c.sealed, &*c.kind)), Some((SEALED, "SAMSUNG")));
    assert!(events.iter().all(|e| e.aggregate().is_some() || !matches!(e.body, EventBody::PaymentRequested(_))));
    assert!(events.iter().any(|e| matches!(e.body, EventBody::GatewayRequested(_)) && e.aggregate().is_none()));
    assert_eq!(order_status(&f, "ord_1"), "pending_payment");
    assert_eq!(f.stock("sku"), (3, 2, 1, 0));
    let p = payment(&f, "pay_1");
    assert_eq!((p.status.as_str(), p.card.map(|c| c.last4)), ("pending", Some("1451".to_string())));

    // A host that did not seal the card is refused before anything is logged.
    let mut unsealed = pay(PaymentMethod::Card);
    if let Some(card) = unsealed.card.as_mut() {
        card.sealed = Box::new([]);
    }
    let refused = f.try_(Command::CreateOrder {
        customer: "c".into(),
        source: OrderSource::Lines(lines(&[("sku", 1)])),
        payment: unsealed,
        queue_token: None,
    });
    assert_eq!(refused.unwrap_err().code(), "invalid_request");
}

#[test]
fn approval_with_automatic_capture_pays_the_order_and_posts_authorize_then_capture() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 3));
    card_order(&mut f, 1, pay(PaymentMethod::Card));
    f.run(accepted("pay_1", TX));
    assert_eq!(payment(&f, "pay_1").transaction_key.as_deref(), Some(TX));
    assert_eq!(f.try_(accepted("pay_1", "another")).unwrap_err(), CoreError::InvalidState { status: "submitted" });
    assert_eq!(f.try_(approved("pay_1", "another")).unwrap_err().code(), "invalid_request");

    let events = f.events(approved("pay_1", TX));
    assert!(requests(&events).is_empty(), "the gateway captured on approval: no capture call");
    let p = payment(&f, "pay_1");
    assert_eq!((p.status.as_str(), p.captured), ("captured", 1_000));
    assert_eq!(order_status(&f, "ord_1"), "paid");
    assert_eq!(f.stock("sku"), (3, 2, 0, 1));
    assert_eq!(f.account("gateway:clearing"), (1_000, 0));
    assert_eq!(f.account("gateway:authorized"), (1_000, 1_000));
    assert_eq!(f.account("sales:revenue"), (0, 1_000));

    // A repeated callback or look-up changes nothing.
    assert!(f.events(approved("pay_1", TX)).is_empty());
    // A gateway that declines what it approved is refused: the approval stands.
    assert_eq!(f.try_(declined("pay_1")).unwrap_err(), CoreError::InvalidState { status: "captured" });
}

#[test]
fn manual_capture_once_partially_then_several_refunds_each_with_its_own_key() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 3));
    card_order(&mut f, 1, manual_card());
    f.run(accepted("pay_1", TX));
    f.run(approved("pay_1", TX));
    assert_eq!(payment(&f, "pay_1").status.as_str(), "authorized");
    assert_eq!(order_status(&f, "ord_1"), "paid");
    assert_eq!(f.account("gateway:clearing"), (1_000, 0), "an authorization is owed by the gateway");
    assert_eq!(f.account("gateway:authorized"), (0, 1_000));

    let capture = |amount| Command::CapturePayment { payment: "pay_1".into(), amount };
    assert_eq!(f.try_(capture(Some(1_001))).unwrap_err().code(), "invalid_request");
    let r = one_request(&f.events(capture(Some(600))));
    assert_eq!((r.op, &*r.key, r.amount), (GatewayOp::Capture, "capture", 600));
    assert_eq!((r.transaction_key.as_deref(), r.gateway.as_deref()), (Some(TX), Some("127.0.0.1:9300")));
    assert_eq!(f.account("gateway:authorized"), (1_000, 1_000), "the rest of the authorization is released");
    assert_eq!(f.account("gateway:clearing"), (1_000, 400));
    assert_eq!(f.try_(capture(Some(400))).unwrap_err(), CoreError::InvalidState { status: "captured" });

    let refund = |amount| Command::RefundPayment { payment: "pay_1".into(), amount };
    let keys: Vec<(String, u64)> = [Some(200), Some(300), None]
        .into_iter()
        .map(|amount| {
            let r = one_request(&f.events(refund(amount)));
            assert_eq!(r.op, GatewayOp::Refund);
            (r.key.to_string(), r.amount)
        })
        .collect();
    assert_eq!(keys, [("refund:0".into(), 200), ("refund:200".into(), 300), ("refund:500".into(), 100)]);
    assert_eq!(payment(&f, "pay_1").status.as_str(), "refunded");
    assert_eq!(order_status(&f, "ord_1"), "refunded");
    assert_eq!(f.account("gateway:clearing"), (1_000, 1_000));
    assert_eq!(f.account("refunds"), (600, 0));
}

#[test]
fn a_declined_card_reopens_the_order_with_its_stock_held_and_it_can_be_paid_again() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 2));
    f.run(credit("c", 5_000));
    card_order(&mut f, 1, pay(PaymentMethod::Card));
    f.now += 60_000;
    let events = f.events(declined("pay_1"));
    assert!(requests(&events).is_empty(), "a decline leaves nothing to undo at the gateway");
    let p = payment(&f, "pay_1");
    assert_eq!((p.status.as_str(), p.failure_reason.as_deref()), ("failed", Some("limit exceeded")));
    let o = f.m().order_view("ord_1").expect("order");
    assert_eq!((o.status.as_str(), o.expires_at_ms), ("awaiting_payment", Some(T0 + 15 * 60_000)));
    assert_eq!(f.stock("sku"), (2, 1, 1, 0), "still held for the customer");
    assert!(f.events(declined("pay_1")).is_empty(), "a repeated decline changes nothing");

    // Another card, declined too, then points.
    f.run(Command::PayOrder { order: "ord_1".into(), payment: pay(PaymentMethod::Card) });
    assert_eq!(order_status(&f, "ord_1"), "pending_payment");
    f.run(declined("pay_2"));
    let o = as_order(f.run(Command::PayOrder { order: "ord_1".into(), payment: pay(PaymentMethod::Points) }));
    assert_eq!((o.status.as_str(), o.payment.map(|p| p.id.to_string())), ("paid", Some("pay_3".into())));
    assert_eq!(f.stock("sku"), (2, 1, 0, 1));
    assert_eq!(payment(&f, "pay_1").status.as_str(), "failed", "earlier attempts stay as they were");
    let again = Command::PayOrder { order: "ord_1".into(), payment: pay(PaymentMethod::Points) };
    assert_eq!(f.try_(again).unwrap_err(), CoreError::InvalidState { status: "paid" });
}

#[test]
fn a_reopened_order_expires_at_the_end_of_its_window_and_one_failing_after_it_expires_at_once() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 2));
    card_order(&mut f, 1, pay(PaymentMethod::Card));
    card_order(&mut f, 1, pay(PaymentMethod::Card));
    f.run(declined("pay_1"));
    f.tick(15 * 60_000);
    assert_eq!(order_status(&f, "ord_1"), "expired");
    assert_eq!(order_status(&f, "ord_2"), "pending_payment", "a pending card payment does not expire by time");
    f.run(declined("pay_2"));
    assert_eq!(order_status(&f, "ord_2"), "expired");
    assert_eq!(f.stock("sku"), (2, 2, 0, 0));
    let late = Command::PayOrder { order: "ord_2".into(), payment: pay(PaymentMethod::Card) };
    assert_eq!(f.try_(late).unwrap_err(), CoreError::InvalidState { status: "expired" });
}

#[test]
fn giving_up_voids_whatever_the_gateway_may_hold_and_a_late_approval_is_voided_not_kept() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 1));
    card_order(&mut f, 1, pay(PaymentMethod::Card));
    let gave_up = Command::GatewayGaveUp { payment: "pay_1".into(), reason: "no gateway answered".into() };
    let r = one_request(&f.events(gave_up.clone()));
    assert_eq!((r.op, &*r.key, r.transaction_key.as_deref()), (GatewayOp::Void, "void", None));
    assert_eq!(payment(&f, "pay_1").status.as_str(), "failed");
    assert_eq!(order_status(&f, "ord_1"), "awaiting_payment");
    assert!(f.events(gave_up).is_empty());

    // The request had reached the gateway after all, and it approved.
    let r = one_request(&f.events(approved("pay_1", TX)));
    assert_eq!((r.op, r.transaction_key.as_deref()), (GatewayOp::Void, Some(TX)));
    assert_eq!(payment(&f, "pay_1").transaction_key.as_deref(), Some(TX));
    assert_eq!(payment(&f, "pay_1").status.as_str(), "failed", "a late approval never pays");
    assert!(f.events(approved("pay_1", TX)).is_empty(), "its void is asked for once");
    assert_eq!(f.account("gateway:clearing"), (0, 0));
}

#[test]
fn cancelling_voids_a_pending_or_authorized_card_and_refunds_a_captured_one() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 3));
    // Pending: voided, and the gateway is told even before a transaction is known.
    card_order(&mut f, 1, pay(PaymentMethod::Card));
    let r = one_request(&f.events(Command::CancelOrder { order: "ord_1".into() }));
    assert_eq!((r.op, r.transaction_key.as_deref()), (GatewayOp::Void, None));
    assert_eq!(payment(&f, "pay_1").status.as_str(), "voided");
    // Its approval arriving afterwards is voided at the gateway, never kept.
    assert_eq!(one_request(&f.events(approved("pay_1", TX))).op, GatewayOp::Void);
    assert_eq!(order_status(&f, "ord_1"), "cancelled");

    // Authorized (manual capture): voided, the authorization released.
    card_order(&mut f, 1, manual_card());
    f.run(accepted("pay_2", "tx-2"));
    f.run(approved("pay_2", "tx-2"));
    let r = one_request(&f.events(Command::VoidPayment { payment: "pay_2".into() }));
    assert_eq!((r.op, r.transaction_key.as_deref(), r.amount), (GatewayOp::Void, Some("tx-2"), 1_000));
    assert_eq!(payment(&f, "pay_2").status.as_str(), "voided");
    assert_eq!(f.account("gateway:authorized"), (1_000, 1_000));

    // Captured: refunded in full.
    card_order(&mut f, 1, pay(PaymentMethod::Card));
    f.run(approved("pay_3", "tx-3"));
    let r = one_request(&f.events(Command::CancelOrder { order: "ord_3".into() }));
    assert_eq!((r.op, &*r.key, r.amount), (GatewayOp::Refund, "refund:0", 1_000));
    assert_eq!(payment(&f, "pay_3").status.as_str(), "refunded");
    assert_eq!(f.stock("sku"), (3, 3, 0, 0));
    assert_eq!(f.account("gateway:clearing"), (2_000, 2_000));
}

#[test]
fn operations_that_keep_failing_become_dead_letters_that_an_operator_retries() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 3));
    card_order(&mut f, 1, manual_card());
    f.run(accepted("pay_1", TX));
    f.run(approved("pay_1", TX));
    f.run(Command::CapturePayment { payment: "pay_1".into(), amount: None });
    let failed = Command::GatewayOpFailed {
        payment: "pay_1".into(),
        op: GatewayOp::Capture,
        key: "capture".into(),
        amount: 1_000,
        reason: "gateway answered 500".into(),
    };
    f.run(failed.clone());
    let dl = f.m().dead_letter_view("dl_1").expect("dead letter");
    assert_eq!((dl.status.as_str(), dl.attempts, dl.amount, dl.op), ("open", 1, 1_000, GatewayOp::Capture));
    assert!(f.events(failed.clone()).is_empty(), "a repeated report opens nothing new");
    assert!(f.m().dead_letter_view("dl_2").is_none());

    let retry = Command::RetryDeadLetter { dead_letter: "dl_1".into() };
    let r = one_request(&f.events(retry.clone()));
    assert_eq!(
        (r.op, &*r.key, r.retry_of, r.transaction_key.as_deref()),
        (GatewayOp::Capture, "capture", Some(1), Some(TX))
    );
    assert_eq!(f.try_(retry.clone()).unwrap_err(), CoreError::InvalidState { status: "retried" });
    // The retry failed too: the same dead letter opens again.
    f.run(failed.clone());
    let dl = f.m().dead_letter_view("dl_1").expect("dead letter");
    assert_eq!((dl.status.as_str(), dl.attempts), ("open", 2));
    f.run(retry);
    f.run(Command::ResolveDeadLetter { dead_letter: 1 });
    assert_eq!(f.m().dead_letter_view("dl_1").expect("dead letter").status.as_str(), "resolved");
    assert!(f.events(failed).is_empty(), "a late failure report of a resolved operation changes nothing");
    assert_eq!(f.m().dead_letter_views(None, 10).len(), 1);

    let authorize = Command::GatewayOpFailed {
        payment: "pay_1".into(),
        op: GatewayOp::Authorize,
        key: "authorize".into(),
        amount: 1_000,
        reason: "x".into(),
    };
    assert_eq!(f.try_(authorize).unwrap_err().code(), "invalid_request");
    assert_eq!(f.try_(Command::RetryDeadLetter { dead_letter: "dl_9".into() }).unwrap_err().code(), "not_found");
}

#[test]
fn gateway_reports_about_points_payments_or_unknown_payments_are_refused() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 3));
    f.run(credit("c", 5_000));
    f.run(order("c", &[("sku", 1)], PaymentMethod::Points));
    assert_eq!(f.try_(approved("pay_1", TX)).unwrap_err(), CoreError::InvalidState { status: "captured" });
    assert_eq!(f.try_(accepted("pay_9", TX)).unwrap_err().code(), "not_found");
    assert_eq!(f.try_(accepted("pay_1", "bad key")).unwrap_err().code(), "invalid_request");
}
