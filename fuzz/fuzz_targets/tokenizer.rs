//! `tokenizer.json`: parsing through `tokenizers` with lopper's settings (no padding, no
//! truncation), then encoding two fixed sentences.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_model::bert::runtime::{encode_text, parse_tokenizer};

#[path = "quiet.rs"]
mod quiet;

fuzz_target!(init: quiet::quiet_caught_panics(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = parse_tokenizer(text) {
        let _ = encode_text(&t, "The quick brown fox; naïve café, 3.14!");
        let _ = encode_text(&t, "");
    }
});
