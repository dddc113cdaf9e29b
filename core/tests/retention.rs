//! Retention: settled aggregates older than `Settings::retain_settled_ms` are archived by the
//! tick and leave memory; live work stays; replay and snapshots agree with the live run.

use surge_core::chunked::CHUNK;
use surge_core::command::*;
use surge_core::limits::IDEMPOTENCY_TTL_MS;
use surge_core::view::Reply;
use surge_core::{CoreError, Event, Outcome, Settings, Shard, UnixMs};

const T0: UnixMs = 1_763_700_000_000;
const HOUR: u64 = 60 * 60 * 1_000;
const RETAIN: u64 = 2 * IDEMPOTENCY_TTL_MS;

/// One shard with its log (every event it applied) and a clock.
struct Run {
    shard: Shard,
    log: Vec<Event>,
    now: UnixMs,
}

impl Run {
    fn new() -> Run {
        let mut shard = Shard::new();
        shard.set_settings(Settings::new(IDEMPOTENCY_TTL_MS, RETAIN).expect("settings"));
        let mut run = Run { shard, log: Vec::new(), now: T0 };
        run.ok(Command::CreateMerchant { name: "shop".into(), currency: "KRW".into(), api_key_hash: [7; 32] });
        run
    }

    fn exec(&mut self, command: Command, key: Option<&str>) -> Result<Reply, CoreError> {
        let idempotency = key.map(|k| Idempotency { key: k.into(), fingerprint: [1; 16] });
        let request = Request { merchant: "m-1".into(), idempotency, command };
        let before = self.shard.digest();
        let result = self.shard.execute(&request, self.now);
        let applied = self.shard.applied_events();
        self.shard.mark_durable(applied);
        self.shard.check_invariants().expect("invariants");
        match result {
            Ok(Outcome::Applied { events, reply }) => {
                self.log.extend(events);
                Ok(reply)
            }
            Ok(Outcome::Replayed { reply }) => Ok(reply),
            Err(e) => {
                assert_eq!(before, self.shard.digest(), "a refused command changed state");
                Err(e)
            }
        }
    }

    fn ok(&mut self, command: Command) -> Reply {
        let shown = format!("{command:?}");
        self.exec(command, None).unwrap_or_else(|e| panic!("{shown}: {e}"))
    }

    fn tick(&mut self, advance_ms: u64) -> Vec<Event> {
        self.now += advance_ms;
        let events = self.shard.tick(self.now);
        self.log.extend(events.iter().cloned());
        let applied = self.shard.applied_events();
        self.shard.mark_durable(applied);
        self.shard.check_invariants().expect("invariants");
        events
    }

    fn m(&self) -> &surge_core::state::Merchant {
        self.shard.merchant("m-1").expect("m-1")
    }
}

fn item(sku: &str, price: u64, stock: u64) -> Command {
    Command::PutItem(ItemSpec { sku: sku.into(), name: sku.into(), price, stock, queue: None })
}

fn order(customer: &str, sku: &str, method: PaymentMethod, capture: CaptureMode) -> Command {
    Command::CreateOrder {
        customer: customer.into(),
        source: OrderSource::Lines(vec![LineSpec { sku: sku.into(), qty: 1 }]),
        payment: PaymentSpec { method, card: None, capture },
        queue_token: None,
    }
}

fn points_order(customer: &str, sku: &str) -> Command {
    order(customer, sku, PaymentMethod::Points, CaptureMode::Automatic)
}

fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::type_name).collect()
}

/// Paid, refunded, cancelled, expired, converted, released, authorized, tokens.
fn mixed_run() -> Run {
    let mut r = Run::new();
    r.ok(item("a", 100, 50));
    r.ok(Command::CreditPoints { customer: "c".into(), amount: 10_000, reason: "t".into() });
    r.ok(points_order("c", "a")); // ord_1 paid, pay_1
    r.ok(points_order("c", "a")); // ord_2 paid then refunded, pay_2
    r.ok(Command::RefundPayment { payment: "pay_2".into(), amount: None });
    r.ok(points_order("c", "a")); // ord_3 cancelled, pay_3
    r.ok(Command::CancelOrder { order: "ord_3".into() });
    r.ok(order("c", "a", PaymentMethod::None, CaptureMode::Automatic)); // ord_4 expires unpaid
    let hold = |ttl_s| Command::CreateHold {
        customer: "c".into(),
        lines: vec![LineSpec { sku: "a".into(), qty: 1 }],
        ttl_s: Some(ttl_s),
        queue_token: None,
    };
    r.ok(hold(600)); // hold_1 converted into ord_5
    r.ok(Command::CreateOrder {
        customer: "c".into(),
        source: OrderSource::Hold("hold_1".into()),
        payment: PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Automatic },
        queue_token: None,
    });
    r.ok(hold(600)); // hold_2 released
    r.ok(Command::ReleaseHold { hold: "hold_2".into() });
    r.ok(order("c", "a", PaymentMethod::Points, CaptureMode::Manual)); // ord_6 authorized (pay_5): stays
    r.ok(Command::PutQueue { queue: "q".into(), max_active: 1, active_ttl_s: 60 });
    r.ok(Command::IssueToken { queue: "q".into(), customer: "c".into(), nonce: 7 });
    r
}

