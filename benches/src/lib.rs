//! The workload the core benches share (`benches/core.rs`, `benches/grow.rs`): one merchant
//! with `ITEMS` items of ample stock and `CUSTOMERS` customers with points, and its orders.

use surge_core::command::*;
use surge_core::{Outcome, Reply, Shard};

pub const MERCHANT: &str = "m-bench";
pub const ITEMS: usize = 1_000;
pub const CUSTOMERS: usize = 10_000;
pub const T0_MS: u64 = 1_763_700_000_000;

/// A command of `MERCHANT`, with an idempotency key when given one.
pub fn request(command: Command, key: Option<String>) -> Request {
    let idempotency = key.map(|key| Idempotency { key, fingerprint: [1; 16] });
    Request { merchant: MERCHANT.into(), idempotency, command }
}

/// Executes a set-up command; a refusal is a broken bench.
pub fn must(shard: &mut Shard, command: Command, now_ms: u64) {
    if let Err(e) = shard.execute(&request(command, None), now_ms) {
        panic!("setup: {e}");
    }
}

/// The merchant, its items and its customers' points.
pub fn setup_commands() -> impl Iterator<Item = Command> {
    let merchant = Command::CreateMerchant { name: "bench".into(), currency: "KRW".into(), api_key_hash: [0; 32] };
    let items = ItemSpec::numbered(ITEMS, 1_000, 1_000_000_000);
    let credits = (0..CUSTOMERS).map(|c| Command::CreditPoints {
        customer: format!("c-{c}"),
        amount: 1_000_000_000_000,
        reason: "bench".into(),
    });
    [merchant, Command::PutItems { items }].into_iter().chain(credits)
}

/// A shard holding the set-up.
pub fn setup() -> Shard {
    let mut shard = Shard::new();
    for command in setup_commands() {
        must(&mut shard, command, T0_MS);
    }
    shard
}

/// Order `i`: two lines, paid with points, captured at once.
pub fn points_order(i: usize) -> Command {
    Command::CreateOrder {
        customer: format!("c-{}", i % CUSTOMERS),
        source: OrderSource::Lines(vec![
            LineSpec { sku: format!("sku-{}", i % ITEMS), qty: 1 },
            LineSpec { sku: format!("sku-{}", (i * 7 + 3) % ITEMS), qty: 2 },
        ]),
        payment: PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Automatic },
        queue_token: None,
    }
}

/// Hold `i`: one line, released again by [`mix_step`].
pub fn hold(i: usize) -> Command {
    Command::CreateHold {
        customer: format!("c-{}", i % CUSTOMERS),
        lines: vec![LineSpec { sku: format!("sku-{}", (i * 13) % ITEMS), qty: 1 }],
        ttl_s: Some(300),
        queue_token: None,
    }
}

/// The requests of mix iteration `i`: a keyed points order and a hold.
pub fn mix_requests(i: usize) -> (Request, Request) {
    (request(points_order(i), Some(format!("order-{i}"))), request(hold(i), None))
}

/// One iteration of the `core/mix` bench (4 commands, as the server runs them): the order,
/// the hold, its release and a tick; then everything is reported durable at once, which
/// keeps in-flight checks off the measured path. Panics on a refusal: a refused command
/// would measure the error path.
#[inline(never)]
pub fn mix_step(shard: &mut Shard, order: &Request, hold: &Request, now_ms: u64) -> usize {
    let placed = applied(shard.execute(order, now_ms));
    let hold_id = match shard.execute(hold, now_ms) {
        Ok(Outcome::Applied { reply: Reply::Hold(h), .. }) => h.id.to_string(),
        other => panic!("hold: {other:?}"),
    };
    let released = applied(shard.execute(&request(Command::ReleaseHold { hold: hold_id }, None), now_ms));
    let ticked = shard.tick(now_ms);
    let applied = shard.applied_events();
    shard.mark_durable(applied);
    placed + released + ticked.len()
}

/// The events of an applied command (their count, all the mix needs to keep them alive).
fn applied(outcome: Result<Outcome, surge_core::CoreError>) -> usize {
    match outcome {
        Ok(Outcome::Applied { events, .. }) => events.len(),
        other => panic!("expected an applied command: {other:?}"),
    }
}
