//! Re-encoding a model's weights: the storage format of each weight (for the file), int8
//! quantization, densifying (the dense twin `lopper bench` compares against), and BatchNorm
//! folding for exporters. Matrices are `[out, in]` throughout.

use std::collections::BTreeMap;

use lopper_kernels::{Dtype, FormatKind, WeightMatrix};

use crate::error::ModelError;
use crate::file::Model;

/// How a weight is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageChoice {
    /// The smallest encoding among dense, CSR, BSR 1x8 and BSR 4x1 (f32: dense included).
    Auto,
    Dense,
    Csr,
    Bsr {
        br: usize,
        bc: usize,
    },
}

impl std::str::FromStr for StorageChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "dense" => Ok(Self::Dense),
            "csr" => Ok(Self::Csr),
            _ => {
                let dims = s.strip_prefix("bsr").and_then(|d| {
                    let (a, b) = d.split_once('x')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                });
                match dims {
                    Some((br, bc)) if (1..=64).contains(&br) && (1..=64).contains(&bc) => {
                        Ok(Self::Bsr { br, bc })
                    }
                    _ => Err(format!(
                        "unknown storage format '{s}': use auto, dense, csr or bsrRxC (e.g. bsr4x1)"
                    )),
                }
            }
        }
    }
}

fn csr_kind(cols: usize) -> FormatKind {
    if cols <= 1 << 16 {
        FormatKind::Csr16
    } else {
        FormatKind::Csr32
    }
}

/// The kept entries of `w` (its nonzeros) as `[out, in]` dense values plus mask.
pub fn dense_and_mask(w: &WeightMatrix) -> (lopper_kernels::Dense, Vec<bool>) {
    let d = w.to_dense();
    let mask = d.data().iter().map(|v| *v != 0.0).collect();
    (d, mask)
}

/// `w` re-encoded in `kind` with `dtype` (keeping its nonzeros).
pub fn encode_as(
    name: &str,
    w: &WeightMatrix,
    kind: FormatKind,
    dtype: Dtype,
) -> Result<WeightMatrix, ModelError> {
    let (d, mask) = dense_and_mask(w);
    WeightMatrix::encode(&d, &mask, kind, dtype).map_err(|source| ModelError::Weight {
        name: name.to_string(),
        source,
    })
}

/// `w` stored as `choice` with `dtype`. int8 needs a sparse format (dense has no int8 variant);
/// `Auto` picks the smallest of the allowed encodings.
pub fn encode_storage(
    name: &str,
    w: &WeightMatrix,
    choice: StorageChoice,
    dtype: Dtype,
) -> Result<WeightMatrix, ModelError> {
    let kinds: Vec<FormatKind> = match choice {
        StorageChoice::Dense => vec![FormatKind::Dense],
        StorageChoice::Csr => vec![csr_kind(w.cols())],
        StorageChoice::Bsr { br, bc } => vec![FormatKind::Bsr { br, bc }],
        StorageChoice::Auto => {
            let mut k = vec![
                csr_kind(w.cols()),
                FormatKind::Bsr { br: 1, bc: 8 },
                FormatKind::Bsr { br: 4, bc: 1 },
            ];
            if dtype == Dtype::F32 {
                k.insert(0, FormatKind::Dense);
            }
            k
        }
    };
    let mut best: Option<WeightMatrix> = None;
    for kind in kinds {
        let m = encode_as(name, w, kind, dtype)?;
        if best
            .as_ref()
            .is_none_or(|b| m.storage_bytes() < b.storage_bytes())
        {
            best = Some(m);
        }
    }
    best.ok_or_else(|| ModelError::Plan(format!("weight '{name}': no storage format")))
}

impl Model {
    /// The same model with every weight stored as `choice` with `dtype`.
    pub fn reencoded(&self, choice: StorageChoice, dtype: Dtype) -> Result<Model, ModelError> {
        let mut weights = BTreeMap::new();
        for (name, w) in &self.weights {
            weights.insert(name.clone(), encode_storage(name, w, choice, dtype)?);
        }
        Model::new(self.graph.clone(), weights, self.vectors.clone())
    }

    /// The same model with every weight dense f32 (int8 weights dequantized): the dense twin.
    pub fn densified(&self) -> Result<Model, ModelError> {
        let weights = self
            .weights
            .iter()
            .map(|(k, w)| (k.clone(), WeightMatrix::Dense(w.to_dense())))
            .collect();
        Model::new(self.graph.clone(), weights, self.vectors.clone())
    }
}

/// Folds an inference BatchNorm into the preceding convolution or linear layer:
/// `W'[o, :] = W[o, :] * g[o]`, `b'[o] = (b[o] - mean[o]) * g[o] + beta[o]` with
/// `g = gamma / sqrt(var + eps)`. `w` is `[out, in]` row-major.
pub fn fold_batchnorm(
    w: &mut [f32],
    bias: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) {
    let out = bias.len();
    let cols = w.len() / out.max(1);
    for o in 0..out {
        let g = gamma[o] as f64 / (var[o] as f64 + eps as f64).sqrt();
        for v in &mut w[o * cols..(o + 1) * cols] {
            *v = (*v as f64 * g) as f32;
        }
        bias[o] = ((bias[o] as f64 - mean[o] as f64) * g + beta[o] as f64) as f32;
    }
}
