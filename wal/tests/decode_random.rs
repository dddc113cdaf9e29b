//! The decoder on arbitrary bytes (what `fuzz/fuzz_targets/wal_decode.rs` does, here run by
//! proptest in CI): never panics, and every record it returns re-encodes to exactly the
//! bytes it was decoded from, so its checksum matches.

use proptest::prelude::*;
use surge_wal::format::{self, decode_records, frame_size, Stop};

/// The fuzz property, shared in spirit with the fuzz target.
fn check(bytes: &[u8], salt: u64) {
    let d = decode_records(bytes, salt, 10_000);
    let mut offset = 0usize;
    for r in &d.records {
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
        let size = frame_size(r.payload.len());
        // Header and payload identical; padding is not covered by the checksum.
        let covered = format::FRAME_HEADER_SIZE + r.payload.len();
        assert_eq!(&bytes[offset..offset + covered], &again[..covered]);
        offset += size;
    }
    assert_eq!(offset, d.end_offset);
    assert!(d.end_offset <= bytes.len());
    for w in d.records.windows(2) {
        assert_eq!(w[0].lsn + 1, w[1].lsn);
    }
    // Every offset, not just 0, for read_frame.
    for at in 0..bytes.len().min(64) {
        let _ = format::read_frame(bytes, at, salt);
    }
    let _ = format::decode_segment_header(bytes);
    let _ = format::decode_snapshot(bytes);
    let _ = format::decode_checkpoint(bytes);
}

fn valid_log(payloads: &[Vec<u8>], first_lsn: u64, salt: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let lsn = first_lsn + i as u64;
        format::encode_frame(&mut out, salt, lsn, first_lsn, (i % 5) as u8, 0, p, format::payload_crc(salt, p));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), salt in any::<u64>()) {
        check(&bytes, salt);
        check(&bytes, 0);
    }

    #[test]
    fn mutated_valid_logs_never_yield_bad_records(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..12),
        first_lsn in 1u64..1_000_000,
        salt in any::<u64>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_log(&payloads, first_lsn, salt);
        let clean = decode_records(&bytes, salt, 10_000);
        prop_assert!(decode_records(&bytes, salt ^ 1, 10_000).records.is_empty());
        prop_assert_eq!(clean.records.len(), payloads.len());
        prop_assert_eq!(clean.stop, Stop::End);
        for (idx, x) in &flips {
            let i = idx.index(bytes.len());
            bytes[i] ^= x;
        }
        check(&bytes, salt);
        let cut_at = cut.index(bytes.len() + 1);
        check(&bytes[..cut_at], salt);
    }
}
