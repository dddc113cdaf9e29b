//! The host's log and snapshot payloads for a set of shards: what `surge serve` writes and
//! what every reader of its log (recovery, `surge wal`, the relay's projection) decodes.
//! Bytes in, shards out; no I/O.
//!
//! * A log record of type [`EVENTS_RECORD_TYPE`] holds one `encoding::encode_events` batch;
//!   its events belong to one or more merchants and are routed by [`shard_of`].
//! * A snapshot is `SRGH`, version u32, shard count u32, then per shard a u64 length and
//!   `Shard::snapshot()` bytes. All little-endian.

use crate::encoding::{decode_events, SnapshotCache};
use crate::engine::shard_of;
use crate::error::{ApplyError, DecodeError};
use crate::event::Event;
use crate::shard::{FrozenShard, Shard};

/// The log record type under which the host writes encoded event batches.
pub const EVENTS_RECORD_TYPE: u8 = 1;
const SNAPSHOT_MAGIC: [u8; 4] = *b"SRGH";
const SNAPSHOT_VERSION: u32 = 1;

/// A log record or snapshot that does not belong to this state: replay stops on it. The
/// messages name what is wrong; callers add where (the record's LSN, the snapshot's file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("unknown record type {0}")]
    UnknownRecordType(u8),
    #[error("does not decode: {0}")]
    Decode(DecodeError),
    #[error("does not apply: {0}")]
    Apply(ApplyError),
    /// The snapshot ends before its header or a shard does.
    #[error("truncated")]
    Truncated,
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported version {0}")]
    UnsupportedVersion(u32),
    #[error("no shards")]
    NoShards,
    /// A merchant's shard depends on the shard count, so a snapshot is only good for the
    /// count it was written with.
    #[error("written with {written} shards, this server runs {running}; start it with --shards {written}")]
    ShardCountMismatch { written: usize, running: usize },
    #[error("length out of range")]
    LengthOutOfRange,
    #[error("shard {index}: {source}")]
    Shard { index: usize, source: DecodeError },
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// The events of one log record, refusing records of another type.
pub fn record_events(record_type: u8, payload: &[u8]) -> Result<Vec<Event>, ImageError> {
    if record_type != EVENTS_RECORD_TYPE {
        return Err(ImageError::UnknownRecordType(record_type));
    }
    decode_events(payload).map_err(ImageError::Decode)
}

/// Applies every event of a logged record to the shard of its merchant.
pub fn apply_events(shards: &mut [Shard], events: &[Event]) -> Result<(), ImageError> {
    assert!(!shards.is_empty(), "at least one shard");
    for event in events {
        let i = shard_of(&event.merchant, shards.len());
        shards[i].apply(event).map_err(ImageError::Apply)?;
    }
    Ok(())
}

/// Encodes every shard into one buffer of `capacity_bytes` to start with (a host passes
/// the size of its previous snapshot: the image is large, and each doubling of a growing
/// `Vec` copies it and touches fresh pages).
pub fn encode_snapshot(shards: &[FrozenShard], capacity_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity_bytes.max(12));
    encode_snapshot_into(shards, &mut out);
    out
}

/// [`encode_snapshot`] into `out` (cleared first), so a writer that snapshots again and
/// again reuses one buffer instead of allocating and faulting in a fresh one each time.
pub fn encode_snapshot_into(shards: &[FrozenShard], out: &mut Vec<u8>) {
    encode_shards(shards, out, |shard, out| shard.snapshot_into(out));
}

/// [`encode_snapshot_into`] with a cache of the chunks the previous call encoded (see
/// [`SnapshotCache`]): the same bytes, and only the chunks changed since are encoded. A
/// host that snapshots again and again keeps one cache for its snapshot thread.
pub fn encode_snapshot_cached(shards: &[FrozenShard], cache: &mut SnapshotCache, out: &mut Vec<u8>) {
    cache.begin();
    encode_shards(shards, out, |shard, out| shard.snapshot_into_cached(cache, out));
    cache.end();
}

