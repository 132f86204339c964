//! Re-encoding a model's weights: the storage format of each weight (for the file), int8
//! quantization, densifying (the dense twin `lopper bench` compares against), and BatchNorm
//! folding for exporters. Matrices are `[out, in]` throughout.

use std::collections::BTreeMap;

use lopper_kernels::{Dtype, FormatKind, WeightMatrix};

use crate::error::ModelError;
use crate::file::Model;
use crate::graph::StorageFormat;

/// How a weight is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageChoice {
    /// The smallest encoding among dense (f32 only), CSR, CSR with 8-bit relative indices,
    /// BSR 1x8 and BSR 4x1.
    Auto,
    Dense,
    Csr,
    /// CSR with one-byte relative column indices (storage only; see [`crate::delta`]).
    CsrDelta8,
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
            "csr-delta8" | "csr_delta8" => Ok(Self::CsrDelta8),
            _ => {
                match s.parse::<FormatKind>() {
                    Ok(FormatKind::Bsr { br, bc })
                        if (1..=64).contains(&br) && (1..=64).contains(&bc) =>
                    {
                        Ok(Self::Bsr { br, bc })
                    }
                    _ => Err(format!(
                        "unknown storage format '{s}': use auto, dense, csr, csr-delta8 or bsrRxC (e.g. bsr4x1)"
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

/// `w` stored as `choice` with `dtype`: the matrix and the storage format it is written in.
/// int8 needs a sparse format (dense has no int8 variant); `Auto` picks the smallest of the
/// allowed encodings.
pub fn encode_storage(
    name: &str,
    w: &WeightMatrix,
    choice: StorageChoice,
    dtype: Dtype,
) -> Result<(WeightMatrix, StorageFormat), ModelError> {
    let csr = csr_kind(w.cols());
    let kinds: Vec<(FormatKind, bool)> = match choice {
        StorageChoice::Dense => vec![(FormatKind::Dense, false)],
        StorageChoice::Csr => vec![(csr, false)],
        StorageChoice::CsrDelta8 => vec![(csr, true)],
        StorageChoice::Bsr { br, bc } => vec![(FormatKind::Bsr { br, bc }, false)],
        StorageChoice::Auto => {
            let mut k = vec![
                (csr, false),
                (csr, true),
                (FormatKind::Bsr { br: 1, bc: 8 }, false),
                (FormatKind::Bsr { br: 4, bc: 1 }, false),
            ];
            if dtype == Dtype::F32 {
                k.insert(0, (FormatKind::Dense, false));
            }
            k
        }
    };
    let mut best: Option<(usize, WeightMatrix, StorageFormat)> = None;
    for (kind, delta) in kinds {
        let m = encode_as(name, w, kind, dtype)?;
        let (bytes, format) = if delta {
            (delta_bytes(&m), StorageFormat::CsrDelta8)
        } else {
            (m.storage_bytes(), crate::file::spec_of(&m).format)
        };
        if best.as_ref().is_none_or(|b| bytes < b.0) {
            best = Some((bytes, m, format));
        }
    }
    best.map(|b| (b.1, b.2))
        .ok_or_else(|| ModelError::Plan(format!("weight '{name}': no storage format")))
}

/// Bytes of the delta encoding of a CSR matrix (row pointers, deltas, values, scales).
/// Bytes `m` takes in a file when written as `format` (a `csr_delta8` matrix is held as CSR in
/// memory but stored with one-byte column steps and filler entries).
pub fn stored_bytes(m: &WeightMatrix, format: StorageFormat) -> usize {
    match format {
        StorageFormat::CsrDelta8 => delta_bytes(m),
        _ => m.storage_bytes(),
    }
}

fn delta_bytes(m: &WeightMatrix) -> usize {
    let stored = match m {
        WeightMatrix::Csr16(c) => {
            crate::delta::stored_len(c.row_ptr(), |k| c.col_idx()[k] as usize)
        }
        WeightMatrix::Csr32(c) => {
            crate::delta::stored_len(c.row_ptr(), |k| c.col_idx()[k] as usize)
        }
        _ => return usize::MAX,
    };
    let value = match m.dtype() {
        Dtype::F32 => 4,
        Dtype::I8 => 1,
    };
    let scales = if m.dtype() == Dtype::I8 {
        4 * m.rows()
    } else {
        0
    };
    4 * (m.rows() + 1) + stored * (1 + value) + scales
}

impl Model {
    /// The same model with every weight stored as `choice` with `dtype`.
    pub fn reencoded(&self, choice: StorageChoice, dtype: Dtype) -> Result<Model, ModelError> {
        self.restored(|_| choice, dtype)
    }

    /// Every weight stored in the format `plan` runs it with (`--format planned`): dense stays
    /// dense (CSR for int8, which dense cannot hold), CSR and N:M become CSR, BSR keeps its block.
    /// Weights the plan does not name get the smallest encoding.
    pub fn reencoded_as_planned(
        &self,
        plan: &crate::runtime::Plan,
        dtype: Dtype,
    ) -> Result<Model, ModelError> {
        let choice = |name: &str| {
            let kind = plan
                .layers
                .iter()
                .find(|l| l.weight == name)
                .map(|l| l.format);
            match kind {
                Some(FormatKind::Dense) if dtype == Dtype::F32 => StorageChoice::Dense,
                Some(FormatKind::Bsr { br, bc }) => StorageChoice::Bsr { br, bc },
                Some(_) => StorageChoice::Csr,
                None => StorageChoice::Auto,
            }
        };
        self.restored(choice, dtype)
    }

    /// The same model with each weight stored as `choice(name)` says, specs updated to match.
    fn restored(
        &self,
        choice: impl Fn(&str) -> StorageChoice,
        dtype: Dtype,
    ) -> Result<Model, ModelError> {
        let mut weights = BTreeMap::new();
        let mut graph = self.graph.clone();
        for (name, w) in &self.weights {
            let (m, format) = encode_storage(name, w, choice(name), dtype)?;
            let mut spec = crate::file::spec_of(&m);
            spec.format = format;
            graph.weights.insert(name.clone(), spec);
            weights.insert(name.clone(), m);
        }
        Model::new(graph, weights, self.vectors.clone())
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
