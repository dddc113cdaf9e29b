//! The events look-up in cluster mode: an aggregate's events in its partition's log in etcd.
//! Any node reads any partition's log (reads need no token), so the node asked answers
//! without forwarding. The read is bounded to the newest [`EVENTS_SCAN_BATCHES_MAX`]
//! batches; the log itself holds only what the partition's newest snapshot and its readers
//! have not passed (older history is in the cold store's `events` table).

use surge_cluster::{Etcd, LogReader};

use crate::lookup::{AggregateEvents, AggregateScan};

/// Batches (group commits) of a partition's log one look-up reads at most: the newest.
pub const EVENTS_SCAN_BATCHES_MAX: u64 = 4_096;

/// The newest `limit` events of `merchant`'s `aggregate` in its partition's log, as the
/// relay publishes them (partition-qualified event ids); `complete` when the batches read
/// start at the log's first.
pub async fn aggregate_events(
    etcd: &Etcd,
    partitions: u32,
    merchant: &str,
    aggregate: &str,
    limit: usize,
) -> Result<AggregateEvents, String> {
    let partition = surge_core::shard_of(merchant, partitions as usize) as u32;
    let reader = LogReader::new(etcd, partition);
    let mut found = AggregateScan::new(merchant, aggregate, limit);
    let Some(last) = reader.last_seq().await.map_err(|e| e.to_string())? else {
        // An empty log: complete unless a snapshot took batches away.
        let truncated = reader.manifest().await.map_err(|e| e.to_string())?.is_some();
        return Ok(found.finish(!truncated));
    };
    let mut next = last.saturating_sub(EVENTS_SCAN_BATCHES_MAX - 1).max(1);
    let mut first_read = None;
    // Bounded: every page advances `next` towards `last` (batches appended after the look-up
    // started are left for the next one), at most EVENTS_SCAN_BATCHES_MAX batches in all.
    'pages: loop {
        let page = reader.read_from(next).await.map_err(|e| e.to_string())?;
        for entry in &page.entries {
            if entry.seq > last {
                break 'pages;
            }
            first_read.get_or_insert(entry.seq);
            let events = surge_partition::entry_events(entry)
                .map_err(|e| format!("partition {partition}: batch {} does not decode: {e}", entry.seq))?;
            found.record(Some(partition), entry.seq, &events);
        }
        if !page.more || page.entries.is_empty() || page.next_seq > last {
            break;
        }
        next = page.next_seq;
    }
    Ok(found.finish(first_read == Some(1)))
}
