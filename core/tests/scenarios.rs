//! One test per behaviour the contract names, through `Shard::execute` and `tick`.

mod common;

use common::*;

#[test]
fn order_paid_with_points_moves_stock_points_and_ledger() {
    let mut f = Fixture::new();
    f.run(item("sku-1", 1_000, 5));
    f.run(credit("c-1", 10_000));
    let o = as_order(f.run(order("c-1", &[("sku-1", 2)], PaymentMethod::Points)));
    assert_eq!((o.id.to_string().as_str(), o.total), ("ord_1", 2_000));
    assert_eq!(o.status.as_str(), "paid");
    let p = o.payment.expect("payment");
    assert_eq!((p.status.as_str(), p.captured), ("captured", 2_000));
    assert_eq!(f.stock("sku-1"), (5, 3, 0, 2));
    assert_eq!(f.balance("c-1"), 8_000);
    assert_eq!(f.account("customer:c-1:points"), (2_000, 10_000));
    assert_eq!(f.account("sales:revenue"), (0, 2_000));
    assert_eq!(f.account("points:issued"), (10_000, 0));
    let tb = f.m().trial_balance();
    assert!(tb.balanced);
    assert_eq!((tb.total_debits, tb.accounts), (12_000, 7));
}

#[test]
fn insufficient_points_changes_nothing() {
    let mut f = Fixture::new();
    f.run(item("sku-1", 1_000, 5));
    f.run(credit("c-1", 1_500));
    let err = f.try_(order("c-1", &[("sku-1", 2)], PaymentMethod::Points)).unwrap_err();
    assert_eq!(err, CoreError::InsufficientPoints { balance: 1_500, required: 2_000 });
    assert_eq!(err.code(), "insufficient_points");
    assert_eq!(f.stock("sku-1"), (5, 5, 0, 0));
    assert!(f.m().order_view("ord_1").is_none());
}

#[test]
fn insufficient_stock_names_sku_and_available_and_holds_are_all_or_nothing() {
    let mut f = Fixture::new();
    f.run(item("a", 10, 5));
    f.run(item("b", 10, 1));
    let err = f
        .try_(Command::CreateHold {
            customer: "c".into(),
            lines: lines(&[("a", 2), ("b", 2)]),
            ttl_s: Some(60),
            queue_token: None,
        })
        .unwrap_err();
    assert_eq!(err, CoreError::InsufficientStock { sku: "b".into(), available: 1 });
    assert_eq!(f.stock("a"), (5, 5, 0, 0));
    let h = as_hold(f.run(Command::CreateHold {
        customer: "c".into(),
        lines: lines(&[("a", 2), ("b", 1)]),
        ttl_s: Some(60),
        queue_token: None,
    }));
    assert_eq!((h.id.to_string().as_str(), h.status.as_str(), h.expires_at_ms), ("hold_1", "held", T0 + 60_000));
    assert_eq!(f.stock("a"), (5, 3, 2, 0));
    assert_eq!(f.stock("b"), (1, 0, 1, 0));
}

#[test]
fn holds_release_and_expire_within_a_tick_and_expired_holds_do_not_convert() {
    let mut f = Fixture::new();
    f.run(item("seat-1", 50_000, 1));
    f.run(item("seat-2", 50_000, 1));
    let hold = |sku: &str| Command::CreateHold {
        customer: "c".into(),
        lines: lines(&[(sku, 1)]),
        ttl_s: Some(300),
        queue_token: None,
    };
    f.run(hold("seat-1"));
    f.run(hold("seat-2"));
    let released = as_hold(f.run(Command::ReleaseHold { hold: "hold_1".into() }));
    assert_eq!(released.status.as_str(), "released");
    assert_eq!(f.stock("seat-1"), (1, 1, 0, 0));
    assert_eq!(
        f.try_(Command::ReleaseHold { hold: "hold_1".into() }).unwrap_err(),
        CoreError::InvalidState { status: "released" }
    );

    f.tick(299_999);
    assert_eq!(f.stock("seat-2"), (1, 0, 1, 0), "not yet due");
    // Due but not yet ticked: converting is refused already.
    f.now += 1;
    let convert = Command::CreateOrder {
        customer: "c".into(),
        source: OrderSource::Hold("hold_2".into()),
        payment: pay(PaymentMethod::None),
        queue_token: None,
    };
    assert_eq!(f.try_(convert.clone()).unwrap_err(), CoreError::InvalidState { status: "expired" });
    f.tick(0);
    assert_eq!(f.m().hold_view("hold_2").expect("hold").status.as_str(), "expired");
    assert_eq!(f.stock("seat-2"), (1, 1, 0, 0));
    assert_eq!(f.try_(convert).unwrap_err(), CoreError::InvalidState { status: "expired" });
}

