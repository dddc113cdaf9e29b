//! On-disk framing, byte for byte. `wal/FORMAT.md` is the prose version of this file; keep
//! the two in step (and bump the version log there when anything here changes).
//!
//! Everything is little-endian. Decoding never panics on any input: every length is checked
//! against the bytes that are actually there before it is used.

use crate::Lsn;

/// Version byte written into every frame and every file header.
pub const FORMAT_VERSION: u8 = 1;

// ---------------------------------------------------------------------------------------
// Record frames
// ---------------------------------------------------------------------------------------

/// Bytes of a frame header:
/// `crc32c u32 | payload_len u32 | lsn u64 | batch_back u32 | type u8 | version u8 | flags u8 | 0 u8`.
pub const FRAME_HEADER_SIZE: usize = 24;
/// Frames start at multiples of this (relative to the start of the segment) so that a
/// torn-tail scan only has to look at aligned positions.
pub const FRAME_ALIGN: usize = 8;
/// Hard cap on a payload regardless of configuration: a corrupt length field can never make
/// the decoder look further than this.
pub const PAYLOAD_SIZE_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Set on every record of an atomic group except the last. A group whose last record is
/// missing is cut off as a whole.
pub const FLAG_GROUP_CONTINUES: u8 = 0b0000_0001;
const FLAGS_KNOWN: u8 = FLAG_GROUP_CONTINUES;

/// Total bytes a frame with this payload occupies, padding included.
pub const fn frame_size(payload_len: usize) -> usize {
    (FRAME_HEADER_SIZE + payload_len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// CRC32C (Castagnoli) of the log's salt (8 bytes, LE) followed by the payload. Computed by
/// the appender outside any lock.
///
/// The salt is a random number fixed when the log is created and stored in every segment
/// header. Seeding every frame checksum with it means bytes that merely *look* like a frame
/// (a record payload embedding a frame image, or leftovers of another log) never validate,
/// so the torn-tail analysis at open cannot be fooled by record contents.
pub fn payload_crc(salt: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), payload)
}

/// The frame checksum: CRC32C over salt, payload, then header bytes 4..24.
fn frame_crc(payload_crc: u32, header_tail: &[u8]) -> u32 {
    crc32c::crc32c_append(payload_crc, header_tail)
}

/// Appends one frame to `out`. `payload_crc` must be `payload_crc(payload)`.
#[allow(clippy::too_many_arguments)]
pub fn encode_frame(
    out: &mut Vec<u8>,
    salt: u64,
    lsn: Lsn,
    batch_first_lsn: Lsn,
    record_type: u8,
    flags: u8,
    payload: &[u8],
    payload_crc: u32,
) {
    assert!(lsn >= 1, "LSN 0 is reserved for 'nothing'");
    assert!(batch_first_lsn <= lsn && lsn - batch_first_lsn <= u32::MAX as u64);
    assert!(payload.len() <= PAYLOAD_SIZE_BYTES_MAX as usize);
    assert_eq!(flags & !FLAGS_KNOWN, 0);
    debug_assert_eq!(payload_crc, self::payload_crc(salt, payload));
    let _ = salt; // used by the debug assertion only: `payload_crc` already includes it
    let start = out.len();
    let mut header = [0u8; FRAME_HEADER_SIZE];
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header[16..20].copy_from_slice(&((lsn - batch_first_lsn) as u32).to_le_bytes());
    header[20] = record_type;
    header[21] = FORMAT_VERSION;
    header[22] = flags;
    header[23] = 0;
    let crc = frame_crc(payload_crc, &header[4..]);
    header[0..4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out.resize(start + frame_size(payload.len()), 0);
}

/// A decoded record borrowing its payload from the underlying bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: Lsn,
    /// Caller-chosen record type byte.
    pub record_type: u8,
    pub flags: u8,
    /// LSN of the first record of the write batch this record was written in.
    pub batch_first_lsn: Lsn,
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    pub fn group_continues(&self) -> bool {
        self.flags & FLAG_GROUP_CONTINUES != 0
    }

    pub fn to_owned_record(&self) -> Record {
        Record { lsn: self.lsn, record_type: self.record_type, payload: self.payload.to_vec() }
    }
}

