//! The binary batch decoder (`surge_client::wire`) on arbitrary bytes: it never panics,
//! every op resolves or is refused, and a batch whose ops all resolve re-encodes to the
//! same ops (`wire::check_decoder`, which the crate's proptests run too).
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run batch_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    surge_client::wire::check_decoder(data);
});
