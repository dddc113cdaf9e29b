//! Property tests over random interleavings of commands across several merchants and
//! shards. `sim::World` checks the rules after every step and at the end (replay and
//! snapshot digests); these tests only vary its input.

use proptest::prelude::*;
use surge_core::encoding::decode_events;
use surge_core::sim::World;
use surge_core::EventBody;

fn config() -> ProptestConfig {
    // PROPTEST_CASES raises the count for a soak; these keep CI on 2 cores quick.
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Short, dense runs: many collisions on a few skus, holds and payments.
    #[test]
    fn invariants_hold_over_random_interleavings(bytes in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        World::run(&bytes);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    /// Long runs: enough ops for expiries, retention and many snapshots.
    #[test]
    fn invariants_hold_over_long_runs(bytes in proptest::collection::vec(any::<u8>(), 4_000..12_000)) {
        World::run(&bytes);
    }
}

/// Guards against a simulator that silently refuses everything: random input must get a
/// fair share of commands applied, or the properties above prove little.
#[test]
fn random_runs_apply_a_fair_share_of_commands() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let world = World::run(&bytes);
    let applied = world.batches();
    assert!(applied * 5 >= world.ops.len(), "only {applied} of {} ops applied", world.ops.len());
    let counts = world.event_type_counts();
    for event_type in [
        "hold.converted",
        "hold.expired",
        "hold.released",
        "order.expired",
        "order.refunded",
        "payment.authorized",
        "payment.failed",
        "payment.refunded",
        "payment.voided",
        "inventory.returned",
        "queue.token_activated",
        "queue.token_expired",
        "idempotency.expired",
        "order.reopened",
        "gateway.requested",
        "payment.dead_lettered",
        "payment.dead_letter_retried",
        "payment.dead_letter_resolved",
        "order.archived",
        "payment.archived",
        "hold.archived",
        "queue.token_archived",
    ] {
        assert!(counts.get(event_type).is_some_and(|n| *n > 0), "{event_type} never happened: {counts:#?}");
    }
    assert!(world.replays() > 0, "no retry replayed a stored reply");
    // Points parked by a manual capture, and given back by a partial capture or a void.
    let kinds: std::collections::BTreeSet<String> = (0..world.engine.shards.len())
        .flat_map(|shard| world.logged_batches(shard).iter())
        .flat_map(|bytes| decode_events(bytes).unwrap_or_default())
        .filter_map(|event| match event.body {
            EventBody::LedgerPosted(p) => Some(format!("{:?}", p.kind)),
            _ => None,
        })
        .collect();
    for kind in ["Authorize", "Release", "Capture", "Refund", "PointsCredit"] {
        assert!(kinds.contains(kind), "no {kind} posting: {kinds:?}");
    }
}
