//! The WAL decoder on arbitrary bytes: never panics, and never returns a record whose
//! checksum does not match (every returned record re-encodes to the bytes it came from).
//! Run: `cargo install cargo-fuzz`, then `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run wal_decode`.
//! The property itself is `surge_wal::decode_check::check_decoders`; CI runs it as a
//! proptest in `wal/tests/decode_random.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    // The first 8 bytes (if any) are the log's checksum salt, the rest is segment body.
    let (salt, data) = match input.split_first_chunk::<8>() {
        Some((s, rest)) => (u64::from_le_bytes(*s), rest),
        None => (0, input),
    };
    surge_wal::decode_check::check_decoders(data, salt);
});
