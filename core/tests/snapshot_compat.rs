//! Snapshots written by older builds still restore. Each fixture is a shard snapshot written
//! by an older build from a `sim::World` run, with every event batch that shard applied, each
//! as a little-endian u32 length and the batch:
//! - `shard_v1.*`: version 1 (four fixed ledger accounts), written by commit 81928ea (seed 18
//!   of an LCG over 6,000 op bytes; payments by points and card, captures, refunds, holds,
//!   queues, idempotency records).
//! - `shard_v2.*`: version 2 (five fixed accounts, no payment gateway, no dead letters),
//!   written by commit e5cfb63 (seed 6 of an LCG over 6,000 op bytes, chosen so that points
//!   are parked in `points:authorized` and a card payment is captured).
//! - `shard_v3.*`: version 3 (holds, orders, payments and queue tokens dense by number, no
//!   archive), written by commit 436165b (seed 1 of an LCG over 6,000 op bytes, the first
//!   shard with dead letters, a payment at a gateway and a waiting room of several tokens).
//!
//! Event batches never changed version, so replaying them with this build is the reference
//! state: restoring the old snapshot must give exactly that state.

use surge_core::encoding::{decode_events, SNAPSHOT_VERSION};
use surge_core::ledger::Account;
use surge_core::{DecodeError, Shard};

struct Fixture {
    version: u16,
    snapshot: &'static [u8],
    events: &'static [u8],
}

const FIXTURES: [Fixture; 3] = [
    Fixture {
        version: 1,
        snapshot: include_bytes!("fixtures/shard_v1.snapshot"),
        events: include_bytes!("fixtures/shard_v1.events"),
    },
    Fixture {
        version: 2,
        snapshot: include_bytes!("fixtures/shard_v2.snapshot"),
        events: include_bytes!("fixtures/shard_v2.events"),
    },
    Fixture {
        version: 3,
        snapshot: include_bytes!("fixtures/shard_v3.snapshot"),
        events: include_bytes!("fixtures/shard_v3.events"),
    },
];

fn replayed(events: &[u8]) -> Shard {
    let mut shard = Shard::new();
    let mut rest = events;
    let mut batches = 0;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (batch, tail) = tail.split_at(len);
        for event in decode_events(batch).expect("fixture batch decodes") {
            shard.apply(&event).expect("fixture event applies");
        }
        rest = tail;
        batches += 1;
    }
    assert!(batches > 50, "the fixture holds {batches} batches");
    shard
}

#[test]
fn older_snapshots_restore_to_the_state_their_events_replay_to() {
    for f in &FIXTURES {
        let version = u16::from_le_bytes([f.snapshot[4], f.snapshot[5]]);
        assert_eq!(version, f.version, "the fixture is a version-{} snapshot", f.version);
        let restored = Shard::restore(f.snapshot).expect("an older snapshot restores");
        let reference = replayed(f.events);
        assert_eq!(restored.digest(), reference.digest(), "version {version}");
        restored.check_invariants().expect("invariants hold after restoring an older snapshot");
        // Money moved in the fixture, so the comparison covers non-zero ledger totals.
        let merchant = restored.merchants().next().expect("the fixture has merchants");
        assert!(merchant.trial_balance().total_debits > 0);
    }
}

#[test]
fn a_version_2_snapshot_keeps_the_accounts_version_1_lacked() {
    let restored = Shard::restore(FIXTURES[1].snapshot).expect("restores");
    let parked = restored
        .merchants()
        .any(|m| m.account_view(&Account::PointsAuthorized.name()).is_some_and(|a| a.credits > a.debits));
    assert!(parked, "the version-2 fixture has points parked in points:authorized");
    for m in restored.merchants() {
        let authorized = m.account_view(&Account::GatewayAuthorized.name()).expect("account");
        assert_eq!((authorized.debits, authorized.credits), (0, 0), "an account the snapshot lacked starts at zero");
        assert!(m.dead_letters.is_empty());
        assert!(m.payments.iter().all(|(_, p)| p.gateway.is_none()));
    }
}

#[test]
fn a_version_3_snapshot_keeps_its_dead_letters_gateways_and_tokens() {
    let restored = Shard::restore(FIXTURES[2].snapshot).expect("restores");
    assert!(restored.merchants().any(|m| !m.dead_letters.is_empty()));
    assert!(restored.merchants().any(|m| m.payments.iter().any(|(_, p)| p.gateway.is_some())));
    assert!(restored.merchants().any(|m| m.queues.iter().any(|q| q.tokens.live() > 2)));
    for m in restored.merchants() {
        assert_eq!(m.orders.live(), m.orders.len(), "nothing was archived before version 4");
        assert_eq!(m.archived_card_net, 0);
        assert!(m.items.iter().all(|i| i.archived_sold == 0));
    }
}

#[test]
fn a_restored_older_snapshot_is_written_back_as_the_current_version() {
    for f in &FIXTURES {
        let restored = Shard::restore(f.snapshot).expect("an older snapshot restores");
        let again = restored.snapshot();
        assert_eq!(u16::from_le_bytes([again[4], again[5]]), SNAPSHOT_VERSION);
        let twice = Shard::restore(&again).expect("its re-encoding restores");
        assert_eq!(twice.digest(), restored.digest());
    }
}

#[test]
fn an_older_snapshot_decoded_as_another_version_is_refused() {
    // postcard is not self-describing: only the header's version makes these decode right.
    for (f, wrong) in [
        (&FIXTURES[0], 2u16),
        (&FIXTURES[1], 1),
        (&FIXTURES[1], 3),
        (&FIXTURES[2], 2),
        (&FIXTURES[2], SNAPSHOT_VERSION),
    ] {
        let mut bytes = f.snapshot.to_vec();
        bytes[4..6].copy_from_slice(&wrong.to_le_bytes());
        let digest = Shard::restore(&bytes).ok().map(|s| s.digest());
        assert_ne!(digest, Some(replayed(f.events).digest()), "version {} read as {wrong}", f.version);
    }
}

#[test]
fn an_unknown_snapshot_version_is_refused() {
    for version in [0u16, SNAPSHOT_VERSION + 1] {
        let mut bytes = FIXTURES[0].snapshot.to_vec();
        bytes[4..6].copy_from_slice(&version.to_le_bytes());
        match Shard::restore(&bytes) {
            Err(DecodeError::UnsupportedVersion { version: refused }) => assert_eq!(refused, version),
            other => panic!("version {version}: {:?}", other.map(|_| "restored")),
        }
    }
}