/// An owned record, as handed out by tailers that cannot lend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub record_type: u8,
    pub payload: Vec<u8>,
}

/// The outcome of looking at the bytes where a frame should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete frame whose checksum matches; `size` includes padding.
    Valid { record: RecordRef<'a>, size: usize },
    /// All-zero header (or fewer than a header's worth of zero bytes): nothing written here.
    End,
    /// Something is here but it is not a valid frame.
    Invalid { reason: &'static str },
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Looks at `buf[offset..]` for one frame. Never panics, whatever `buf` and `offset` are.
pub fn read_frame(buf: &[u8], offset: usize, salt: u64) -> Frame<'_> {
    let rest = match buf.get(offset..) {
        Some(r) => r,
        None => return Frame::End,
    };
    if rest.len() < FRAME_HEADER_SIZE {
        return if rest.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Invalid { reason: "truncated frame header" }
        };
    }
    let header = &rest[..FRAME_HEADER_SIZE];
    if header.iter().all(|&b| b == 0) {
        return Frame::End;
    }
    let stored_crc = le_u32(header, 0);
    let payload_len = le_u32(header, 4);
    let lsn = le_u64(header, 8);
    let batch_back = le_u32(header, 16);
    let (record_type, version, flags, reserved) = (header[20], header[21], header[22], header[23]);
    if version != FORMAT_VERSION {
        return Frame::Invalid { reason: "unknown frame version" };
    }
    if reserved != 0 || flags & !FLAGS_KNOWN != 0 {
        return Frame::Invalid { reason: "reserved header bits set" };
    }
    if payload_len > PAYLOAD_SIZE_BYTES_MAX {
        return Frame::Invalid { reason: "payload length beyond format maximum" };
    }
    if lsn == 0 || (batch_back as u64) >= lsn {
        return Frame::Invalid { reason: "impossible LSN" };
    }
    let size = frame_size(payload_len as usize);
    if size > rest.len() {
        return Frame::Invalid { reason: "frame extends past end of data" };
    }
    let payload = &rest[FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + payload_len as usize];
    let crc = frame_crc(payload_crc(salt, payload), &header[4..]);
    if crc != stored_crc {
        return Frame::Invalid { reason: "checksum mismatch" };
    }
    Frame::Valid {
        record: RecordRef { lsn, record_type, flags, batch_first_lsn: lsn - batch_back as u64, payload },
        size,
    }
}

/// Where and why [`decode_records`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Clean end: zeros or end of input.
    End,
    /// Bytes that are not a valid continuation of the log.
    Invalid { reason: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub records: Vec<RecordRef<'a>>,
    /// Offset just past the last returned record.
    pub end_offset: usize,
    pub stop: Stop,
}

/// Decodes consecutive frames from the start of `bytes` (a segment body) until the first
/// thing that is not a valid frame with the next LSN. This is the function the fuzzer drives:
/// it must never panic and never return a record whose checksum does not match.
/// `records_max` bounds the work and the memory of one call.
pub fn decode_records(bytes: &[u8], salt: u64, records_max: usize) -> Decoded<'_> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut stop = Stop::End;
    while records.len() < records_max {
        match read_frame(bytes, offset, salt) {
            Frame::Valid { record, size } => {
                if let Some(prev) = records.last() {
                    let prev: &RecordRef<'_> = prev;
                    if prev.lsn.checked_add(1) != Some(record.lsn) {
                        stop = Stop::Invalid { reason: "LSN does not follow the previous record" };
                        break;
                    }
                }
                records.push(record);
                offset += size;
            }
            Frame::End => break,
            Frame::Invalid { reason } => {
                stop = Stop::Invalid { reason };
                break;
            }
        }
    }
    Decoded { records, end_offset: offset, stop }
}

