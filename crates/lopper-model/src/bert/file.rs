//! The `.lop` form of an encoder (spec in `docs/format.md`, "Transformer encoders"): the same
//! safetensors container as graph models, with `__metadata__.bert` instead of `graph`. Tensor
//! names are the Hugging Face ones; Linear weights are `[out, in]` in any lopper storage format
//! (their specs are in the metadata, as for graph models); the tokenizer travels as the U8
//! tensor `tokenizer.json`, so a file is self-contained.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use lopper_kernels::Dtype;
use safetensors::tensor::TensorView;
use safetensors::Dtype as StDtype;
use serde::{Deserialize, Serialize};

use super::{Bert, BertConfig, EncoderLayer, LayerNorm, Linear, Pooling, LINEAR_SUFFIXES};
use crate::convert::{encode_storage, StorageChoice};
use crate::error::ModelError;
use crate::file::{lopper_container, max_file_bytes, read_limited, serialize, write_atomic};
use crate::graph::{WeightSpec, FORMAT_VERSION};
use crate::weights::{self, RawTensor};

const TOKENIZER: &str = "tokenizer.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BertMeta {
    config: BertConfig,
    pooling: Pooling,
    normalize: bool,
    max_seq_len: usize,
    weights: BTreeMap<String, WeightSpec>,
    /// Free-form provenance (source folder, pruning method), shown by `lopper inspect`.
    #[serde(default)]
    notes: BTreeMap<String, String>,
}

impl Bert {
    /// The file bytes, each Linear stored as `storage` (`Auto`: the smallest encoding).
    pub fn to_lop_bytes(
        &self,
        storage: StorageChoice,
        dtype: Dtype,
        notes: BTreeMap<String, String>,
    ) -> Result<Vec<u8>, ModelError> {
        let mut tensors = Vec::new();
        let mut specs = BTreeMap::new();
        let f32t = |name: &str, shape: Vec<usize>, v: &[f32]| RawTensor::f32(name, shape, v);
        let c = &self.config;
        let h = c.hidden_size;
        tensors.push(f32t(
            "embeddings.word_embeddings.weight",
            vec![c.vocab_size, h],
            &self.word,
        ));
        tensors.push(f32t(
            "embeddings.position_embeddings.weight",
            vec![c.max_position_embeddings, h],
            &self.position,
        ));
        tensors.push(f32t(
            "embeddings.token_type_embeddings.weight",
            vec![c.type_vocab_size, h],
            &self.token_type,
        ));
        let ln = |tensors: &mut Vec<RawTensor>, name: &str, l: &LayerNorm| {
            tensors.push(f32t(&format!("{name}.weight"), vec![h], &l.gamma));
            tensors.push(f32t(&format!("{name}.bias"), vec![h], &l.beta));
        };
        ln(&mut tensors, "embeddings.LayerNorm", &self.emb_ln);
        for (i, layer) in self.layers.iter().enumerate() {
            for (s, lin) in LINEAR_SUFFIXES.iter().zip(layer.linears()) {
                let name = format!("encoder.layer.{i}.{s}.weight");
                let (m, format) = encode_storage(&name, &lin.w, storage, dtype)?;
                let (spec, t) = weights::to_tensors(&name, &m, format)?;
                specs.insert(name, spec);
                tensors.extend(t);
                tensors.push(f32t(
                    &format!("encoder.layer.{i}.{s}.bias"),
                    vec![lin.bias.len()],
                    &lin.bias,
                ));
            }
            ln(
                &mut tensors,
                &format!("encoder.layer.{i}.attention.output.LayerNorm"),
                &layer.attn_ln,
            );
            ln(
                &mut tensors,
                &format!("encoder.layer.{i}.output.LayerNorm"),
                &layer.out_ln,
            );
        }
        tensors.push(RawTensor {
            name: TOKENIZER.into(),
            dtype: StDtype::U8,
            shape: vec![self.tokenizer_json.len()],
            data: self.tokenizer_json.as_bytes().to_vec(),
        });
        let meta = BertMeta {
            config: self.config.clone(),
            pooling: self.pooling,
            normalize: self.normalize,
            max_seq_len: self.max_seq_len,
            weights: specs,
            notes,
        };
        let meta_json =
            serde_json::to_string(&meta).map_err(|e| ModelError::GraphJson(e.to_string()))?;
        Ok(serialize(
            &tensors,
            &[
                ("format", "lopper".to_string()),
                ("format_version", FORMAT_VERSION.to_string()),
                ("bert", meta_json),
            ],
        ))
    }

