//! Segment files: names, and the scan that decides how much of a segment is the log.

use crate::error::WalError;
use crate::format::{self, Frame, FRAME_ALIGN, FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE};
use crate::Lsn;

pub const SEGMENT_PREFIX: &str = "wal-";
pub const SEGMENT_SUFFIX: &str = ".seg";
pub const SNAPSHOT_PREFIX: &str = "snap-";
pub const SNAPSHOT_SUFFIX: &str = ".snap";
pub const CHECKPOINT_PREFIX: &str = "reader-";
pub const CHECKPOINT_SUFFIX: &str = ".ckpt";
pub const TMP_SUFFIX: &str = ".tmp";
pub const WATERMARK_FILE: &str = "durable.lsn";

/// `wal-<first LSN, 20 digits>.seg`: names sort in LSN order.
pub fn segment_name(first_lsn: Lsn) -> String {
    format!("{SEGMENT_PREFIX}{first_lsn:020}{SEGMENT_SUFFIX}")
}

fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    parse_numbered(name, SEGMENT_PREFIX, SEGMENT_SUFFIX)
}

pub fn snapshot_name(lsn: Lsn) -> String {
    format!("{SNAPSHOT_PREFIX}{lsn:020}{SNAPSHOT_SUFFIX}")
}

pub fn parse_snapshot_name(name: &str) -> Option<Lsn> {
    parse_numbered(name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX)
}

/// Reader names: 1..=64 of `[A-Za-z0-9_-]`, so they are always safe as a file name.
pub fn valid_reader_name(reader: &str) -> bool {
    !reader.is_empty()
        && reader.len() <= 64
        && reader.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn checkpoint_name(reader: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{reader}{CHECKPOINT_SUFFIX}")
}

pub fn parse_checkpoint_name(name: &str) -> Option<&str> {
    let r = name.strip_prefix(CHECKPOINT_PREFIX)?.strip_suffix(CHECKPOINT_SUFFIX)?;
    valid_reader_name(r).then_some(r)
}

/// Sorted `(first_lsn, name)` of the segment files among `names`.
pub fn segments_in(names: &[String]) -> Vec<(Lsn, String)> {
    let mut segs: Vec<(Lsn, String)> =
        names.iter().filter_map(|n| parse_segment_name(n).map(|l| (l, n.clone()))).collect();
    segs.sort();
    segs
}

/// A random salt for a new log: /dev/urandom, or (if that fails) a mix of the clock, the
/// process id and a stack address. It only has to be unguessable by whoever writes payloads.
pub fn new_salt() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return u64::from_le_bytes(b);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let mixed = nanos ^ (std::process::id() as u64).rotate_left(32) ^ (&local as *const u8 as u64);
    // splitmix64 finalizer
    let mut z = mixed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A torn or zeroed tail that open cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    /// Path (or name) of the segment file.
    pub file: String,
    /// Byte offset in that file where the log now ends.
    pub offset: u64,
    /// The LSN the next record will get (the first LSN that was not recovered).
    pub lsn: Lsn,
    /// Why the bytes at `offset` were not a record.
    pub reason: String,
    /// How many bytes after `offset` were non-zero (and were zeroed by open).
    pub discarded_bytes: u64,
}

pub struct SegmentScan {
    pub records: u64,
    /// File offset just past the last recovered frame.
    pub end_offset: usize,
    /// LSN after the last recovered record.
    pub next_lsn: Lsn,
    /// For the last segment: the cut, if anything had to be cut.
    pub cut: Option<TailCut>,
}

