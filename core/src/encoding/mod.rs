//! Stable binary encodings: event batches (what one log record holds), shard snapshots,
//! and stored replies. Layout of a batch or a snapshot:
//!
//! | offset | size | field                                                      |
//! |--------|------|------------------------------------------------------------|
//! | 0      | 4    | magic: `SRGE` (event batch) or `SRGS` (shard snapshot)      |
//! | 4      | 2    | version, little-endian (events: 1; snapshots: writes 4, reads 1..=4) |
//! | 6      | 2    | reserved, 0                                                |
//! | 8      | 4    | count, little-endian: events in the batch (0 for snapshots)|
//! | 12     | ...  | body: postcard 1.x encoding of `[Event]` or the shard image |
//!
//! postcard's format is specified and stable across its 1.x releases: integers are
//! varints, strings and sequences are length-prefixed, enums are a varint variant index
//! followed by the variant's fields in declaration order, `Option` is a 0/1 tag. That is why
//! variants and fields may only ever be appended (see `event.rs`). The header is a
//! fixed-size `bytemuck` struct so a reader can check magic and version without parsing.
//! Integrity (length, CRC) is the log's job, not this layer's.

use bytemuck::{Pod, Zeroable};
use serde::Serialize;

use crate::error::DecodeError;
use crate::event::{Event, EventBody};
use crate::limits::BATCH_EVENTS_MAX;
use crate::state::{ShardImage, ShardImageRef};
use crate::view::Reply;

mod cached;
mod snapshot_legacy;

pub use cached::SnapshotCache;

pub const EVENTS_MAGIC: [u8; 4] = *b"SRGE";
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"SRGS";
/// Version of the event encoding this build writes. History: 1 — first release.
pub const EVENTS_VERSION: u16 = 1;
/// Version of the snapshot encoding this build writes. History: 1 — first release; 2 — a
/// fifth fixed ledger account, `points:authorized`; 3 — the card path: a sixth fixed account
/// (`gateway:authorized`), a payment's `gateway`, a merchant's `dead_letters`; 4 — retention:
/// holds, orders, payments and queue tokens as `NumberedVec`s (length, archive times, live
/// entries with their index), an item's `archived_sold`, a merchant's `archived_card_net`.
/// Older versions are still read (`encoding/snapshot_legacy.rs`).
pub const SNAPSHOT_VERSION: u16 = 4;
/// Oldest snapshot version this build reads.
pub const SNAPSHOT_VERSION_MIN: u16 = 1;

#[cfg(not(target_endian = "little"))]
compile_error!("the headers are cast with bytemuck and assume a little-endian target");

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    pub magic: [u8; 4],
    pub version: u16,
    pub reserved: u16,
    pub count: u32,
}

pub const HEADER_SIZE: usize = std::mem::size_of::<Header>();
const _: () = assert!(HEADER_SIZE == 12);

/// postcard output appended to a caller's `Vec` with `extend_from_slice` (postcard's own
/// `to_extend` goes byte by byte through `Extend`, several times slower).
struct AppendToVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendToVec<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends postcard's encoding of `value`; writing to a `Vec` cannot fail.
fn append(value: &impl Serialize, out: &mut Vec<u8>) {
    if let Err(e) = postcard::serialize_with_flavor(value, AppendToVec(out)) {
        panic!("postcard cannot fail on a Vec: {e}");
    }
}

fn encode_with_header(magic: [u8; 4], version: u16, count: u32, body: &impl Serialize, out: &mut Vec<u8>) {
    let header = Header { magic, version, reserved: 0, count };
    out.extend_from_slice(bytemuck::bytes_of(&header));
    append(body, out);
}

fn split_header(
    bytes: &[u8],
    magic: [u8; 4],
    versions: std::ops::RangeInclusive<u16>,
) -> Result<(Header, &[u8]), DecodeError> {
    let head = bytes.get(..HEADER_SIZE).ok_or(DecodeError::TooShort { len: bytes.len() })?;
    let header: Header = bytemuck::pod_read_unaligned(head);
    if header.magic != magic {
        return Err(DecodeError::BadMagic);
    }
    if !versions.contains(&header.version) {
        return Err(DecodeError::UnsupportedVersion { version: header.version });
    }
    Ok((header, &bytes[HEADER_SIZE..]))
}

pub(crate) fn decode_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| DecodeError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Appends the encoding of `events` (one log record's worth) to `out`.
pub fn encode_events_into(events: &[Event], out: &mut Vec<u8>) {
    assert!(events.len() <= BATCH_EVENTS_MAX, "batch of {} events", events.len());
    encode_with_header(EVENTS_MAGIC, EVENTS_VERSION, events.len() as u32, &events, out);
}

pub fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 48 * events.len());
    encode_events_into(events, &mut out);
    out
}

/// Decodes a batch. Never panics on any input; also checks that every stored reply inside
/// decodes, so replaying an idempotency record can never fail later.
pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let (header, body) = split_header(bytes, EVENTS_MAGIC, EVENTS_VERSION..=EVENTS_VERSION)?;
    if header.count as usize > BATCH_EVENTS_MAX {
        return Err(DecodeError::CountMismatch { expected: header.count, actual: 0 });
    }
    let events: Vec<Event> = decode_body(body)?;
    if events.len() != header.count as usize {
        return Err(DecodeError::CountMismatch { expected: header.count, actual: events.len() });
    }
    for event in &events {
        if let EventBody::IdempotencyRecorded(record) = &event.body {
            decode_reply(&record.reply)?;
        }
    }
    Ok(events)
}

/// Appends a shard's snapshot image to `out` (which may already hold other shards).
pub(crate) fn encode_snapshot_into(image: &ShardImageRef<'_>, out: &mut Vec<u8>) {
    encode_with_header(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0, image, out);
}

/// [`encode_snapshot_into`], copying the bytes of chunks unchanged since the snapshot
/// `cache` last encoded (see `cached.rs`); the same bytes.
pub(crate) fn encode_snapshot_cached(image: &ShardImageRef<'_>, cache: &mut SnapshotCache, out: &mut Vec<u8>) {
    cached::encode_snapshot_into(image, cache, out);
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<ShardImage, DecodeError> {
    let (header, body) = split_header(bytes, SNAPSHOT_MAGIC, SNAPSHOT_VERSION_MIN..=SNAPSHOT_VERSION)?;
    if header.version == SNAPSHOT_VERSION {
        decode_body(body)
    } else {
        snapshot_legacy::decode(header.version, body)
    }
}

/// Stored replies are postcard without a header: they live and die inside one version.
pub fn encode_reply(reply: &Reply) -> std::sync::Arc<[u8]> {
    // Most replies fit: growing from empty was a sixth of an order's cost.
    let mut bytes = Vec::with_capacity(REPLY_BYTES_TYPICAL);
    append(reply, &mut bytes);
    bytes.into()
}

/// An order of a few lines with its payment encodes to about 100 bytes.
const REPLY_BYTES_TYPICAL: usize = 192;

pub fn decode_reply(bytes: &[u8]) -> Result<Reply, DecodeError> {
    decode_body(bytes)
}
