//! BERT-family sentence encoders (all-MiniLM-L6-v2 and any Hugging Face folder of that layout):
//! import, the `.lop` form, the runtime and sentence embeddings.
//!
//! Layouts: every Linear weight is `[out, in]` (PyTorch's layout, as in the Hugging Face
//! safetensors file and in the `.lop`), in any lopper storage format, so a pruned encoder keeps
//! its sparse matrices. Embedding tables are dense `[rows, hidden]`. At run time activations are
//! feature-major `[features, tokens]` with tokens `b * seq + s` (the kernels' `X: [in, n]`
//! layout), so every Linear is one `Y = W · X` over all tokens of the batch.
//!
//! Invariants after [`Bert::validate`]: every matrix and vector has the shape the config implies;
//! every value is finite; the tokenizer parses.

pub mod config;
pub mod file;
pub mod import;
pub mod ops;
pub mod runtime;
pub mod verify;

use lopper_kernels::WeightMatrix;

pub use config::{BertConfig, Pooling};
pub use runtime::{BertPlan, BertRunner, Encoded, LinearChoice, LinearSite};

use crate::error::ModelError;

/// `y = W x + b` with `W: [out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub w: WeightMatrix,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// One encoder block (post-LayerNorm, as in BERT).
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_ln: LayerNorm,
    pub ffn_in: Linear,
    pub ffn_out: Linear,
    pub out_ln: LayerNorm,
}

/// The Linear layers of a block in execution order, with their Hugging Face name suffixes.
pub const LINEAR_SUFFIXES: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

impl EncoderLayer {
    pub fn linears(&self) -> [&Linear; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attn_out,
            &self.ffn_in,
            &self.ffn_out,
        ]
    }

    pub fn linears_mut(&mut self) -> [&mut Linear; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attn_out,
            &mut self.ffn_in,
            &mut self.ffn_out,
        ]
    }
}

/// A whole sentence encoder.
#[derive(Debug, Clone)]
pub struct Bert {
    pub config: BertConfig,
    pub pooling: Pooling,
    /// L2-normalise the pooled vector (sentence-transformers' `Normalize` module).
    pub normalize: bool,
    /// Longest token sequence, special tokens included; longer texts are truncated.
    pub max_seq_len: usize,
    /// `[vocab, hidden]`.
    pub word: Vec<f32>,
    /// `[max_position, hidden]`.
    pub position: Vec<f32>,
    /// `[type_vocab, hidden]`.
    pub token_type: Vec<f32>,
    pub emb_ln: LayerNorm,
    pub layers: Vec<EncoderLayer>,
    /// The `tokenizer.json` text, kept verbatim so a `.lop` is self-contained.
    pub tokenizer_json: String,
}

impl Bert {
    /// `(name, linear)` for every Linear layer, in execution order.
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let mut v = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (s, lin) in LINEAR_SUFFIXES.iter().zip(l.linears()) {
                v.push((format!("encoder.layer.{i}.{s}"), lin));
            }
        }
        v
    }

    /// Zero fraction and counts over all encoder Linear weights: `(stored, nonzero)`.
    pub fn linear_stats(&self) -> (usize, usize) {
        let mut total = 0;
        let mut nnz = 0;
        for (_, l) in self.linears() {
            total += l.w.rows() * l.w.cols();
            nnz += l.w.to_dense().data().iter().filter(|v| **v != 0.0).count();
        }
        (total, nnz)
    }

    /// Checks every shape against the config and every value for finiteness.
    pub fn validate(&self) -> Result<(), ModelError> {
        let c = &self.config;
        c.validate()?;
        let h = c.hidden_size;
        let check_len = |name: &str, v: &[f32], len: usize| -> Result<(), ModelError> {
            if v.len() != len {
                return Err(ModelError::tensor(
                    name,
                    format!("has {} values, the config implies {len}", v.len()),
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::tensor(name, "holds a non-finite value"));
            }
            Ok(())
        };
        check_len(
            "embeddings.word_embeddings.weight",
            &self.word,
            c.vocab_size * h,
        )?;
        check_len(
            "embeddings.position_embeddings.weight",
            &self.position,
            c.max_position_embeddings * h,
        )?;
        check_len(
            "embeddings.token_type_embeddings.weight",
            &self.token_type,
            c.type_vocab_size * h,
        )?;
        check_len("embeddings.LayerNorm.weight", &self.emb_ln.gamma, h)?;
        check_len("embeddings.LayerNorm.bias", &self.emb_ln.beta, h)?;
        if self.layers.len() != c.num_hidden_layers {
            return Err(ModelError::Config(format!(
                "{} layers, num_hidden_layers is {}",
                self.layers.len(),
                c.num_hidden_layers
            )));
        }
        if self.max_seq_len < 2 || self.max_seq_len > c.max_position_embeddings {
            return Err(ModelError::Config(format!(
                "max_seq_len {} is outside 2..={}",
                self.max_seq_len, c.max_position_embeddings
            )));
        }
        let f = c.intermediate_size;
        let shapes = [(h, h), (h, h), (h, h), (h, h), (f, h), (h, f)];
        for (i, l) in self.layers.iter().enumerate() {
            for ((s, lin), (rows, cols)) in LINEAR_SUFFIXES.iter().zip(l.linears()).zip(shapes) {
                let name = format!("encoder.layer.{i}.{s}");
                if lin.w.rows() != rows || lin.w.cols() != cols {
                    return Err(ModelError::tensor(
                        &format!("{name}.weight"),
                        format!(
                            "is [{}, {}], expected [{rows}, {cols}] ([out, in])",
                            lin.w.rows(),
                            lin.w.cols()
                        ),
                    ));
                }
                check_len(&format!("{name}.bias"), &lin.bias, rows)?;
            }
            for (ln, what) in [(&l.attn_ln, "attention.output"), (&l.out_ln, "output")] {
                let name = format!("encoder.layer.{i}.{what}.LayerNorm");
                check_len(&format!("{name}.weight"), &ln.gamma, h)?;
                check_len(&format!("{name}.bias"), &ln.beta, h)?;
            }
        }
        Ok(())
    }
}
