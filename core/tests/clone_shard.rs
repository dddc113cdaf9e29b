//! Cloning a `Shard` is copy on write (its growable containers share chunks and index parts
//! with the clone): a clone taken at any point keeps encoding to exactly the snapshot bytes
//! of that point while the original goes on executing (pushes into shared last chunks,
//! writes to older holds and payments in shared middle chunks, index inserts and splits,
//! idempotency keys expiring from the front), and writing the clone never shows in the
//! original. This is what lets a host snapshot a shard by cloning it under its lock.

use surge_core::chunked::CHUNK;
use surge_core::command::*;
use surge_core::split_map::PART_MAX;
use surge_core::{Outcome, Shard, UnixMs};

const T0: UnixMs = 1_763_700_000_000;
const M: &str = "m-1";

/// Executes and reports whether the command applied (a refusal changes nothing).
fn execute(shard: &mut Shard, command: Command, key: Option<String>, now: UnixMs) -> bool {
    let request =
        Request { merchant: M.into(), idempotency: key.map(|key| Idempotency { key, fingerprint: [3; 16] }), command };
    let applied = matches!(shard.execute(&request, now), Ok(Outcome::Applied { .. }));
    let events = shard.applied_events();
    shard.mark_durable(events);
    applied
}

fn must(shard: &mut Shard, command: Command, key: Option<String>, now: UnixMs) {
    assert!(execute(shard, command.clone(), key, now), "{command:?}");
}

#[test]
fn a_clone_keeps_its_snapshot_while_the_original_goes_on() {
    let mut shard = Shard::new();
    let mut now = T0;
    let merchant = Command::CreateMerchant { name: "shop".into(), currency: "KRW".into(), api_key_hash: [7; 32] };
    must(&mut shard, merchant, None, now);
    let items = ItemSpec::numbered(50, 10, 1_000_000);
    must(&mut shard, Command::PutItems { items }, None, now);
    must(&mut shard, Command::PutQueue { queue: "q".into(), max_active: 50, active_ttl_s: 60 }, None, now);

    let n = CHUNK + 700;
    let mut clones: Vec<(Shard, Vec<u8>)> = Vec::new();
    let (mut released, mut refunded) = (0, 0);
    for i in 0..n {
        if i % 1_000 == 0 {
            // Clone under "the lock", remember what it encoded to at that moment.
            let bytes = shard.snapshot();
            clones.push((shard.clone(), bytes));
        }
        now += 1;
        let customer = format!("c-{}", i % 3_000);
        let credit = Command::CreditPoints { customer: customer.clone(), amount: 1_000, reason: "t".into() };
        must(&mut shard, credit, None, now);
        let sku = |k: usize| format!("sku-{}", k % 50);
        let order = Command::CreateOrder {
            customer: customer.clone(),
            source: OrderSource::Lines(vec![
                LineSpec { sku: sku(i), qty: 1 },
                LineSpec { sku: sku(i * 7 + 3), qty: 2 },
            ]),
            payment: PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Automatic },
            queue_token: None,
        };
        must(&mut shard, order, Some(format!("order-{i}")), now);
        let hold = Command::CreateHold {
            customer: customer.clone(),
            lines: vec![LineSpec { sku: sku(i * 3), qty: 1 }],
            ttl_s: Some(600),
            queue_token: None,
        };
        must(&mut shard, hold, None, now);
        let token = Command::IssueToken { queue: "q".into(), customer, nonce: i as u64 };
        must(&mut shard, token, Some(format!("token-{i}")), now);
        // Writes to older entries, in chunks a clone shares.
        if i % 7 == 0 && i > 0 {
            let hold = Command::ReleaseHold { hold: format!("hold_{}", i / 2 + 1) };
            released += usize::from(execute(&mut shard, hold, None, now));
            let refund = Command::RefundPayment { payment: format!("pay_{}", i / 3 + 1), amount: Some(1) };
            refunded += usize::from(execute(&mut shard, refund, Some(format!("refund-{i}")), now));
        }
        if i % 500 == 0 {
            shard.tick(now);
        }
    }
    assert!(released > 0 && refunded > 0, "released {released}, refunded {refunded}");
    // Idempotency keys expire from the front of the key queue; holds and tokens expire.
    now += 24 * 60 * 60 * 1_000 + 1;
    shard.tick(now);
    let merchant = shard.merchant(M).unwrap();
    assert!(merchant.orders.len() > CHUNK && merchant.idempotency.len() < 2 * n);
    assert!(2 * n > PART_MAX, "the idempotency index split while clones shared it");

    for (clone, bytes) in &clones {
        assert!(clone.snapshot() == *bytes, "a clone changed when the original was written");
        assert_eq!(Shard::restore(bytes).unwrap().digest(), clone.digest());
    }

    // And the other way round: writing a clone leaves the original alone.
    let before = shard.snapshot();
    let (mut clone, _) = clones.pop().unwrap();
    for i in 0..2 * CHUNK {
        let credit = Command::CreditPoints { customer: format!("c-{i}"), amount: 5, reason: "t".into() };
        must(&mut clone, credit, Some(format!("credit-{i}")), now);
    }
    clone.tick(now + 24 * 60 * 60 * 1_000);
    assert!(shard.snapshot() == before, "the original changed when a clone was written");
}
