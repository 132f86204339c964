//! Encoder `.lop` files: the reader (`Bert::from_lop_bytes`), then for small encoders the stored
//! runner and one sentence through tokenizer and forward pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_model::bert::{Bert, BertRunner};
use lopper_model::file::set_verify_digest;

#[path = "quiet.rs"]
mod quiet;

fuzz_target!(init: quiet::quiet_caught_panics(), |data: &[u8]| {
    set_verify_digest(false);
    let Ok((bert, _notes)) = Bert::from_lop_bytes(data) else {
        return;
    };
    let c = &bert.config;
    let per_token = c.hidden_size.saturating_mul(c.intermediate_size.max(c.hidden_size));
    if per_token.saturating_mul(c.num_hidden_layers) > 1 << 16 || bert.max_seq_len > 64 {
        return;
    }
    let Ok(mut runner) = BertRunner::stored(bert) else {
        return;
    };
    if let Ok(enc) = runner.encode(&["a fuzzed model reads a short sentence", ""]) {
        let _ = runner.embed(&enc);
    }
});
