//! `.npy` inputs (`lopper run --input X.npy`): header, dtype, order and shape checks against a
//! model input of shape [4], then the values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_model::npy::read_input;

fuzz_target!(|data: &[u8]| {
    let _ = read_input(std::path::Path::new("fuzz.npy"), data, "input", &[4]);
});