// ---------------------------------------------------------------------------------------
// Segment header
// ---------------------------------------------------------------------------------------

pub const SEGMENT_MAGIC: [u8; 8] = *b"SURGEWAL";
/// `magic [8] | version u32 | header_size u32 | first_lsn u64 | segment_size u64 |
/// salt u64 | reserved [20] zero | crc32c u32 of bytes 0..60`.
pub const SEGMENT_HEADER_SIZE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_lsn: Lsn,
    pub segment_size_bytes: u64,
    /// The log's checksum salt (see [`payload_crc`]).
    pub salt: u64,
}

pub fn encode_segment_header(h: &SegmentHeader) -> [u8; SEGMENT_HEADER_SIZE] {
    let mut b = [0u8; SEGMENT_HEADER_SIZE];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&(FORMAT_VERSION as u32).to_le_bytes());
    b[12..16].copy_from_slice(&(SEGMENT_HEADER_SIZE as u32).to_le_bytes());
    b[16..24].copy_from_slice(&h.first_lsn.to_le_bytes());
    b[24..32].copy_from_slice(&h.segment_size_bytes.to_le_bytes());
    b[32..40].copy_from_slice(&h.salt.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, &'static str> {
    if b.len() < SEGMENT_HEADER_SIZE {
        return Err("file shorter than a segment header");
    }
    if b[0..SEGMENT_HEADER_SIZE].iter().all(|&x| x == 0) {
        return Err("segment header is all zeros");
    }
    if b[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic");
    }
    if le_u32(b, 60) != crc32c::crc32c(&b[0..60]) {
        return Err("segment header checksum mismatch");
    }
    if le_u32(b, 8) != FORMAT_VERSION as u32 || le_u32(b, 12) != SEGMENT_HEADER_SIZE as u32 {
        return Err("unsupported segment version");
    }
    let first_lsn = le_u64(b, 16);
    if first_lsn == 0 {
        return Err("segment first LSN is 0");
    }
    Ok(SegmentHeader { first_lsn, segment_size_bytes: le_u64(b, 24), salt: le_u64(b, 32) })
}

// ---------------------------------------------------------------------------------------
// Snapshot file
// ---------------------------------------------------------------------------------------

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SURGESNP";
/// `magic [8] | version u32 | header_size u32 | lsn u64 | payload_len u64 |
/// payload crc32c u32 | header crc32c u32 of bytes 0..36`, then the payload.
pub const SNAPSHOT_HEADER_SIZE: usize = 40;

