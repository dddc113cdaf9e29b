//! A partition's shard rebuilt from etcd: its newest snapshot (if any), then every batch
//! after it, each record applied through `image::apply_events` as the local log's replay
//! does. Batches are dense from the snapshot on (the log writes each sequence number once,
//! and truncation only removes what a snapshot covers), so a gap is damage, not a race.

use std::sync::Arc;

use surge_cluster::log::Entry;
use surge_cluster::{ClusterError, LogReader};
use surge_core::event::EventBody;
use surge_core::image::{self, ImageError};
use surge_core::{Event, Shard};

/// A rebuilt partition: its shard (every event marked durable: etcd holds them all) and
/// the sequence number its next batch gets.
pub struct Rebuilt {
    pub shard: Shard,
    pub next_seq: u64,
    /// Batches applied after the snapshot.
    pub batches_applied: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading partition {partition} from etcd: {source}")]
    Read { partition: u32, source: ClusterError },
    #[error("partition {partition}: the snapshot covering seq {covers_seq} does not decode: {reason}")]
    Snapshot { partition: u32, covers_seq: u64, reason: String },
    #[error("partition {partition}: batch {seq} does not apply: {source}")]
    Batch { partition: u32, seq: u64, source: ImageError },
    #[error("partition {partition}: expected batch {expected}, found {found}: the log has a gap")]
    Gap { partition: u32, expected: u64, found: u64 },
    #[error("partition {partition}: a read from seq {seq} made no progress")]
    Stalled { partition: u32, seq: u64 },
}

/// Rebuilds `partition` from what etcd holds now. A new owner calls it after taking the
/// partition (its token fences the old owner, so the log cannot grow meanwhile).
pub async fn rebuild(reader: &LogReader, partition: u32) -> Result<Rebuilt, RebuildError> {
    let read = |source| RebuildError::Read { partition, source };
    let (mut shard, covered) = match reader.get_snapshot().await.map_err(read)? {
        Some(snapshot) => {
            let shard = Shard::restore(&snapshot.bytes).map_err(|e| RebuildError::Snapshot {
                partition,
                covers_seq: snapshot.covers_seq,
                reason: e.to_string(),
            })?;
            (shard, snapshot.covers_seq)
        }
        None => (Shard::new(), 0),
    };
    let mut next_seq = covered + 1;
    let mut batches_applied = 0u64;
    // Bounded by the log's length: every page either advances `next_seq` or ends the loop.
    loop {
        let page = reader.read_from(next_seq).await.map_err(read)?;
        for entry in &page.entries {
            apply_entry(&mut shard, partition, next_seq, entry, None)?;
            next_seq += 1;
            batches_applied += 1;
        }
        if !page.more {
            break;
        }
        if page.entries.is_empty() {
            return Err(RebuildError::Stalled { partition, seq: next_seq });
        }
    }
    let applied = shard.applied_events();
    shard.mark_durable(applied);
    Ok(Rebuilt { shard, next_seq, batches_applied })
}

/// An API key a batch gave a merchant (created, or its key rotated).
pub type LearnedKey = ([u8; 32], Arc<str>);

/// Applies one batch read back, which must be the one at `expected_seq`; the API keys it
/// gives merchants are pushed onto `keys` when given.
pub(crate) fn apply_entry(
    shard: &mut Shard,
    partition: u32,
    expected_seq: u64,
    entry: &Entry,
    keys: Option<&mut Vec<LearnedKey>>,
) -> Result<(), RebuildError> {
    if entry.seq != expected_seq {
        return Err(RebuildError::Gap { partition, expected: expected_seq, found: entry.seq });
    }
    let batch = |source| RebuildError::Batch { partition, seq: entry.seq, source };
    let events = entry_events(entry).map_err(batch)?;
    image::apply_events(std::slice::from_mut(shard), &events).map_err(batch)?;
    if let Some(keys) = keys {
        keys.extend(events.iter().filter_map(|e| match &e.body {
            EventBody::MerchantCreated(m) => Some((m.api_key_hash, e.merchant.clone())),
            EventBody::ApiKeyRotated(r) => Some((r.api_key_hash, e.merchant.clone())),
            _ => None,
        }));
    }
    Ok(())
}

/// The events of a batch read back: its records' (one per request the shard applied), in
/// order. What the shard's rebuild, the relay's reads and the events look-up all decode.
pub fn entry_events(entry: &Entry) -> Result<Vec<Event>, ImageError> {
    let mut events = Vec::new();
    for record in &entry.batch.records {
        events.extend(image::record_events(image::EVENTS_RECORD_TYPE, record)?);
    }
    Ok(events)
}
