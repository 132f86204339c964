//! Training recipes (TOML): parsing and validation (`Recipe::parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_train::recipe::Recipe;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Recipe::parse(std::path::Path::new("fuzz.toml"), text);
});