#[test]
fn settled_aggregates_leave_memory_after_the_retention_and_live_work_stays() {
    let mut r = mixed_run();
    r.tick(HOUR); // ord_4 expires, the token expires
    assert_eq!(r.m().order(4).map(|o| o.status.as_str()), Some("expired"));
    // Just before the retention has passed since the last change: nothing is archived.
    let archived = r.tick(RETAIN - HOUR - 1);
    assert!(types(&archived).iter().all(|t| !t.ends_with("archived")), "{:?}", types(&archived));

    let archived = r.tick(HOUR + 1);
    let t = types(&archived);
    for expected in ["order.archived", "payment.archived", "hold.archived", "queue.token_archived"] {
        assert!(t.contains(&expected), "{expected} missing from {t:?}");
    }
    // An order's archive: its payment and hold first, then the order, one aggregate each.
    let ord5 = archived.iter().position(|e| e.aggregate().is_some_and(|(_, id)| id == "ord_5")).expect("ord_5");
    assert_eq!(t[ord5 - 2..=ord5], ["payment.archived", "hold.archived", "order.archived"]);

    let m = r.m();
    for n in 1..=5 {
        assert!(m.order(n).is_none(), "ord_{n} archived");
        assert_eq!(m.order_archived_at(n), Some(r.now));
    }
    assert!(m.payment(1).is_none() && m.hold(1).is_none() && m.hold(2).is_none());
    // The manual-capture order is paid with an authorized payment: not settled, it stays.
    assert_eq!(m.order(6).map(|o| o.status.as_str()), Some("paid"));
    assert_eq!(m.payment(5).map(|p| p.status.as_str()), Some("authorized"));
    assert_eq!((m.orders.live(), m.payments.live(), m.holds.live()), (1, 1, 0));
    // Items, balances and the books stay as they were.
    let a = m.item_view("a").expect("item");
    assert_eq!((a.stock, a.sold, a.held), (50, 4, 0), "ord_1, ord_2 (refunded), ord_5, ord_6 sold");
    assert_eq!(m.points_view("c").balance, 10_000 - 5 * 100 + 2 * 100, "five paid, two given back");
    assert!(m.trial_balance().balanced);
    assert_eq!(m.order_archived_at(7), None, "never existed");
    // The expired token too; its queue is part of the question, its nonce is gone with it.
    let token = surge_core::ids::token_id(0, 7);
    assert!(m.token_view("q", &token).is_none());
    assert_eq!(m.token_archived_at("q", &token), Some(r.now));
    assert_eq!(m.token_archived_at("other", &token), None, "no such waiting room");
    assert_eq!(m.token_archived_at("q", &surge_core::ids::token_id(1, 7)), None, "never issued");
    assert_eq!(m.token_archived_at("q", "qt_0_7"), None, "not a token string");

    // Reads and commands against archived ids: `archived`, naming when, and nothing changes.
    assert!(m.order_view("ord_1").is_none());
    let at = r.now;
    for command in [
        Command::CancelOrder { order: "ord_1".into() },
        Command::PayOrder {
            order: "ord_4".into(),
            payment: PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Automatic },
        },
    ] {
        assert_eq!(r.exec(command, None), Err(CoreError::Archived { what: "order", archived_at_ms: at }));
    }
    let refund = r.exec(Command::RefundPayment { payment: "pay_1".into(), amount: Some(10) }, None);
    assert_eq!(refund, Err(CoreError::Archived { what: "payment", archived_at_ms: at }));
    assert_eq!(refund.unwrap_err().code(), "archived");
    let release = r.exec(Command::ReleaseHold { hold: "hold_2".into() }, None);
    assert_eq!(release, Err(CoreError::Archived { what: "hold", archived_at_ms: at }));
    // The authorized order is still captured and refunded as usual, and then archived.
    r.ok(Command::CapturePayment { payment: "pay_5".into(), amount: None });
    r.tick(RETAIN);
    assert_eq!(r.m().orders.live(), 0);
    assert_eq!(r.m().item_view("a").map(|a| (a.sold, a.available)), Some((4, 46)));
}