#[test]
fn order_from_hold_converts_it_and_keeps_the_seat() {
    let mut f = Fixture::new();
    f.run(item("seat", 70_000, 1));
    f.run(credit("fan", 70_000));
    f.run(Command::CreateHold { customer: "fan".into(), lines: lines(&[("seat", 1)]), ttl_s: None, queue_token: None });
    let other = Command::CreateOrder {
        customer: "thief".into(),
        source: OrderSource::Hold("hold_1".into()),
        payment: pay(PaymentMethod::Points),
        queue_token: None,
    };
    assert_eq!(f.try_(other).unwrap_err().code(), "invalid_request");
    let o = as_order(f.run(Command::CreateOrder {
        customer: "fan".into(),
        source: OrderSource::Hold("hold_1".into()),
        payment: pay(PaymentMethod::Points),
        queue_token: None,
    }));
    assert_eq!(
        (o.status.as_str(), o.hold_id.map(|h| h.to_string()).as_deref(), o.total),
        ("paid", Some("hold_1"), 70_000)
    );
    let h = f.m().hold_view("hold_1").expect("hold");
    assert_eq!((h.status.as_str(), h.order_id.map(|o| o.to_string()).as_deref()), ("converted", Some("ord_1")));
    assert_eq!(f.stock("seat"), (1, 0, 0, 1));
    f.tick(3_600_000);
    assert_eq!(f.stock("seat"), (1, 0, 0, 1), "a converted hold never expires");
}

fn manual_points() -> PaymentSpec {
    PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Manual }
}

#[test]
fn points_with_manual_capture_authorize_then_a_partial_capture_gives_the_rest_back() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 3));
    f.run(credit("c", 5_000));
    f.run(Command::CreateOrder {
        customer: "c".into(),
        source: OrderSource::Lines(lines(&[("sku", 2)])),
        payment: PaymentSpec { method: PaymentMethod::None, card: None, capture: CaptureMode::Automatic },
        queue_token: None,
    });
    let o = as_order(f.run(Command::PayOrder { order: "ord_1".into(), payment: manual_points() }));
    assert_eq!(o.status.as_str(), "paid", "an authorized payment pays the order, as a card's does");
    let p = o.payment.expect("payment");
    assert_eq!((p.status.as_str(), p.amount, p.captured), ("authorized", 2_000, 0));
    assert_eq!(f.stock("sku"), (3, 1, 0, 2));
    // The authorized points left the balance: they cannot pay for anything else.
    assert_eq!(f.balance("c"), 3_000);
    assert_eq!(f.account("customer:c:points"), (2_000, 5_000));
    assert_eq!(f.account("points:authorized"), (0, 2_000));
    assert_eq!(f.account("sales:revenue"), (0, 0), "nothing is revenue before the capture");

    let capture = |amount| Command::CapturePayment { payment: "pay_1".into(), amount };
    assert_eq!(f.try_(capture(Some(2_001))).unwrap_err().code(), "invalid_request");
    let p = as_payment(f.run(capture(Some(1_500))));
    assert_eq!((p.status.as_str(), p.captured), ("captured", 1_500));
    assert_eq!(f.balance("c"), 3_500, "the 500 not captured went back");
    assert_eq!(f.account("points:authorized"), (2_000, 2_000));
    assert_eq!(f.account("sales:revenue"), (0, 1_500));
    assert_eq!(f.try_(capture(Some(500))).unwrap_err(), CoreError::InvalidState { status: "captured" });

    let p = as_payment(f.run(Command::RefundPayment { payment: "pay_1".into(), amount: None }));
    assert_eq!((p.status.as_str(), p.refunded), ("refunded", 1_500));
    assert_eq!(f.balance("c"), 5_000);
    assert!(f.m().trial_balance().balanced);
}