fn encode_shards(shards: &[FrozenShard], out: &mut Vec<u8>, mut encode: impl FnMut(&FrozenShard, &mut Vec<u8>)) {
    assert!(!shards.is_empty(), "at least one shard");
    out.clear();
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&(shards.len() as u32).to_le_bytes());
    for shard in shards {
        let at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        encode(shard, out);
        let len = (out.len() - at - 8) as u64;
        out[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }
}

/// The snapshot of `shards` as they are now (what tools and tests write; the server
/// freezes its shards under their locks and encodes them later with
/// [`encode_snapshot_cached`]).
pub fn snapshot_of(shards: &[Shard]) -> Vec<u8> {
    let frozen: Vec<FrozenShard> = shards.iter().map(Shard::freeze).collect();
    encode_snapshot(&frozen, 0)
}

/// The shard count a snapshot was written with, read from its header.
pub fn snapshot_shard_count(bytes: &[u8]) -> Option<usize> {
    let b = bytes.get(8..12).filter(|_| bytes.starts_with(&SNAPSHOT_MAGIC))?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Restores the shards of a snapshot. With `shard_count`, refuses a snapshot written with
/// another count (a merchant's shard depends on it); without, takes the snapshot's own.
pub fn decode_snapshot(bytes: &[u8], shard_count: Option<usize>) -> Result<Vec<Shard>, ImageError> {
    let take = |at: usize, n: usize| bytes.get(at..at.saturating_add(n)).ok_or(ImageError::Truncated);
    if take(0, 4)? != SNAPSHOT_MAGIC {
        return Err(ImageError::BadMagic);
    }
    let u32_at = |at: usize| -> Result<u32, ImageError> {
        let b = take(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let version = u32_at(4)?;
    if version != SNAPSHOT_VERSION {
        return Err(ImageError::UnsupportedVersion(version));
    }
    let count = u32_at(8)? as usize;
    if count == 0 {
        return Err(ImageError::NoShards);
    }
    if let Some(running) = shard_count.filter(|&n| n != count) {
        return Err(ImageError::ShardCountMismatch { written: count, running });
    }
    let mut at = 12;
    // Bounded by the input: every round consumes at least 8 bytes or fails.
    let mut shards = Vec::with_capacity(count.min(bytes.len() / 8));
    for i in 0..count {
        let b = take(at, 8)?;
        let len = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let len = usize::try_from(len).map_err(|_| ImageError::LengthOutOfRange)?;
        at += 8;
        let part = take(at, len)?;
        at += len;
        shards.push(Shard::restore(part).map_err(|source| ImageError::Shard { index: i, source })?);
    }
    if at != bytes.len() {
        return Err(ImageError::TrailingBytes(bytes.len() - at));
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_refuses_damage() {
        let shards: Vec<Shard> = (0..3).map(|_| Shard::new()).collect();
        let bytes = snapshot_of(&shards);
        // The layout of the module doc, byte for byte.
        let mut expected = b"SRGH".to_vec();
        expected.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        for shard in &shards {
            let image = shard.snapshot();
            expected.extend_from_slice(&(image.len() as u64).to_le_bytes());
            expected.extend_from_slice(&image);
        }
        assert_eq!(bytes, expected);
        assert_eq!(decode_snapshot(&bytes, Some(3)).map(|s| s.len()), Ok(3));
        assert_eq!(decode_snapshot(&bytes, None).map(|s| s.len()), Ok(3));
        assert_eq!(snapshot_shard_count(&bytes), Some(3));
        let mismatch = decode_snapshot(&bytes, Some(2)).map(|s| s.len());
        assert_eq!(mismatch, Err(ImageError::ShardCountMismatch { written: 3, running: 2 }));
        assert!(mismatch.is_err_and(|e| e.to_string().contains("--shards 3")));
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut], None).is_err(), "cut at {cut}");
        }
        assert_eq!(record_events(EVENTS_RECORD_TYPE + 1, &[]), Err(ImageError::UnknownRecordType(2)));
    }
}