#[test]
fn replay_and_a_snapshot_taken_before_archiving_reach_the_live_state() {
    let mut r = mixed_run();
    r.tick(HOUR);
    let before = r.shard.snapshot();
    let logged_before = r.log.len();
    r.tick(RETAIN);
    r.tick(RETAIN);
    assert!(r.log[logged_before..].iter().any(|e| e.type_name() == "order.archived"));

    let mut restored = Shard::restore(&before).expect("restore");
    for event in &r.log[logged_before..] {
        restored.apply(event).expect("apply after the snapshot");
    }
    assert_eq!(restored.digest(), r.shard.digest(), "snapshot before archiving + log after it");
    let mut replayed = Shard::new();
    for event in &r.log {
        replayed.apply(event).expect("replay");
    }
    assert_eq!(replayed.digest(), r.shard.digest(), "replay from empty");
    // Replay uses no setting: a shard with another retention applies the same events alike.
    let after = Shard::restore(&r.shard.snapshot()).expect("restore after archiving");
    assert_eq!(after.digest(), r.shard.digest());
    assert_eq!(after.merchant("m-1").and_then(|m| m.order_archived_at(1)), r.m().order_archived_at(1));
    assert!(r.shard.snapshot().len() < before.len(), "the snapshot holds less once archived");
}

#[test]
fn an_idempotent_retry_inside_the_window_replays_even_as_the_order_ages() {
    let mut r = Run::new();
    r.ok(item("a", 100, 5));
    r.ok(Command::CreditPoints { customer: "c".into(), amount: 1_000, reason: "t".into() });
    let first = r.exec(points_order("c", "a"), Some("k-1")).expect("first");
    r.tick(IDEMPOTENCY_TTL_MS - 1);
    assert_eq!(r.exec(points_order("c", "a"), Some("k-1")), Ok(first), "replayed inside the window");
    assert_eq!(r.m().orders.live(), 1, "retention >= window: the order is still there");
    r.tick(RETAIN);
    assert_eq!(r.m().orders.live(), 0);
}

#[test]
fn a_retention_shorter_than_the_idempotency_window_is_refused() {
    assert!(Settings::new(IDEMPOTENCY_TTL_MS, IDEMPOTENCY_TTL_MS - 1).is_err());
    assert!(Settings::new(60_000, 60_000).is_ok());
    assert!(Settings::new(0, 60_000).is_err());
}

#[test]
fn archiving_is_bounded_per_tick_and_frees_whole_chunks() {
    let mut r = Run::new();
    r.ok(item("a", 1, 1_000_000));
    r.ok(Command::CreditPoints { customer: "c".into(), amount: 1_000_000, reason: "t".into() });
    let n = 3 * CHUNK;
    for _ in 0..n {
        // Straight to the shard: the invariant check after every order would be quadratic.
        let request = Request { merchant: "m-1".into(), idempotency: None, command: points_order("c", "a") };
        match r.shard.execute(&request, r.now) {
            Ok(Outcome::Applied { events, .. }) => r.log.extend(events),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(r.m().orders.chunks_in_memory(), 3);
    let events = r.tick(RETAIN);
    let archived = events.iter().filter(|e| e.type_name() == "order.archived").count();
    assert!(archived > 0 && archived < n, "one tick archives a bounded share: {archived}");
    assert!(events.len() <= surge_core::limits::TICK_ARCHIVES_MAX);
    for _ in 0..10 {
        r.tick(1_000);
    }
    let m = r.m();
    assert_eq!((m.orders.live(), m.payments.live()), (0, 0));
    assert_eq!((m.orders.chunks_in_memory(), m.payments.chunks_in_memory()), (0, 0));
    assert_eq!(m.item_view("a").map(|a| a.sold), Some(n as u64));
    // Numbers go on after the archived ones.
    let o = r.ok(points_order("c", "a"));
    assert!(matches!(o, Reply::Order(o) if o.id.to_string() == format!("ord_{}", n + 1)));
}
