//! Arbitrary command sequences against surge-core: `sim::World` decodes the bytes into
//! requests, ticks, retries and snapshots across several merchants and shards, and panics
//! (which libFuzzer reports) when any invariant breaks after any step, when a refused
//! command changes state, when a replayed reply differs, or when replay or
//! snapshot/restore gives another digest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    surge_core::sim::World::run(data);
});
