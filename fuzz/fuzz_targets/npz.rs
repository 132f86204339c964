//! `.npz` inputs (`lopper run --input X.npz`, `prune --calib/--eval`): the zip archive, the
//! array picked by the graph input's name, then as `.npy` against a model input of shape [4].
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_model::npy::read_input;

fuzz_target!(|data: &[u8]| {
    let _ = read_input(std::path::Path::new("fuzz.npz"), data, "input", &[4]);
});
