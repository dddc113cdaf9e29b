//! Snapshots written by an older build still restore. `fixtures/shard_v1.snapshot` is a
//! version-1 shard snapshot (four fixed ledger accounts) written by commit 81928ea from a
//! `sim::World` run (seed 18 of an LCG over 6,000 op bytes; payments by points and card,
//! captures, refunds, holds, queues, idempotency records), and `fixtures/shard_v1.events`
//! every event batch that shard applied, each as a little-endian u32 length and the batch.
//! Event batches never changed version, so replaying them with this build is the reference
//! state: restoring the old snapshot must give exactly that state.

use surge_core::encoding::{decode_events, SNAPSHOT_VERSION};
use surge_core::{DecodeError, Shard};

const SNAPSHOT_V1: &[u8] = include_bytes!("fixtures/shard_v1.snapshot");
const EVENTS: &[u8] = include_bytes!("fixtures/shard_v1.events");

fn replayed() -> Shard {
    let mut shard = Shard::new();
    let mut rest = EVENTS;
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
fn a_version_1_snapshot_restores_to_the_state_its_events_replay_to() {
    assert_eq!(u16::from_le_bytes([SNAPSHOT_V1[4], SNAPSHOT_V1[5]]), 1, "the fixture is a version-1 snapshot");
    let restored = Shard::restore(SNAPSHOT_V1).expect("a version-1 snapshot restores");
    let reference = replayed();
    assert_eq!(restored.digest(), reference.digest());
    restored.check_invariants().expect("invariants hold after restoring a version-1 snapshot");
    // Money moved in the fixture, so the comparison covers non-zero ledger totals.
    let merchant = restored.merchants().next().expect("the fixture has merchants");
    assert!(merchant.trial_balance().total_debits > 0);
}

#[test]
fn a_restored_version_1_snapshot_is_written_back_as_the_current_version() {
    let restored = Shard::restore(SNAPSHOT_V1).expect("a version-1 snapshot restores");
    let again = restored.snapshot();
    assert_eq!(u16::from_le_bytes([again[4], again[5]]), SNAPSHOT_VERSION);
    let twice = Shard::restore(&again).expect("its re-encoding restores");
    assert_eq!(twice.digest(), restored.digest());
}

#[test]
fn an_unknown_snapshot_version_is_refused() {
    for version in [0u16, SNAPSHOT_VERSION + 1] {
        let mut bytes = SNAPSHOT_V1.to_vec();
        bytes[4..6].copy_from_slice(&version.to_le_bytes());
        match Shard::restore(&bytes) {
            Err(DecodeError::UnsupportedVersion { version: refused }) => assert_eq!(refused, version),
            other => panic!("version {version}: {:?}", other.map(|_| "restored")),
        }
    }
}
