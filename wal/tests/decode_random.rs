//! The decoder on arbitrary bytes (what `fuzz/fuzz_targets/wal_decode.rs` does, here run by
//! proptest in CI): never panics, and every record it returns re-encodes to exactly the
//! bytes it was decoded from, so its checksum matches.

use proptest::prelude::*;
use surge_wal::format::{self, decode_records, Stop};

fn check(bytes: &[u8], salt: u64) {
    surge_wal::decode_check::check_decoders(bytes, salt);
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
