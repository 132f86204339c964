//! IDX arrays, raw and gzip (`parse_idx_limited`): the header is checked before any payload is
//! read or inflated, and nothing beyond the header's promise (or the 1 MiB limit set here) is
//! allocated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_train::data::idx::parse_idx_limited;

fuzz_target!(|data: &[u8]| {
    let _ = parse_idx_limited(std::path::Path::new("fuzz.idx"), data, 1 << 20);
});