#[test]
fn points_with_manual_capture_captured_in_full_or_voided_by_a_cancel() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 3));
    f.run(credit("c", 5_000));
    let create = |f: &mut Fixture| {
        as_order(f.run(Command::CreateOrder {
            customer: "c".into(),
            source: OrderSource::Lines(lines(&[("sku", 1)])),
            payment: manual_points(),
            queue_token: None,
        }))
    };
    let o = create(&mut f);
    assert_eq!((o.status.as_str(), o.payment.expect("payment").status.as_str()), ("paid", "authorized"));
    let p = as_payment(f.run(Command::CapturePayment { payment: "pay_1".into(), amount: None }));
    assert_eq!((p.status.as_str(), p.captured), ("captured", 1_000));
    assert_eq!(f.balance("c"), 4_000);

    create(&mut f);
    assert_eq!(f.balance("c"), 3_000);
    let o = as_order(f.run(Command::CancelOrder { order: "ord_2".into() }));
    assert_eq!((o.status.as_str(), o.payment.expect("payment").status.as_str()), ("cancelled", "voided"));
    assert_eq!(f.balance("c"), 4_000, "a voided authorization gives the points back");
    assert_eq!(f.account("points:authorized"), (2_000, 2_000));
    assert_eq!(f.stock("sku"), (3, 2, 0, 1));
    let late = Command::CapturePayment { payment: "pay_2".into(), amount: None };
    assert_eq!(f.try_(late).unwrap_err(), CoreError::InvalidState { status: "voided" });

    // Authorizing needs the whole balance, as capturing does.
    f.run(item("dear", 10_000, 1));
    let too_dear = Command::CreateOrder {
        customer: "c".into(),
        source: OrderSource::Lines(lines(&[("dear", 1)])),
        payment: manual_points(),
        queue_token: None,
    };
    assert_eq!(f.try_(too_dear).unwrap_err().code(), "insufficient_points");
}

#[test]
fn cancel_refunds_points_and_returns_stock() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 4));
    f.run(credit("c", 5_000));
    f.run(order("c", &[("sku", 2)], PaymentMethod::Points));
    let o = as_order(f.run(Command::CancelOrder { order: "ord_1".into() }));
    assert_eq!(o.status.as_str(), "cancelled");
    assert_eq!(o.payment.map(|p| p.status.as_str()), Some("refunded"));
    assert_eq!(f.balance("c"), 5_000);
    assert_eq!(f.stock("sku"), (4, 4, 0, 0));
    assert_eq!(
        f.try_(Command::CancelOrder { order: "ord_1".into() }).unwrap_err(),
        CoreError::InvalidState { status: "cancelled" }
    );
}

#[test]
fn unpaid_orders_expire_after_fifteen_minutes_unless_paid() {
    let mut f = Fixture::new();
    f.run(item("sku", 1_000, 2));
    f.run(credit("c", 1_000));
    let o = as_order(f.run(order("c", &[("sku", 1)], PaymentMethod::None)));
    assert_eq!((o.status.as_str(), o.expires_at_ms), ("awaiting_payment", Some(T0 + 15 * 60_000)));
    f.run(order("c", &[("sku", 1)], PaymentMethod::None));
    let o = as_order(f.run(Command::PayOrder { order: "ord_2".into(), payment: pay(PaymentMethod::Points) }));
    assert_eq!((o.status.as_str(), o.expires_at_ms), ("paid", None));
    f.tick(15 * 60_000);
    assert_eq!(f.m().order_view("ord_1").expect("order").status.as_str(), "expired");
    assert_eq!(f.stock("sku"), (2, 1, 0, 1));
    let late = Command::PayOrder { order: "ord_1".into(), payment: pay(PaymentMethod::Points) };
    assert_eq!(f.try_(late).unwrap_err(), CoreError::InvalidState { status: "expired" });
}

