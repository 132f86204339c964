//! Hugging Face `config.json` (and the sentence-transformers pooling `config.json`): parsing and
//! validation of the encoder shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_model::bert::config::pooling_from_json;
use lopper_model::bert::BertConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = BertConfig::from_hf_json(text) {
        let _ = c.validate();
    }
    let _ = pooling_from_json(text);
});
