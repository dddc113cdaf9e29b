//! A merchant whose growable containers span several chunks (`chunked::CHUNK` elements) and
//! whose indexes have split (`split_map::PART_MAX` entries): the snapshot round-trips, the
//! log replays to the same digest, and the snapshot body is byte for byte what the same
//! state encoded with plain `Vec`s (the containers before chunking) gives; the numbered
//! collections (`NumberedVec`) encode as their length, archive times and indexed entries.

use std::sync::Arc;

use serde::Serialize;
use surge_core::chunked::CHUNK;
use surge_core::command::*;
use surge_core::encoding::HEADER_SIZE;
use surge_core::ledger::Ledger;
use surge_core::numbered::NumberedVec;
use surge_core::split_map::PART_MAX;
use surge_core::state::{Customer, DeadLetter, Hold, IdempotencyRecord, Item, Merchant, Order, Payment, Queue, Token};
use surge_core::{Event, Outcome, Shard, UnixMs};

const T0: UnixMs = 1_763_700_000_000;
const M: &str = "m-1";

fn execute(shard: &mut Shard, log: &mut Vec<Event>, command: Command, key: Option<String>, now: UnixMs) {
    let request =
        Request { merchant: M.into(), idempotency: key.map(|key| Idempotency { key, fingerprint: [3; 16] }), command };
    match shard.execute(&request, now) {
        Ok(Outcome::Applied { events, .. }) => log.extend(events),
        other => panic!("{other:?}"),
    }
    let applied = shard.applied_events();
    shard.mark_durable(applied);
}

/// The merchant as it encoded when every container was a `Vec` / `VecDeque`.
#[derive(Serialize)]
struct PlainMerchant<'a> {
    id: &'a Arc<str>,
    name: &'a str,
    currency: &'a str,
    api_key_hash: &'a [u8; 32],
    created_at_ms: UnixMs,
    items: Vec<&'a Item>,
    customers: Vec<&'a Customer>,
    holds: PlainNumbered<'a, Hold>,
    orders: PlainNumbered<'a, Order>,
    payments: PlainNumbered<'a, Payment>,
    queues: Vec<PlainQueue<'a>>,
    ledger: &'a Ledger,
    idempotency: Vec<(&'a Arc<str>, Option<&'a IdempotencyRecord>)>,
    dead_letters: Vec<&'a DeadLetter>,
    archived_card_net: u128,
}

/// A `NumberedVec` with nothing archived: its length, a zero archive time per chunk, and
/// every entry with its index.
#[derive(Serialize)]
struct PlainNumbered<'a, T> {
    len: u64,
    archived_ms: Vec<UnixMs>,
    entries: Vec<(u64, &'a T)>,
}

fn plain_numbered<T>(v: &NumberedVec<T>) -> PlainNumbered<'_, T> {
    assert_eq!(v.live(), v.len(), "nothing archived");
    PlainNumbered {
        len: v.len() as u64,
        archived_ms: vec![0; v.len().div_ceil(CHUNK)],
        entries: v.iter().map(|(i, t)| (i as u64, t)).collect(),
    }
}

#[derive(Serialize)]
struct PlainQueue<'a> {
    id: &'a Arc<str>,
    max_active: u64,
    active_ttl_s: u64,
    tokens: PlainNumbered<'a, Token>,
    next_waiting: u64,
    active: u64,
}

fn plain(m: &Merchant) -> PlainMerchant<'_> {
    PlainMerchant {
        id: &m.id,
        name: &m.name,
        currency: &m.currency,
        api_key_hash: &m.api_key_hash,
        created_at_ms: m.created_at_ms,
        items: m.items.iter().collect(),
        customers: m.customers.iter().collect(),
        holds: plain_numbered(&m.holds),
        orders: plain_numbered(&m.orders),
        payments: plain_numbered(&m.payments),
        queues: m.queues.iter().map(plain_queue).collect(),
        ledger: &m.ledger,
        idempotency: m.idempotency.oldest().map(|(k, r)| (k, Some(r))).collect(),
        dead_letters: m.dead_letters.iter().collect(),
        archived_card_net: m.archived_card_net,
    }
}

fn plain_queue(q: &Queue) -> PlainQueue<'_> {
    PlainQueue {
        id: &q.id,
        max_active: q.max_active,
        active_ttl_s: q.active_ttl_s,
        tokens: plain_numbered(&q.tokens),
        next_waiting: q.next_waiting,
        active: q.active,
    }
}