#[test]
fn idempotency_replays_refuses_reuse_reports_in_flight_and_forgets_after_a_day() {
    let mut f = Fixture::new();
    f.run(item("sku", 100, 10));
    f.run(credit("c", 1_000));
    let buy = order("c", &[("sku", 1)], PaymentMethod::Points);
    let first = f.keyed("k1", 1, buy.clone()).expect("first");
    let Outcome::Applied { reply: first_reply, .. } = first else { panic!("not applied") };
    // Not yet durable: a retry must wait.
    assert_eq!(f.keyed("k1", 1, buy.clone()).unwrap_err(), CoreError::IdempotencyKeyInUse);
    let applied = f.shard.applied_events();
    f.shard.mark_durable(applied);
    match f.keyed("k1", 1, buy.clone()) {
        Ok(Outcome::Replayed { reply }) => assert_eq!(reply, first_reply),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.stock("sku"), (10, 9, 0, 1), "the replay bought nothing");
    assert_eq!(f.keyed("k1", 2, buy.clone()).unwrap_err(), CoreError::IdempotencyKeyReused);
    // A refused request stores nothing: the key stays free.
    assert_eq!(
        f.keyed("k2", 3, order("c", &[("sku", 11)], PaymentMethod::Points)).unwrap_err().code(),
        "insufficient_stock"
    );
    assert!(matches!(f.keyed("k2", 4, buy.clone()), Ok(Outcome::Applied { .. })));
    assert_eq!(f.keyed("", 1, buy.clone()).unwrap_err().code(), "invalid_request");
    // Kept 24 h, then forgotten.
    let applied = f.shard.applied_events();
    f.shard.mark_durable(applied);
    f.tick(24 * 3_600_000 - 1);
    assert!(matches!(f.keyed("k1", 1, buy.clone()), Ok(Outcome::Replayed { .. })));
    f.tick(1);
    assert!(f.m().idempotency.get("k1").is_none());
}

#[test]
fn waiting_room_activates_in_arrival_order_and_gates_queued_items() {
    let mut f = Fixture::new();
    f.run(Command::PutQueue { queue: "drop".into(), max_active: 2, active_ttl_s: 60 });
    f.run(Command::PutItem(ItemSpec {
        sku: "hot".into(),
        name: "hot".into(),
        price: 1,
        stock: 10,
        queue: Some("drop".into()),
    }));
    let mut tokens = Vec::new();
    for (i, customer) in ["a", "b", "c", "d"].into_iter().enumerate() {
        match f.run(Command::IssueToken { queue: "drop".into(), customer: customer.into(), nonce: 1_000 + i as u64 }) {
            Reply::Token(t) => tokens.push(t),
            other => panic!("{other:?}"),
        }
    }
    let summary: Vec<_> = tokens.iter().map(|t| (t.status.as_str(), t.position)).collect();
    assert_eq!(summary, [("active", 0), ("active", 0), ("waiting", 1), ("waiting", 2)]);
    let hold = |token: Option<&str>| Command::CreateHold {
        customer: "a".into(),
        lines: lines(&[("hot", 1)]),
        ttl_s: None,
        queue_token: token.map(str::to_string),
    };
    let required = CoreError::QueueTokenRequired { queue: "drop".into() };
    assert_eq!(f.try_(hold(None)).unwrap_err(), required);
    assert_eq!(f.try_(hold(Some(&tokens[2].token))).unwrap_err(), required, "a waiting token is not enough");
    let forged = tokens[0].token.replace("00000000000003e8", "00000000000003e9");
    assert_eq!(f.try_(hold(Some(&forged))).unwrap_err(), required, "a forged nonce is refused");
    assert!(f.m().token_view("drop", &forged).is_none(), "a forged token shows nothing");
    assert!(f.m().token_view("drop", &tokens[0].token.to_uppercase()).is_none());
    f.run(hold(Some(&tokens[0].token)));

    f.tick(60_000);
    let status = |f: &Fixture, t: &str| {
        let v = f.m().token_view("drop", t).expect("token");
        (v.status.as_str(), v.position)
    };
    assert_eq!(status(&f, &tokens[0].token), ("expired", 0));
    assert_eq!(status(&f, &tokens[2].token), ("active", 0));
    assert_eq!(status(&f, &tokens[3].token), ("active", 0));
    assert_eq!(f.try_(hold(Some(&tokens[0].token))).unwrap_err(), required, "an expired token is refused");
    f.run(hold(Some(&tokens[3].token)));
}