/// Validates the frames of one segment. Sealed (non-last) segments must be perfect; in the
/// last segment a damaged region may only be the tail of the last write (see FORMAT.md,
/// "Open"), otherwise it is corruption and open stops. With `lsn_max` (a read-only open of
/// a log a writer may still be writing) the scan ends cleanly after that LSN: what follows
/// may be a write in flight, neither damage nor a tail to judge.
pub fn scan_segment(
    file: &str,
    bytes: &[u8],
    first_lsn: Lsn,
    salt: u64,
    is_last: bool,
    lsn_max: Option<Lsn>,
) -> Result<SegmentScan, WalError> {
    assert!(bytes.len() >= SEGMENT_HEADER_SIZE);
    let mut offset = SEGMENT_HEADER_SIZE;
    let mut expect = first_lsn;
    let mut records: u64 = 0;
    let mut group_start: Option<(usize, Lsn, u64)> = None;
    let stop: Option<&'static str>;
    // Bounded by the segment length: every iteration advances by at least one frame.
    loop {
        if lsn_max.is_some_and(|max| expect > max) && group_start.is_none() {
            return Ok(SegmentScan { records, end_offset: offset, next_lsn: expect, cut: None });
        }
        match format::read_frame(bytes, offset, salt) {
            Frame::Valid { record, size } if record.lsn == expect => {
                if record.group_continues() {
                    if group_start.is_none() {
                        group_start = Some((offset, expect, records));
                    }
                } else {
                    group_start = None;
                }
                offset += size;
                expect += 1;
                records += 1;
            }
            Frame::Valid { .. } => {
                stop = Some("LSN out of sequence");
                break;
            }
            Frame::End => {
                stop = None;
                break;
            }
            Frame::Invalid { reason } => {
                stop = Some(reason);
                break;
            }
        }
    }
    let (good_offset, good_next, good_records) = match group_start {
        Some(g) => g,
        None => (offset, expect, records),
    };
    if !is_last {
        if let Some(reason) = stop {
            return Err(WalError::corrupt(file, offset as u64, reason));
        }
        if group_start.is_some() {
            return Err(WalError::corrupt(
                file,
                good_offset as u64,
                "atomic group incomplete at the end of a sealed segment",
            ));
        }
        return Ok(SegmentScan { records, end_offset: offset, next_lsn: expect, cut: None });
    }
    // Last segment. Anything non-zero after the stop point?
    let dirty_end = match bytes[offset..].iter().rposition(|&b| b != 0) {
        Some(i) => offset + i + 1,
        None => offset,
    };
    if let Some((at, lsn)) = later_write_after(bytes, offset, dirty_end, expect, salt) {
        return Err(WalError::corrupt(
            file,
            offset as u64,
            format!(
                "{} at LSN {expect}, but a later write (LSN {lsn} at offset {at}) follows: \
                 damage inside the durable log, not a torn tail",
                stop.unwrap_or("zeroed bytes")
            ),
        ));
    }
    let damaged = stop.is_some() || group_start.is_some() || dirty_end > offset;
    let cut = damaged.then(|| TailCut {
        file: file.to_string(),
        offset: good_offset as u64,
        lsn: good_next,
        reason: match (stop, group_start.is_some()) {
            (_, true) => "atomic group incomplete at the tail".to_string(),
            (Some(r), false) => r.to_string(),
            (None, false) => "zeroed bytes followed by parts of the same write".to_string(),
        },
        discarded_bytes: (dirty_end.max(offset) - good_offset) as u64,
    });
    Ok(SegmentScan { records: good_records, end_offset: good_offset, next_lsn: good_next, cut })
}

/// Looks at aligned positions in `[from, to)` for a valid frame written by a *later* write
/// than the one holding LSN `expect`. The writer starts a write only after the previous one
/// is durable, so such a frame proves the damage at `from` is not a torn tail.
fn later_write_after(bytes: &[u8], from: usize, to: usize, expect: Lsn, salt: u64) -> Option<(usize, Lsn)> {
    let mut at = from;
    while at + FRAME_HEADER_SIZE <= to {
        // Cheap filter before the checksum: version byte and reserved byte.
        if bytes[at + 21] == format::FORMAT_VERSION && bytes[at + 23] == 0 {
            if let Frame::Valid { record, .. } = format::read_frame(bytes, at, salt) {
                if record.batch_first_lsn > expect {
                    return Some((at, record.lsn));
                }
            }
        }
        at += FRAME_ALIGN;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_snapshot_name(&snapshot_name(7)), Some(7));
        assert_eq!(parse_checkpoint_name(&checkpoint_name("relay-1")), Some("relay-1"));
        assert_eq!(parse_segment_name("wal-12.seg"), None);
        assert!(!valid_reader_name("../x"));
    }
}