pub fn encode_snapshot_header(lsn: Lsn, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_SIZE] {
    let mut b = [0u8; SNAPSHOT_HEADER_SIZE];
    b[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    b[8..12].copy_from_slice(&(FORMAT_VERSION as u32).to_le_bytes());
    b[12..16].copy_from_slice(&(SNAPSHOT_HEADER_SIZE as u32).to_le_bytes());
    b[16..24].copy_from_slice(&lsn.to_le_bytes());
    b[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    b[32..36].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&b[0..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Validates a whole snapshot file and returns `(lsn, payload)`.
pub fn decode_snapshot(b: &[u8]) -> Result<(Lsn, &[u8]), &'static str> {
    if b.len() < SNAPSHOT_HEADER_SIZE {
        return Err("file shorter than a snapshot header");
    }
    if b[0..8] != SNAPSHOT_MAGIC {
        return Err("bad snapshot magic");
    }
    if le_u32(b, 36) != crc32c::crc32c(&b[0..36]) {
        return Err("snapshot header checksum mismatch");
    }
    if le_u32(b, 8) != FORMAT_VERSION as u32 || le_u32(b, 12) != SNAPSHOT_HEADER_SIZE as u32 {
        return Err("unsupported snapshot version");
    }
    let lsn = le_u64(b, 16);
    let len = le_u64(b, 24);
    if len != (b.len() - SNAPSHOT_HEADER_SIZE) as u64 {
        return Err("snapshot length does not match file size");
    }
    let payload = &b[SNAPSHOT_HEADER_SIZE..];
    if le_u32(b, 32) != crc32c::crc32c(payload) {
        return Err("snapshot payload checksum mismatch");
    }
    Ok((lsn, payload))
}

// ---------------------------------------------------------------------------------------
// Reader checkpoint file and durable watermark file
// ---------------------------------------------------------------------------------------

pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SURGECKP";
/// `magic [8] | version u32 | reserved u32 | lsn u64 | crc32c u32 of bytes 0..24 | 0 u32`.
pub const CHECKPOINT_SIZE: usize = 32;

pub fn encode_checkpoint(lsn: Lsn) -> [u8; CHECKPOINT_SIZE] {
    let mut b = [0u8; CHECKPOINT_SIZE];
    b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    b[8..12].copy_from_slice(&(FORMAT_VERSION as u32).to_le_bytes());
    b[16..24].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

pub fn decode_checkpoint(b: &[u8]) -> Result<Lsn, &'static str> {
    if b.len() != CHECKPOINT_SIZE || b[0..8] != CHECKPOINT_MAGIC {
        return Err("bad checkpoint file");
    }
    if le_u32(b, 24) != crc32c::crc32c(&b[0..24]) {
        return Err("checkpoint checksum mismatch");
    }
    if le_u32(b, 8) != FORMAT_VERSION as u32 {
        return Err("unsupported checkpoint version");
    }
    Ok(le_u64(b, 16))
}

pub const WATERMARK_MAGIC: [u8; 8] = *b"SURGEDUR";
/// `magic [8] | version u32 | 0 u32 | durable_lsn u64 (updated in place, atomically) | 0 [8]`.
pub const WATERMARK_SIZE: usize = 32;
pub const WATERMARK_LSN_OFFSET: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip_and_padding() {
        let mut out = Vec::new();
        for (i, len) in [0usize, 1, 7, 8, 128, 1000].iter().enumerate() {
            let payload = vec![i as u8 + 1; *len];
            let lsn = 10 + i as u64;
            encode_frame(&mut out, 99, lsn, 10, 7, 0, &payload, payload_crc(99, &payload));
        }
        assert_eq!(decode_records(&out, 98, 100).records.len(), 0, "another salt never validates");
        let d = decode_records(&out, 99, 100);
        assert_eq!(d.stop, Stop::End);
        assert_eq!(d.records.len(), 6);
        assert_eq!(d.end_offset, out.len());
        assert_eq!(d.records[4].payload.len(), 128);
        assert_eq!(d.records[4].batch_first_lsn, 10);
        assert_eq!(frame_size(128), 152);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut out = Vec::new();
        let payload = b"hello world, this is a record";
        encode_frame(&mut out, 3, 5, 5, 1, 0, payload, payload_crc(3, payload));
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut b = out.clone();
                b[i] ^= 1 << bit;
                match read_frame(&b, 0, 3) {
                    Frame::Valid { record, .. } => {
                        // Only flips in the zero padding are invisible, and they change nothing.
                        assert!(i >= FRAME_HEADER_SIZE + payload.len(), "flip at {i} undetected");
                        assert_eq!(record.payload, payload);
                    }
                    Frame::End | Frame::Invalid { .. } => {}
                }
            }
        }
    }

    #[test]
    fn headers_roundtrip() {
        let h = SegmentHeader { first_lsn: 42, segment_size_bytes: 1 << 20, salt: 0xDEAD_BEEF };
        assert_eq!(decode_segment_header(&encode_segment_header(&h)), Ok(h));
        let mut snap = encode_snapshot_header(9, b"state").to_vec();
        snap.extend_from_slice(b"state");
        assert_eq!(decode_snapshot(&snap), Ok((9, &b"state"[..])));
        snap[41] ^= 1;
        assert!(decode_snapshot(&snap).is_err());
        assert_eq!(decode_checkpoint(&encode_checkpoint(77)), Ok(77));
    }
}
