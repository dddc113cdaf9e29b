//! The decoder property that the `wal_decode` fuzz target and the `decode_random` proptests
//! both assert, kept here so the two cannot drift apart: on any bytes the decoders never
//! panic, and every record `decode_records` returns re-encodes to exactly the bytes it was
//! decoded from (so its checksum matched), in LSN order, back to back.

use crate::format::{self, decode_records, frame_size};

/// Panics (which is what a fuzzer or a test reports) when the property does not hold.
pub fn check_decoders(bytes: &[u8], salt: u64) {
    let decoded = decode_records(bytes, salt, 100_000);
    let mut offset = 0usize;
    for r in &decoded.records {
        let mut again = Vec::new();
        format::encode_frame(
            &mut again,
            salt,
            r.lsn,
            r.batch_first_lsn,
            r.record_type,
            r.flags,
            r.payload,
            format::payload_crc(salt, r.payload),
        );
        // Header and payload identical; the padding is not covered by the checksum.
        let covered = format::FRAME_HEADER_SIZE + r.payload.len();
        assert_eq!(&bytes[offset..offset + covered], &again[..covered], "record at offset {offset}");
        offset += frame_size(r.payload.len());
    }
    assert_eq!(offset, decoded.end_offset);
    assert!(decoded.end_offset <= bytes.len());
    for pair in decoded.records.windows(2) {
        assert_eq!(pair[0].lsn + 1, pair[1].lsn);
    }
    // Every start offset, not just 0, for the single-frame reader.
    for at in 0..bytes.len().min(64) {
        let _ = format::read_frame(bytes, at, salt);
    }
    let _ = format::decode_segment_header(bytes);
    let _ = format::decode_snapshot(bytes);
    let _ = format::decode_checkpoint(bytes);
}
