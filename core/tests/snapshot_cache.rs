//! Snapshots encoded with a `SnapshotCache` (the chunks unchanged since the previous
//! snapshot copied, not encoded) are byte for byte the full encoding, on a merchant whose
//! orders, payments, holds and idempotency keys span several chunks; a write to an old,
//! already cached chunk is encoded afresh; and restoring such a snapshot and replaying the
//! events after it gives the live shard's digest.

use surge_core::chunked::CHUNK;
use surge_core::command::*;
use surge_core::encoding::SnapshotCache;
use surge_core::{image, Event, Outcome, Settings, Shard, UnixMs};

const T0: UnixMs = 1_763_700_000_000;
const M: &str = "m-1";
const CUSTOMERS: usize = 3_000;
/// Short enough that the test expires keys and archives orders from the front.
const WINDOW_MS: u64 = 10_000;

struct Host {
    shard: Shard,
    cache: SnapshotCache,
    now: UnixMs,
    /// Events applied since the last snapshot, as a log would hold them after it.
    since_snapshot: Vec<Event>,
}

impl Host {
    fn execute(&mut self, command: Command, key: Option<String>) -> bool {
        let request = Request {
            merchant: M.into(),
            idempotency: key.map(|key| Idempotency { key, fingerprint: [3; 16] }),
            command,
        };
        let outcome = self.shard.execute(&request, self.now);
        let applied = self.shard.applied_events();
        self.shard.mark_durable(applied);
        match outcome {
            Ok(Outcome::Applied { events, .. }) => {
                self.since_snapshot.extend(events);
                true
            }
            _ => false,
        }
    }

    fn must(&mut self, command: Command, key: Option<String>) {
        assert!(self.execute(command.clone(), key), "{command:?}");
    }

    fn order(&mut self, i: usize) {
        let sku = |k: usize| format!("sku-{}", k % 50);
        let order = Command::CreateOrder {
            customer: format!("c-{}", i % CUSTOMERS),
            source: OrderSource::Lines(vec![
                LineSpec { sku: sku(i), qty: 1 },
                LineSpec { sku: sku(i * 7 + 3), qty: 2 },
            ]),
            payment: PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Automatic },
            queue_token: None,
        };
        self.must(order, Some(format!("order-{i}")));
    }

    fn tick(&mut self) {
        let events = self.shard.tick(self.now);
        self.since_snapshot.extend(events);
    }

    /// The host's snapshot: freeze, encode with the cache, drop the frozen state. Checks the
    /// bytes against the full encoding and returns them with the (reused, encoded) bytes.
    fn snapshot(&mut self) -> (Vec<u8>, u64, u64) {
        let frozen = [self.shard.freeze()];
        let (mut cached, mut full) = (Vec::new(), Vec::new());
        image::encode_snapshot_cached(&frozen, &mut self.cache, &mut cached);
        image::encode_snapshot_into(&frozen, &mut full);
        assert!(cached == full, "the cached encoding differs from the full one");
        self.since_snapshot.clear();
        (cached, self.cache.reused_bytes(), self.cache.encoded_bytes())
    }
}

fn grown(orders: usize) -> Host {
    let mut shard = Shard::new();
    shard.set_settings(Settings::new(WINDOW_MS, WINDOW_MS).expect("settings"));
    let mut host = Host { shard, cache: SnapshotCache::new(), now: T0, since_snapshot: Vec::new() };
    host.must(Command::CreateMerchant { name: "shop".into(), currency: "KRW".into(), api_key_hash: [7; 32] }, None);
    host.must(Command::PutItems { items: ItemSpec::numbered(50, 10, 1_000_000_000) }, None);
    for c in 0..CUSTOMERS {
        let credit = Command::CreditPoints { customer: format!("c-{c}"), amount: 1_000_000_000, reason: "t".into() };
        host.must(credit, None);
    }
    for i in 0..orders {
        host.now += 1;
        host.order(i);
        if i % 3 == 0 {
            let hold = Command::CreateHold {
                customer: format!("c-{}", i % CUSTOMERS),
                lines: vec![LineSpec { sku: format!("sku-{}", i % 50), qty: 1 }],
                ttl_s: Some(3_600),
                queue_token: None,
            };
            host.must(hold, None);
        }
    }
    host
}

