//! Random command sequences against an `Engine`, checking the design's rules after every
//! step. The property tests feed it proptest's bytes and the cargo-fuzz target feeds it
//! libFuzzer's: both decode bytes into `Op`s with small domains (a few merchants, skus,
//! customers) so that ops collide on the same resources often.
//!
//! Checked after each step: every invariant of the shard (`check_invariants`); a refused
//! command leaves the digest unchanged; events survive their binary encoding; a retry with
//! the same key and body gets the identical reply, with another body
//! `idempotency_key_reused`. Shards archive settled aggregates after a retention of three
//! days, and day-long advances of time make that happen. Checked at the end (`finish`): replaying every logged batch
//! into empty shards gives the same digests, and snapshot -> restore does too.

use sha2::Digest as _;

use crate::command::*;
use crate::encoding::{decode_events, encode_events, SnapshotCache};
use crate::engine::Engine;
use crate::error::CoreError;
use crate::ids::UnixMs;
use crate::image;
use crate::limits::IDEMPOTENCY_TTL_MS;
use crate::shard::{Outcome, Settings, Shard};
use crate::view::Reply;

const MERCHANTS: usize = 3;
const SHARDS: usize = 2;
const SKUS: u8 = 6;
const CUSTOMERS: u8 = 5;
/// Ops decoded from one input at most (the fuzzer's inputs can be long).
pub const OPS_MAX: usize = 2_048;
const START_MS: UnixMs = 1_700_000_000_000;

