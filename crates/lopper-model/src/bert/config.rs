//! The BERT-family configuration lopper supports, read from a Hugging Face `config.json` and a
//! sentence-transformers `1_Pooling/config.json`. Anything outside what the runtime implements
//! (another activation, relative positions, a decoder) is refused by name rather than run
//! wrongly.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ModelError;

/// Largest dimension accepted from a config (guards allocations against hostile files).
const MAX_DIM: usize = 1 << 20;

/// The encoder hyper-parameters lopper runs; stored as is in a `.lop` file's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over the non-padding tokens (sentence-transformers `pooling_mode_mean_tokens`).
    Mean,
    /// The first token's vector.
    Cls,
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Reads and checks a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self, ModelError> {
        let text = read_text(path)?;
        Self::from_hf_json(&text).map_err(|e| e.in_file(path))
    }

    pub fn from_hf_json(text: &str) -> Result<Self, ModelError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| ModelError::Config(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ModelError::Config("the top level is not an object".into()))?;
        let string = |key: &str| obj.get(key).and_then(Value::as_str);
        match string("model_type") {
            Some("bert") => {}
            other => {
                return Err(ModelError::Config(format!(
                    "model_type is {other:?}; only \"bert\" is supported"
                )))
            }
        }
        match string("hidden_act") {
            Some("gelu") | None => {}
            Some(a) => {
                return Err(ModelError::Config(format!(
                    "hidden_act \"{a}\" is not supported (only \"gelu\", the erf form)"
                )))
            }
        }
        match string("position_embedding_type") {
            Some("absolute") | None => {}
            Some(p) => {
                return Err(ModelError::Config(format!(
                    "position_embedding_type \"{p}\" is not supported (only \"absolute\")"
                )))
            }
        }
        if obj.get("is_decoder").and_then(Value::as_bool) == Some(true) {
            return Err(ModelError::Config(
                "is_decoder is true; only encoders are supported".into(),
            ));
        }
        let size = |key: &str| -> Result<usize, ModelError> {
            let n = obj
                .get(key)
                .ok_or_else(|| ModelError::Config(format!("{key} is missing")))?
                .as_u64()
                .ok_or_else(|| ModelError::Config(format!("{key} is not a positive integer")))?;
            if n == 0 || n as usize > MAX_DIM {
                return Err(ModelError::Config(format!(
                    "{key} = {n} is outside 1..={MAX_DIM}"
                )));
            }
            Ok(n as usize)
        };
        let eps = match obj.get("layer_norm_eps") {
            None => 1e-12,
            Some(e) => e
                .as_f64()
                .filter(|e| e.is_finite() && *e > 0.0 && *e < 1.0)
                .ok_or_else(|| ModelError::Config("layer_norm_eps must be in (0, 1)".into()))?
                as f32,
        };
        let c = BertConfig {
            vocab_size: size("vocab_size")?,
            hidden_size: size("hidden_size")?,
            num_hidden_layers: size("num_hidden_layers")?,
            num_attention_heads: size("num_attention_heads")?,
            intermediate_size: size("intermediate_size")?,
            max_position_embeddings: size("max_position_embeddings")?,
            type_vocab_size: size("type_vocab_size")?,
            layer_norm_eps: eps,
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks the relations between fields (also run on configs read from `.lop` files).
    pub fn validate(&self) -> Result<(), ModelError> {
        let dims = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (k, v) in dims {
            if v == 0 || v > MAX_DIM {
                return Err(ModelError::Config(format!(
                    "{k} = {v} is outside 1..={MAX_DIM}"
                )));
            }
        }
        if self.num_hidden_layers > 256 {
            return Err(ModelError::Config(format!(
                "num_hidden_layers = {} is over 256",
                self.num_hidden_layers
            )));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ModelError::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(ModelError::Config("layer_norm_eps must be positive".into()));
        }
        Ok(())
    }
}

/// A text file of a model folder; a read failure names the file.
pub(crate) fn read_text(path: &Path) -> Result<String, ModelError> {
    crate::limits::read_text(path).map_err(|e| e.in_file(path))
}

/// Reads a sentence-transformers pooling config; exactly one supported mode must be on.
pub fn pooling_from_file(path: &Path) -> Result<Pooling, ModelError> {
    let text = read_text(path)?;
    pooling_from_json(&text).map_err(|e| e.in_file(path))
}

pub fn pooling_from_json(text: &str) -> Result<Pooling, ModelError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| ModelError::Config(format!("not JSON: {e}")))?;
    let on = |k: &str| v.get(k).and_then(Value::as_bool) == Some(true);
    let unsupported = [
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ];
    if let Some(k) = unsupported.iter().find(|k| on(k)) {
        return Err(ModelError::Config(format!("{k} is not supported")));
    }
    match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
        (true, false) => Ok(Pooling::Mean),
        (false, true) => Ok(Pooling::Cls),
        (true, true) => Err(ModelError::Config(
            "both mean and CLS pooling are on; concatenated poolings are not supported".into(),
        )),
        (false, false) => Err(ModelError::Config(
            "no supported pooling mode is on (mean or CLS)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"model_type":"bert","hidden_act":"gelu","hidden_size":384,
        "intermediate_size":1536,"num_attention_heads":12,"num_hidden_layers":6,
        "max_position_embeddings":512,"type_vocab_size":2,"vocab_size":30522,
        "layer_norm_eps":1e-12,"position_embedding_type":"absolute"}"#;

    #[test]
    fn reads_minilm() {
        let c = BertConfig::from_hf_json(MINILM).unwrap();
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.num_hidden_layers, 6);
    }

    #[test]
    fn rejects_unsupported_values() {
        for (from, to, word) in [
            ("\"gelu\"", "\"relu\"", "hidden_act"),
            ("\"bert\"", "\"gpt2\"", "model_type"),
            (
                "\"absolute\"",
                "\"relative_key\"",
                "position_embedding_type",
            ),
            (
                "\"num_attention_heads\":12",
                "\"num_attention_heads\":7",
                "multiple",
            ),
            ("\"hidden_size\":384", "\"hidden_size\":0", "hidden_size"),
            ("\"vocab_size\":30522", "\"vocab_size\":-1", "vocab_size"),
        ] {
            let text = MINILM.replace(from, to);
            let e = BertConfig::from_hf_json(&text).unwrap_err().to_string();
            assert!(e.contains(word), "{to}: {e}");
        }
        let e = BertConfig::from_hf_json(&MINILM.replace("\"vocab_size\":30522,", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vocab_size is missing"), "{e}");
    }

    #[test]
    fn pooling_modes() {
        let mean = r#"{"pooling_mode_mean_tokens":true,"pooling_mode_cls_token":false}"#;
        assert_eq!(pooling_from_json(mean).unwrap(), Pooling::Mean);
        let max = r#"{"pooling_mode_mean_tokens":false,"pooling_mode_max_tokens":true}"#;
        assert!(pooling_from_json(max)
            .unwrap_err()
            .to_string()
            .contains("max_tokens"));
        assert!(pooling_from_json("{}").is_err());
    }
}