#[test]
fn item_put_updates_but_never_below_held_plus_sold() {
    let mut f = Fixture::new();
    assert!(matches!(f.run(item("sku", 100, 5)), Reply::Item { created: true, .. }));
    f.run(Command::CreateHold { customer: "c".into(), lines: lines(&[("sku", 3)]), ttl_s: None, queue_token: None });
    assert_eq!(
        f.try_(item("sku", 100, 2)).unwrap_err(),
        CoreError::InsufficientStock { sku: "sku".into(), available: 2 }
    );
    assert!(matches!(f.run(item("sku", 150, 4)), Reply::Item { created: false, .. }));
    assert_eq!(f.stock("sku"), (4, 1, 3, 0));
    f.run(Command::Restock { sku: "sku".into(), qty: 6 });
    assert_eq!(f.stock("sku"), (10, 7, 3, 0));
    let bulk = Command::PutItems {
        items: vec![
            ItemSpec { sku: "sku".into(), name: "x".into(), price: 1, stock: 10, queue: None },
            ItemSpec { sku: "new".into(), name: "y".into(), price: 1, stock: 1, queue: None },
        ],
    };
    assert_eq!(f.run(bulk), Reply::Items { created: 1, updated: 1 });
}

#[test]
fn limits_are_invalid_request_naming_the_field() {
    let mut f = Fixture::new();
    f.run(item("sku", 100, 5));
    let field = |f: &mut Fixture, c: Command| match f.try_(c) {
        Err(CoreError::InvalidRequest { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let hold = |l: Vec<LineSpec>, ttl| Command::CreateHold {
        customer: "c".into(),
        lines: l,
        ttl_s: Some(ttl),
        queue_token: None,
    };
    assert_eq!(field(&mut f, hold(lines(&[("sku", 0)]), 60)), "lines.qty");
    assert_eq!(field(&mut f, hold(lines(&[("sku", 10_001)]), 60)), "lines.qty");
    assert_eq!(field(&mut f, hold(lines(&[("sku", 1)]), 0)), "ttl_seconds");
    assert_eq!(field(&mut f, hold(lines(&[("sku", 1)]), 3_601)), "ttl_seconds");
    assert_eq!(field(&mut f, hold(vec![], 60)), "lines");
    let many: Vec<LineSpec> = (0..101).map(|i| LineSpec { sku: format!("s{i}"), qty: 1 }).collect();
    assert_eq!(field(&mut f, hold(many, 60)), "lines");
    assert_eq!(field(&mut f, hold(lines(&[("sku", 1), ("sku", 1)]), 60)), "lines.sku");
    assert_eq!(field(&mut f, item("bad sku", 1, 1)), "sku");
    assert_eq!(field(&mut f, item(&"x".repeat(65), 1, 1)), "sku");
    assert_eq!(field(&mut f, item("ok", 1_000_000_000_000_001, 1)), "price");
    assert_eq!(field(&mut f, credit("c", 1_000_000_000_000_001)), "amount");
    assert_eq!(field(&mut f, Command::PutQueue { queue: "q".into(), max_active: 0, active_ttl_s: 1 }), "max_active");
    let no_card = PaymentSpec { method: PaymentMethod::Card, card: None, capture: CaptureMode::Automatic };
    let c = Command::CreateOrder {
        customer: "c".into(),
        source: OrderSource::Lines(lines(&[("sku", 1)])),
        payment: no_card,
        queue_token: None,
    };
    assert_eq!(field(&mut f, c), "payment.card");
    let too_much = Command::PutItem(ItemSpec {
        sku: "gold".into(),
        name: "g".into(),
        price: 1_000_000_000_000_000,
        stock: 10,
        queue: None,
    });
    f.run(too_much);
    assert_eq!(field(&mut f, order("c", &[("gold", 2)], PaymentMethod::None)), "lines");
}

#[test]
fn merchants_are_isolated_and_unknown_ids_are_not_found() {
    let mut f = Fixture::new();
    f.run(item("sku", 100, 5));
    f.run(order("c", &[("sku", 1)], PaymentMethod::None));
    assert!(f.shard.merchant("m-2").expect("m-2").order_view("ord_1").is_none());
    let cancel = Command::CancelOrder { order: "ord_1".into() };
    assert_eq!(f.try_as("m-2", cancel).unwrap_err(), CoreError::NotFound { what: "order" });
    assert_eq!(f.try_(order("c", &[("nope", 1)], PaymentMethod::None)).unwrap_err().code(), "not_found");
    for id in ["ord_0", "ord_01", "ord_2", "pay_1", "x"] {
        assert_eq!(f.try_(Command::CancelOrder { order: id.into() }).unwrap_err().code(), "not_found", "{id}");
    }
    let dup = Command::CreateMerchant { name: "again".into(), currency: "KRW".into(), api_key_hash: [0; 32] };
    assert_eq!(f.try_as("m-1", dup).unwrap_err(), CoreError::InvalidState { status: "active" });
    let unknown = f.try_as("m-9", item("sku", 1, 1)).unwrap_err();
    assert_eq!(unknown, CoreError::NotFound { what: "merchant" });
}

#[test]
fn every_error_maps_to_one_contract_code() {
    let errors = [
        (CoreError::InvalidRequest { field: "f", reason: "r".into() }, "invalid_request"),
        (CoreError::NotFound { what: "order" }, "not_found"),
        (CoreError::InsufficientStock { sku: "s".into(), available: 0 }, "insufficient_stock"),
        (CoreError::InvalidState { status: "paid" }, "invalid_state"),
        (CoreError::IdempotencyKeyInUse, "idempotency_key_in_use"),
        (CoreError::IdempotencyKeyReused, "idempotency_key_reused"),
        (CoreError::InsufficientPoints { balance: 0, required: 1 }, "insufficient_points"),
        (CoreError::QueueTokenRequired { queue: "q".into() }, "queue_token_required"),
    ];
    let codes: std::collections::HashSet<_> = errors.iter().map(|(e, _)| e.code()).collect();
    assert_eq!(codes.len(), errors.len(), "two errors share a code");
    for (error, code) in errors {
        assert_eq!(error.code(), code);
    }
}

#[test]
fn rotating_an_api_key_replaces_its_hash_through_one_logged_event() {
    let mut f = Fixture::new();
    let mut before = f.shard.clone();
    let events = f.events(Command::RotateApiKey { api_key_hash: [9; 32] });
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].type_name(), "merchant.api_key_rotated");
    assert_eq!(f.m().api_key_hash, [9; 32]);
    assert_eq!(f.shard.merchant("m-2").expect("m-2").api_key_hash, [7; 32], "other merchants keep theirs");
    // What leaves the process says that it happened, nothing derived from the key.
    let published = serde_json::to_string(&events[0].envelope(1, 0)).expect("json");
    assert!(!published.contains("0909") && published.contains("\"data\":{}"), "{published}");
    // Replaying the event on a copy from before it, and a snapshot, give the same state.
    for event in &events {
        before.apply(event).expect("apply");
    }
    assert_eq!(before.digest(), f.shard.digest());
    let restored = Shard::restore(&f.shard.snapshot()).expect("restore");
    assert_eq!(restored.digest(), f.shard.digest());
    assert_eq!(restored.merchant("m-1").expect("m-1").api_key_hash, [9; 32]);
    let unknown = f.try_as("m-9", Command::RotateApiKey { api_key_hash: [1; 32] }).unwrap_err();
    assert_eq!(unknown, CoreError::NotFound { what: "merchant" });
}