#[test]
fn a_merchant_spanning_several_chunks_encodes_as_plain_vecs_and_round_trips() {
    let (mut shard, mut log) = (Shard::new(), Vec::new());
    let n = 2 * CHUNK + 300;
    assert!(n > 2 * PART_MAX);
    let mut now = T0;
    execute(
        &mut shard,
        &mut log,
        Command::CreateMerchant { name: "shop".into(), currency: "KRW".into(), api_key_hash: [7; 32] },
        None,
        now,
    );
    let items = ItemSpec::numbered(CHUNK + 10, 10, 1_000_000);
    execute(&mut shard, &mut log, Command::PutItems { items }, None, now);
    let queue = Command::PutQueue { queue: "q".into(), max_active: 50, active_ttl_s: 60 };
    execute(&mut shard, &mut log, queue, None, now);
    for c in 0..n {
        let credit = Command::CreditPoints { customer: format!("c-{c}"), amount: 1_000_000, reason: "t".into() };
        execute(&mut shard, &mut log, credit, None, now);
    }
    for i in 0..n {
        now += 1;
        let sku = |k: usize| format!("sku-{}", k % (CHUNK + 10));
        let order = Command::CreateOrder {
            customer: format!("c-{i}"),
            source: OrderSource::Lines(vec![
                LineSpec { sku: sku(i), qty: 1 },
                LineSpec { sku: sku(i * 7 + 3), qty: 2 },
            ]),
            payment: PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Automatic },
            queue_token: None,
        };
        execute(&mut shard, &mut log, order, Some(format!("order-{i}")), now);
        let hold = Command::CreateHold {
            customer: format!("c-{i}"),
            lines: vec![LineSpec { sku: sku(i * 3), qty: 1 }],
            ttl_s: Some(60),
            queue_token: None,
        };
        execute(&mut shard, &mut log, hold, None, now);
        let token = Command::IssueToken { queue: "q".into(), customer: format!("c-{i}"), nonce: i as u64 };
        execute(&mut shard, &mut log, token, Some(format!("token-{i}")), now);
        if i % 500 == 0 {
            log.extend(shard.tick(now));
        }
    }
    // A day later the oldest idempotency keys expire (at most a tick's budget at a time):
    // the key queue is drained from the front across a chunk boundary.
    for _ in 0..2 {
        now += 24 * 60 * 60 * 1_000 + 1;
        log.extend(shard.tick(now));
    }
    let applied = shard.applied_events();
    shard.mark_durable(applied);
    shard.check_invariants().expect("invariants");

    let m = shard.merchant(M).expect("merchant");
    assert!(m.orders.len() > 2 * CHUNK && m.payments.len() > 2 * CHUNK && m.holds.len() > 2 * CHUNK);
    assert!(m.customers.len() > 2 * CHUNK && m.items.len() > CHUNK);
    assert!(m.queues.get("q").expect("queue").tokens.len() > 2 * CHUNK);
    let keys = m.idempotency.len();
    assert!(keys > CHUNK && keys < 2 * n, "some keys expired: {keys} of {}", 2 * n);
    assert_eq!(m.order(n as u64).map(|o| o.customer), m.orders.iter().last().map(|(_, o)| o.customer));
    assert!(m.idempotency.get(&format!("order-{}", n - 1)).is_some());
    assert!(m.idempotency.get("order-0").is_none(), "the oldest key expired");

    // The snapshot body is the plain-`Vec` encoding of the same state, byte for byte.
    let snapshot = shard.snapshot();
    let plain_merchants: Vec<PlainMerchant<'_>> = shard.merchants().map(plain).collect();
    let plain_bytes = postcard::to_allocvec(&(plain_merchants, shard.applied_events())).expect("encode");
    assert!(snapshot[HEADER_SIZE..] == plain_bytes[..], "snapshot differs from the plain-Vec encoding");
    for (chunked, plain) in [
        (postcard::to_allocvec(&m.orders), postcard::to_allocvec(&plain_numbered(&m.orders))),
        (postcard::to_allocvec(&m.customers), postcard::to_allocvec(&m.customers.iter().collect::<Vec<_>>())),
    ] {
        assert_eq!(chunked.expect("encode"), plain.expect("encode"));
    }

    // Restore gives the same bytes and digest; so does replaying the log from empty.
    let restored = Shard::restore(&snapshot).expect("restore");
    assert!(restored.snapshot() == snapshot);
    assert_eq!(restored.digest(), shard.digest());
    assert_eq!(restored.merchant(M), shard.merchant(M));
    let mut replayed = Shard::new();
    for event in &log {
        replayed.apply(event).expect("replay");
    }
    assert_eq!(replayed.digest(), shard.digest());
}