    /// Writes the file atomically; returns its size.
    pub fn write_lop(
        &self,
        path: &Path,
        storage: StorageChoice,
        dtype: Dtype,
        notes: BTreeMap<String, String>,
    ) -> Result<u64, ModelError> {
        let bytes = self
            .to_lop_bytes(storage, dtype, notes)
            .map_err(|e| e.in_file(path))?;
        write_atomic(path, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Reads and validates an encoder `.lop` (size limit from [`max_file_bytes`]).
    pub fn read_lop(path: &Path) -> Result<(Self, BTreeMap<String, String>), ModelError> {
        let bytes = read_limited(path, max_file_bytes())?;
        Self::from_lop_bytes(&bytes).map_err(|e| e.in_file(path))
    }

    pub fn from_lop_bytes(bytes: &[u8]) -> Result<(Self, BTreeMap<String, String>), ModelError> {
        let (st, meta) = lopper_container(bytes)?;
        let text = meta.get("bert").ok_or_else(|| {
            ModelError::NotLopper("__metadata__ has no bert entry (not an encoder file)".into())
        })?;
        let m: BertMeta =
            serde_json::from_str(text).map_err(|e| ModelError::GraphJson(format!("bert: {e}")))?;
        m.config.validate()?;
        let c = &m.config;
        let (h, f) = (c.hidden_size, c.intermediate_size);
        // Every tensor read is recorded, so a file with tensors nobody reads is refused.
        let used: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
        let lookup = |name: &str| -> Option<TensorView<'_>> { st.tensor(name).ok() };
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, ModelError> {
            let t = lookup(name).ok_or_else(|| ModelError::tensor(name, "is missing"))?;
            if t.dtype() != StDtype::F32 || t.shape() != shape {
                return Err(ModelError::tensor(
                    name,
                    format!("is {:?} {:?}, expected F32 {shape:?}", t.dtype(), t.shape()),
                ));
            }
            used.borrow_mut().insert(name.to_string());
            weights::read_f32(&t, name)
        };
        let word = get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?;
        let position = get(
            "embeddings.position_embeddings.weight",
            &[c.max_position_embeddings, h],
        )?;
        let token_type = get(
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, h],
        )?;
        let ln = |name: &str| -> Result<LayerNorm, ModelError> {
            Ok(LayerNorm {
                gamma: get(&format!("{name}.weight"), &[h])?,
                beta: get(&format!("{name}.bias"), &[h])?,
            })
        };
        let emb_ln = ln("embeddings.LayerNorm")?;
        let shapes = [[h, h], [h, h], [h, h], [h, h], [f, h], [h, f]];
        let mut expected_specs = 0;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let mut lins = Vec::with_capacity(6);
            for (s, shape) in LINEAR_SUFFIXES.iter().zip(shapes) {
                let name = format!("encoder.layer.{i}.{s}.weight");
                let spec = m
                    .weights
                    .get(&name)
                    .ok_or_else(|| ModelError::tensor(&name, "has no spec in __metadata__.bert"))?;
                if spec.shape != shape {
                    return Err(ModelError::tensor(
                        &name,
                        format!("spec shape {:?}, the config implies {shape:?}", spec.shape),
                    ));
                }
                expected_specs += 1;
                let w = weights::from_tensors(&name, spec, &lookup)?;
                used.borrow_mut().extend(weights::tensor_names(&name, spec));
                let bias = get(&format!("encoder.layer.{i}.{s}.bias"), &[shape[0]])?;
                lins.push(Linear { w, bias });
            }
            let attn_ln = ln(&format!("encoder.layer.{i}.attention.output.LayerNorm"))?;
            let out_ln = ln(&format!("encoder.layer.{i}.output.LayerNorm"))?;
            let mut it = lins.into_iter();
            let mut next = || it.next().expect("six linears were pushed");
            layers.push(EncoderLayer {
                query: next(),
                key: next(),
                value: next(),
                attn_out: next(),
                attn_ln,
                ffn_in: next(),
                ffn_out: next(),
                out_ln,
            });
        }
        if m.weights.len() != expected_specs {
            return Err(ModelError::graph(
                "__metadata__.bert lists weights the encoder does not use",
            ));
        }
        let tok = lookup(TOKENIZER).ok_or_else(|| ModelError::tensor(TOKENIZER, "is missing"))?;
        if tok.dtype() != StDtype::U8 || tok.shape().len() != 1 {
            return Err(ModelError::tensor(TOKENIZER, "must be a 1-D U8 tensor"));
        }
        used.borrow_mut().insert(TOKENIZER.into());
        let tokenizer_json = String::from_utf8(tok.data().to_vec())
            .map_err(|_| ModelError::tensor(TOKENIZER, "is not UTF-8"))?;
        super::runtime::parse_tokenizer(&tokenizer_json)?;
        if let Some(extra) = st.names().into_iter().find(|n| !used.borrow().contains(*n)) {
            return Err(ModelError::tensor(
                extra,
                "is in the file but the encoder does not use it",
            ));
        }
        let bert = Bert {
            config: m.config,
            pooling: m.pooling,
            normalize: m.normalize,
            max_seq_len: m.max_seq_len,
            word,
            position,
            token_type,
            emb_ln,
            layers,
            tokenizer_json,
        };
        bert.validate()?;
        Ok((bert, m.notes))
    }
}

/// An encoder from a Hugging Face folder or an encoder `.lop`, with the `.lop`'s notes.
pub fn load(path: &Path) -> Result<(Bert, BTreeMap<String, String>), ModelError> {
    if path.is_dir() {
        Ok((super::import::from_folder(path)?, BTreeMap::new()))
    } else {
        Bert::read_lop(path)
    }
}

/// Whether `path` is an encoder: a model folder, or a `.lop` whose metadata has a `bert` entry
/// (only the header is read).
pub fn sniff(path: &Path) -> Result<bool, ModelError> {
    use std::io::Read;
    if path.is_dir() {
        return Ok(true);
    }
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Opening a FIFO blocks until a writer comes: only regular files are opened; the full
    // reader refuses anything else with a clear message.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Ok(false);
    }
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 8];
    if f.read_exact(&mut head).is_err() {
        return Ok(false);
    }
    // A header over 100 MB is not ours; the full reader reports it properly.
    let n = u64::from_le_bytes(head);
    if n > 100 << 20 {
        return Ok(false);
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return Ok(false);
    }
    let v: serde_json::Value = match serde_json::from_slice(&header) {
        Ok(v) => v,
        Err(_) => return Ok(false),
    };
    Ok(v.get("__metadata__").and_then(|m| m.get("bert")).is_some())
}
