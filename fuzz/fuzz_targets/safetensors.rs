//! `model.safetensors` of a Hugging Face encoder: header and tensor decoding against a small
//! fixed configuration (hidden 8, 2 heads, 1 layer, 16-word vocabulary: the committed seeds are
//! built to it by fuzz/make_seeds.py).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_model::bert::import::from_safetensors;
use lopper_model::bert::{BertConfig, Pooling};

const CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
  "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16,
  "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#;

const TOKENIZER: &str = include_str!("../seeds/tokenizer/tiny-bert.json");

#[path = "quiet.rs"]
mod quiet;

fuzz_target!(init: quiet::quiet_caught_panics(), |data: &[u8]| {
    let config = BertConfig::from_hf_json(CONFIG).expect("the fixed config parses");
    if let Ok(bert) = from_safetensors(data, config, Pooling::Mean, true, 16, TOKENIZER.to_string()) {
        let _ = bert.validate();
    }
});
