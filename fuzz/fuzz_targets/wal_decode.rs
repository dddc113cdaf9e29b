//! The WAL decoder on arbitrary bytes: never panics, and never returns a record whose
//! checksum does not match (every returned record re-encodes to the bytes it came from).
//! Run: `cargo install cargo-fuzz`, then `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run wal_decode`.
//! The same property runs in CI as a proptest: `wal/tests/decode_random.rs`.
#![no_main]

use surge_wal::format;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    // The first 8 bytes (if any) are the log's checksum salt, the rest is segment body.
    let (salt, data) = match input.split_first_chunk::<8>() {
        Some((s, rest)) => (u64::from_le_bytes(*s), rest),
        None => (0, input),
    };
    let decoded = format::decode_records(data, salt, 100_000);
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
        let covered = format::FRAME_HEADER_SIZE + r.payload.len();
        assert_eq!(&data[offset..offset + covered], &again[..covered]);
        offset += format::frame_size(r.payload.len());
    }
    assert_eq!(offset, decoded.end_offset);
    for at in 0..data.len().min(32) {
        let _ = format::read_frame(data, at, salt);
    }
    let _ = format::decode_segment_header(data);
    let _ = format::decode_snapshot(data);
    let _ = format::decode_checkpoint(data);
});