#[test]
fn unchanged_chunks_are_reused_and_changed_ones_encoded_again() {
    let orders = 4 * CHUNK + 100;
    let mut host = grown(orders);
    let merchant = host.shard.merchant(M).expect("merchant");
    assert!(merchant.orders.len() > 4 * CHUNK && merchant.idempotency.len() > 4 * CHUNK);

    let (first, reused, encoded) = host.snapshot();
    assert_eq!(reused, 0, "nothing to reuse in a first snapshot");
    assert!(encoded > 0);

    // Nothing changed: every chunk is reused.
    let (again, reused, encoded) = host.snapshot();
    assert!(again == first);
    assert_eq!(encoded, 0, "an unchanged state encodes no chunk again");
    assert!(reused > 0);

    // A write to an entry in an old, cached chunk of payments and orders (a refund of an
    // order in the second chunk): that chunk must be encoded again, not copied stale.
    let payment = CHUNK + 10;
    let refund = Command::RefundPayment { payment: format!("pay_{payment}"), amount: Some(1) };
    host.must(refund, Some("refund-1".into()));
    let full_before = image::snapshot_of(std::slice::from_ref(&host.shard));
    let (after_refund, reused, encoded) = host.snapshot();
    assert!(after_refund != first, "the refund changed the state");
    assert!(after_refund == full_before);
    assert!(
        encoded > 0 && reused > 10 * encoded,
        "only the touched chunks are encoded: {reused} reused, {encoded} encoded"
    );
    let restored = image::decode_snapshot(&after_refund, Some(1)).expect("restores");
    let refunded = restored[0].merchant(M).and_then(|m| m.payment(payment as u64)).map(|p| p.refunded);
    assert_eq!(refunded, Some(1), "the snapshot holds the refund");

    // Keys expire and settled orders are archived from the front, new orders are pushed at
    // the back, holds are released in an old chunk.
    host.now = T0 + WINDOW_MS + 500;
    for _ in 0..20 {
        host.tick();
    }
    for i in orders..orders + 300 {
        host.now += 1;
        host.order(i);
    }
    assert!(host.execute(Command::ReleaseHold { hold: "hold_2000".into() }, None));
    let merchant = host.shard.merchant(M).expect("merchant");
    assert!(merchant.idempotency.len() < orders, "keys expired");
    assert!(merchant.orders.live() < orders, "orders archived");
    let (snapshot, reused, encoded) = host.snapshot();
    assert!(reused > encoded, "the middle chunks are reused: {reused} reused, {encoded} encoded");

    // Restoring the cached snapshot and replaying the log after it gives the live state.
    for i in orders + 300..orders + 400 {
        host.now += 1;
        host.order(i);
    }
    host.now += WINDOW_MS;
    host.tick();
    let mut shards = image::decode_snapshot(&snapshot, Some(1)).expect("restores");
    for event in &host.since_snapshot {
        shards[0].apply(event).expect("replays");
    }
    assert_eq!(shards[0].digest(), host.shard.digest(), "snapshot + replay differs from the live shard");
}

#[test]
fn a_clone_snapshotted_beside_its_original_shares_cached_chunks() {
    let mut host = grown(2 * CHUNK);
    let clone = host.shard.clone();
    host.order(2 * CHUNK);
    let frozen = [host.shard.freeze(), clone.freeze()];
    let (mut cached, mut full) = (Vec::new(), Vec::new());
    image::encode_snapshot_cached(&frozen, &mut host.cache, &mut cached);
    image::encode_snapshot_into(&frozen, &mut full);
    assert!(cached == full);
    assert!(host.cache.reused_bytes() > 0, "the clone's chunks were encoded once, for the original");
}