/// Bytes consumed as small numbers; an exhausted reader yields zeros.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((b, rest)) => {
                self.bytes = rest;
                *b
            }
            None => 0,
        }
    }
    fn below(&mut self, n: u8) -> u8 {
        self.u8() % n
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn flag(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// One step of a simulation: a request of merchant `m`, time passing, or a retry.
#[derive(Clone, Debug)]
pub enum Op {
    Request {
        m: usize,
        keyed: bool,
        command: Command,
    },
    /// Time passes by `ms`, then every shard ticks.
    Advance {
        ms: u64,
    },
    /// Re-sends the `index`-th keyed request; `altered` changes its fingerprint.
    Retry {
        index: usize,
        altered: bool,
    },
    /// Snapshot and restore one shard; the digest must not change.
    Snapshot {
        shard: usize,
    },
}

fn sku(r: &mut Reader) -> String {
    // One in 32 names an item that never exists, or is no valid id at all.
    match r.below(32) {
        30 => "ghost".into(),
        31 => "bad sku!".into(),
        n => format!("s{}", n % SKUS),
    }
}

fn customer(r: &mut Reader) -> String {
    format!("c{}", r.below(CUSTOMERS))
}

fn lines(r: &mut Reader) -> Vec<LineSpec> {
    // Mostly 1..=2 lines of qty 1..=3; sometimes none, or qty 0, to be refused.
    let count = match r.below(8) {
        0 => 0,
        1 => 3,
        n => 1 + n % 2,
    };
    (0..count).map(|_| LineSpec { sku: sku(r), qty: u64::from(r.below(16)).min(3) }).collect()
}

/// Resources created so far per kind, for one merchant.
#[derive(Clone, Default)]
struct Counts {
    holds: u64,
    orders: u64,
    payments: u64,
    dead_letters: u64,
    /// The customer of the latest hold, who may turn it into an order.
    last_hold_customer: Option<String>,
}

/// Mostly one of the latest few resources of a kind; sometimes one that does not exist.
fn numbered(prefix: &str, count: u64, r: &mut Reader) -> String {
    let back = u64::from(r.below(8));
    let n = if back == 7 { count + 1 } else { count.saturating_sub(back).max(1) };
    format!("{prefix}{n}")
}

fn payment_spec(r: &mut Reader) -> PaymentSpec {
    let method = [PaymentMethod::Points, PaymentMethod::Card, PaymentMethod::None][usize::from(r.below(3))];
    let card = |number: &str, kind: &str, sealed: &[u8]| {
        Some(CardSpec { number: number.into(), kind: kind.into(), sealed: sealed.into() })
    };
    let card = match (method, r.below(9)) {
        (PaymentMethod::Card, 0) => None, // invalid: card details missing
        (PaymentMethod::Card, 1) => card("12ab", "KB", b"sealed"),
        (PaymentMethod::Card, 2) => card("1234-5678-9814-1451", "KB", b""), // invalid: not sealed
        (PaymentMethod::Card, _) => card("1234-5678-9814-1451", "SAMSUNG", b"sealed"),
        _ => None,
    };
    let capture = if r.flag() { CaptureMode::Manual } else { CaptureMode::Automatic };
    PaymentSpec { method, card, capture }
}

fn amount(r: &mut Reader) -> Option<u64> {
    r.flag().then(|| u64::from(r.u16() % 3_000))
}

impl Op {
    fn decode(r: &mut Reader, tokens: &[Vec<String>], counts: &[Counts]) -> Op {
        let m = usize::from(r.below(MERCHANTS as u8));
        let c = counts[m].clone();
        let kind = r.below(22);
        let keyed = r.flag();
        let token = |r: &mut Reader| {
            let known = &tokens[m];
            match r.below(4) {
                0 => None,
                1 => Some("qt_0_0000000000000000".to_string()),
                _ if known.is_empty() => None,
                n => Some(known[usize::from(n) * 7 % known.len()].clone()),
            }
        };
        let command = match kind {
            0 => Command::PutItem(ItemSpec {
                sku: sku(r),
                name: "item".into(),
                price: u64::from(r.u16() % 2_000),
                stock: u64::from(r.below(24)),
                queue: (r.below(6) == 0).then(|| "q0".to_string()),
            }),
            1 => Command::PutItems {
                items: (0..r.below(4))
                    .map(|_| ItemSpec {
                        sku: sku(r),
                        name: "bulk".into(),
                        price: u64::from(r.below(200)),
                        stock: u64::from(r.below(8)),
                        queue: None,
                    })
                    .collect(),
            },
            2 => Command::Restock { sku: sku(r), qty: u64::from(r.below(6)) },
            3 | 4 => Command::CreateHold {
                customer: customer(r),
                lines: lines(r),
                ttl_s: match r.below(4) {
                    0 => None,
                    1 => Some(0),
                    _ => Some(u64::from(r.below(200)) * 3),
                },
                queue_token: token(r),
            },
            5 => Command::ReleaseHold { hold: numbered("hold_", c.holds, r) },
            6..=8 => {
                let (customer, source) = match (r.below(3), &c.last_hold_customer) {
                    (0, Some(holder)) if r.below(4) != 0 => {
                        (holder.clone(), OrderSource::Hold(numbered("hold_", c.holds, r)))
                    }
                    (0, _) => (customer(r), OrderSource::Hold(numbered("hold_", c.holds, r))),
                    _ => (customer(r), OrderSource::Lines(lines(r))),
                };
                Command::CreateOrder { customer, source, payment: payment_spec(r), queue_token: token(r) }
            }
            9 => Command::PayOrder { order: numbered("ord_", c.orders, r), payment: payment_spec(r) },
            10 => Command::CancelOrder { order: numbered("ord_", c.orders, r) },
            11 => Command::CapturePayment { payment: numbered("pay_", c.payments, r), amount: amount(r) },
            12 => Command::RefundPayment { payment: numbered("pay_", c.payments, r), amount: amount(r) },
            13 => Command::VoidPayment { payment: numbered("pay_", c.payments, r) },
            14 => Command::GatewayAccepted {
                payment: numbered("pay_", c.payments, r),
                transaction_key: format!("tx{}", r.below(2)),
                gateway: format!("gw{}", r.below(2)),
            },
            15 => match r.below(3) {
                0 => Command::GatewayApproved {
                    payment: numbered("pay_", c.payments, r),
                    transaction_key: format!("tx{}", r.below(2)),
                },
                1 => Command::GatewayDeclined {
                    payment: numbered("pay_", c.payments, r),
                    reason: "limit exceeded".into(),
                },
                _ => Command::GatewayGaveUp {
                    payment: numbered("pay_", c.payments, r),
                    reason: "gateway unavailable".into(),
                },
            },
            16 => Command::CreditPoints {
                customer: customer(r),
                amount: u64::from(r.u16() % 5_000),
                reason: "promo".into(),
            },
            17 => Command::PutQueue {
                queue: format!("q{}", r.below(2)),
                max_active: u64::from(r.below(4)),
                active_ttl_s: u64::from(r.below(130)),
            },
            18 => Command::IssueToken {
                queue: format!("q{}", r.below(3)),
                customer: customer(r),
                nonce: u64::from(r.u16()),
            },
            19 => {
                return match r.below(8) {
                    0 => Op::Advance { ms: 25 * 3_600 * 1_000 },
                    n if n < 6 => Op::Advance { ms: u64::from(r.u16()) * 10 },
                    _ => Op::Snapshot { shard: usize::from(r.below(SHARDS as u8)) },
                };
            }
            20 => match r.below(3) {
                0 => {
                    let (op, key) = [
                        (GatewayOp::Capture, "capture"),
                        (GatewayOp::Void, "void"),
                        (GatewayOp::Refund, "refund:0"),
                        (GatewayOp::Authorize, "authorize"),
                    ][usize::from(r.below(4))];
                    Command::GatewayOpFailed {
                        payment: numbered("pay_", c.payments, r),
                        op,
                        key: key.into(),
                        amount: u64::from(r.u16() % 3_000),
                        reason: "gateway answered 500".into(),
                    }
                }
                1 => Command::RetryDeadLetter { dead_letter: numbered("dl_", c.dead_letters, r) },
                _ => Command::ResolveDeadLetter { dead_letter: u64::from(r.below(4)) },
            },
            _ => return Op::Retry { index: usize::from(r.u16()), altered: r.flag() },
        };
        Op::Request { m, keyed, command }
    }
}

/// A successful keyed request, to be retried.
struct Sent {
    request: Request,
    reply: Reply,
}

pub struct World {
    pub engine: Engine,
    pub now_ms: UnixMs,
    /// Every applied batch per shard, as encoded bytes (what a log would hold).
    log: Vec<Vec<Vec<u8>>>,
    sent: Vec<Sent>,
    /// Tokens handed out, per merchant, for later holds and orders.
    tokens: Vec<Vec<String>>,
    next_key: u64,
    replays: usize,
    /// The latest snapshot per shard and how many logged batches it covers.
    snapshots: Vec<Option<(Vec<u8>, usize)>>,
    /// Per shard, the chunk cache of its snapshots, as a host's snapshot thread keeps one.
    snapshot_caches: Vec<SnapshotCache>,
    pub ops: Vec<Op>,
}

fn merchant_id(m: usize) -> String {
    format!("m{m}")
}

fn fingerprint(command: &Command) -> [u8; 16] {
    let bytes = postcard::to_stdvec(command).unwrap_or_default();
    let hash = sha2::Sha256::digest(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    out
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// An engine of `SHARDS` shards with merchants `m0..m2`.
    pub fn new() -> World {
        let mut engine = Engine::new(SHARDS);
        // A retention of three idempotency windows: the day-long advances of time archive
        // what settled a few of them ago, so archiving happens in random runs while most
        // commands still find recent aggregates in memory.
        for shard in &mut engine.shards {
            shard.set_settings(Settings { retain_settled_ms: 3 * IDEMPOTENCY_TTL_MS, ..Settings::default() });
        }
        let mut world = World {
            engine,
            now_ms: START_MS,
            log: vec![Vec::new(); SHARDS],
            sent: Vec::new(),
            tokens: vec![Vec::new(); MERCHANTS],
            next_key: 0,
            replays: 0,
            snapshots: vec![None; SHARDS],
            snapshot_caches: (0..SHARDS).map(|_| SnapshotCache::new()).collect(),
            ops: Vec::new(),
        };
        for m in 0..MERCHANTS {
            let command = Command::CreateMerchant {
                name: format!("merchant {m}"),
                currency: "KRW".into(),
                api_key_hash: [m as u8; 32],
            };
            let request = Request { merchant: merchant_id(m), idempotency: None, command };
            if let Err(e) = world.send(&request) {
                panic!("creating merchant {m}: {e}");
            }
        }
        world
    }

    /// Decodes and runs every op of `bytes` (at most `OPS_MAX`), checking after each.
    pub fn run(bytes: &[u8]) -> World {
        let mut world = World::new();
        let mut r = Reader { bytes };
        while !r.is_empty() && world.ops.len() < OPS_MAX {
            let op = Op::decode(&mut r, &world.tokens, &world.counts());
            world.step(op);
        }
        world.finish();
        world
    }

    fn counts(&self) -> Vec<Counts> {
        (0..MERCHANTS)
            .map(|m| {
                let id = merchant_id(m);
                self.engine.shard_for(&id).merchant(&id).map_or_else(Counts::default, |m| Counts {
                    holds: m.holds.len() as u64,
                    orders: m.orders.len() as u64,
                    payments: m.payments.len() as u64,
                    dead_letters: m.dead_letters.len() as u64,
                    last_hold_customer: m
                        .hold(m.holds.len() as u64)
                        .and_then(|h| m.customers.at(h.customer))
                        .map(|c| c.id.to_string()),
                })
            })
            .collect()
    }

    fn shard_of(&self, request: &Request) -> usize {
        self.engine.shard_index(&request.merchant)
    }

    /// Executes with every check; returns what the engine returned.
    fn send(&mut self, request: &Request) -> Result<Outcome, CoreError> {
        let shard = self.shard_of(request);
        let before = self.engine.shards[shard].digest();
        let result = self.engine.shards[shard].execute(request, self.now_ms);
        let after = self.engine.shards[shard].digest();
        match &result {
            Err(_) | Ok(Outcome::Replayed { .. }) => {
                assert_eq!(before, after, "{:?} changed the state: {result:?}", request.command);
            }
            Ok(Outcome::Applied { events, .. }) => {
                let bytes = encode_events(events);
                match decode_events(&bytes) {
                    Ok(decoded) => {
                        assert_eq!(&decoded, events, "events do not survive their encoding")
                    }
                    Err(e) => panic!("encoded events do not decode: {e}"),
                }
                self.log[shard].push(bytes);
                // Everything is durable at once here; in-flight keys are tested on their own.
                let applied = self.engine.shards[shard].applied_events();
                self.engine.shards[shard].mark_durable(applied);
            }
        }
        if let Err(e) = self.engine.shards[shard].check_invariants() {
            panic!("after {:?}: {e}", request.command);
        }
        result
    }

    pub fn step(&mut self, op: Op) {
        self.ops.push(op.clone());
        match op {
            Op::Request { m, keyed, command } => {
                let idempotency = keyed.then(|| {
                    self.next_key += 1;
                    Idempotency { key: format!("key-{}", self.next_key), fingerprint: fingerprint(&command) }
                });
                let request = Request { merchant: merchant_id(m), idempotency, command };
                if let Ok(Outcome::Applied { reply, .. }) = self.send(&request) {
                    if let Reply::Token(t) = &reply {
                        self.tokens[m].push(t.token.clone());
                    }
                    if request.idempotency.is_some() {
                        self.sent.push(Sent { request, reply });
                    }
                }
            }
            Op::Advance { ms } => {
                self.now_ms += ms;
                for (shard, events) in self.engine.tick(self.now_ms) {
                    self.log[shard].push(encode_events(&events));
                    let applied = self.engine.shards[shard].applied_events();
                    self.engine.shards[shard].mark_durable(applied);
                    if let Err(e) = self.engine.shards[shard].check_invariants() {
                        panic!("after tick at {}: {e}", self.now_ms);
                    }
                }
            }
            Op::Retry { index, altered } => self.retry(index, altered),
            Op::Snapshot { shard } => {
                let original = &self.engine.shards[shard];
                let bytes = original.snapshot();
                // The host's way (a frozen clone, chunks unchanged since this shard's last
                // snapshot copied from the cache) must give the same bytes.
                let frozen = [original.freeze()];
                let (mut cached, mut full) = (Vec::new(), Vec::new());
                image::encode_snapshot_cached(&frozen, &mut self.snapshot_caches[shard], &mut cached);
                image::encode_snapshot_into(&frozen, &mut full);
                assert!(cached == full, "the cached snapshot encoding differs from the full one");
                match Shard::restore(&bytes) {
                    Ok(restored) => {
                        assert_eq!(restored.digest(), original.digest(), "snapshot -> restore changed the digest");
                        assert_eq!(restored.snapshot(), bytes, "a restored shard snapshots differently");
                        self.snapshots[shard] = Some((bytes, self.log[shard].len()));
                    }
                    Err(e) => panic!("own snapshot does not restore: {e}"),
                }
            }
        }
    }

    fn retry(&mut self, index: usize, altered: bool) {
        if self.sent.is_empty() {
            return;
        }
        let sent = &self.sent[index % self.sent.len()];
        let mut request = sent.request.clone();
        let expected = sent.reply.clone();
        let Some(idempotency) = request.idempotency.as_mut() else {
            return;
        };
        let shard = &self.engine.shards[self.engine.shard_index(&request.merchant)];
        let kept = shard.merchant(&request.merchant).is_some_and(|m| m.idempotency.get(&idempotency.key).is_some());
        if !kept {
            return; // forgotten after its retention: a retry would be a new request
        }
        if altered {
            idempotency.fingerprint[0] ^= 0xff;
        }
        match self.send(&request) {
            Ok(Outcome::Replayed { reply }) if !altered => {
                assert_eq!(reply, expected, "a replay differs from the first reply");
                self.replays += 1;
            }
            Err(CoreError::IdempotencyKeyReused) if altered => {}
            other => panic!("retry (altered: {altered}) got {other:?}"),
        }
    }

    /// Recovers every shard twice — from the empty state through every logged batch, and
    /// from its latest snapshot through the batches after it — and compares digests.
    pub fn finish(&self) {
        for (i, batches) in self.log.iter().enumerate() {
            let (mut replayed, covered) = match &self.snapshots[i] {
                Some((bytes, covered)) => (Shard::restore(bytes).unwrap_or_else(|e| panic!("restore: {e}")), *covered),
                None => (Shard::new(), 0),
            };
            for bytes in &batches[covered..] {
                let events = decode_events(bytes).unwrap_or_else(|e| panic!("logged batch does not decode: {e}"));
                for event in &events {
                    if let Err(e) = replayed.apply(event) {
                        panic!("replay after the snapshot of shard {i}: {e}");
                    }
                }
            }
            assert_eq!(replayed.digest(), self.engine.shards[i].digest(), "snapshot + replay of shard {i} differs");
            let mut replayed = Shard::new();
            for bytes in batches {
                let events = decode_events(bytes).unwrap_or_else(|e| panic!("logged batch does not decode: {e}"));
                for event in &events {
                    if let Err(e) = replayed.apply(event) {
                        panic!("replay of shard {i}: {e}");
                    }
                }
            }
            assert_eq!(replayed.digest(), self.engine.shards[i].digest(), "replay of shard {i} differs");
            let restored = Shard::restore(&self.engine.shards[i].snapshot()).unwrap_or_else(|e| panic!("restore: {e}"));
            assert_eq!(restored.digest(), self.engine.shards[i].digest());
        }
    }

    /// The encoded event batches shard `shard` applied, in order (what its log would hold).
    pub fn logged_batches(&self, shard: usize) -> &[Vec<u8>] {
        &self.log[shard]
    }

    /// Applied (not refused) requests and ticks so far.
    pub fn batches(&self) -> usize {
        self.log.iter().map(Vec::len).sum()
    }

    /// How often each event type was logged, to judge what a run exercised.
    pub fn event_type_counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for bytes in self.log.iter().flatten() {
            for event in decode_events(bytes).unwrap_or_default() {
                *counts.entry(event.type_name()).or_default() += 1;
            }
        }
        counts
    }

    /// Retries that replayed the first reply.
    pub fn replays(&self) -> usize {
        self.replays
    }
}
