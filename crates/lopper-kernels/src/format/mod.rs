//! Weight-matrix storage formats.
//!
//! Layout conventions, shared by every format and every kernel in this crate:
//! - A weight matrix `W` is `[out, in]` = `[rows, cols]`, as in ONNX and PyTorch `Linear`
//!   (burn stores `Linear` weights `[in, out]`; the training crate transposes at its boundary).
//! - Activations are `X: [in, n]` row-major (`x[c * n + j]`), outputs `Y: [out, n]`
//!   (`y[r * n + j]`). For `n = 1` both are plain vectors. This is the XNNPACK SpMM layout: each
//!   stored weight broadcasts into one contiguous `n`-vector of `X`.
//! - Sparse formats store *structure*: an entry that is stored takes part in the product even
//!   if its value is zero, so `0 * NaN = NaN` propagates through stored zeros and never through
//!   entries that are not stored. Reference twins follow the same rule.
//!
//! Every format validates its parts on construction; kernels take the validated types and may
//! rely on every invariant documented on the type.

pub mod bsr;
pub mod csr;
pub mod dense;
pub mod nm;
pub mod quant;
pub mod vocab;

pub use bsr::Bsr;
pub use csr::{ColIndex, Csr};
pub use dense::Dense;
pub use nm::NmMatrix;
pub use quant::Values;
pub use vocab::{Pattern, VocabError};

use crate::error::FormatError;

/// Largest row or column count any format accepts. Keeps `rows * cols` within `usize` on 64-bit
/// targets, column indices within `i32` (AVX2 gathers use signed 32-bit indices), and lets a
/// reader refuse absurd dimensions before allocating.
pub const MAX_DIM: usize = 1 << 24;

/// Largest number of stored entries (row pointers are `u32`).
pub const MAX_NNZ: usize = u32::MAX as usize;

/// Element type of the stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    /// Symmetric int8 with one f32 scale per output row: `w = q * scale[row]`.
    I8,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::I8 => "i8",
        }
    }
}

/// The family of a storage format, used by the kernel registry and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FormatKind {
    Dense,
    /// CSR with 16-bit column indices.
    Csr16,
    /// CSR with 32-bit column indices.
    Csr32,
    /// Block-sparse rows with `br x bc` blocks.
    Bsr {
        br: usize,
        bc: usize,
    },
    /// N:M structured sparsity: at most `n` nonzeros in every `m` consecutive columns.
    Nm {
        n: usize,
        m: usize,
    },
}

impl FormatKind {
    /// Short name used in kernel names and benchmark records, e.g. `csr16`, `bsr1x8`, `nm2of4`.
    pub fn name(self) -> String {
        match self {
            FormatKind::Dense => "dense".into(),
            FormatKind::Csr16 => "csr16".into(),
            FormatKind::Csr32 => "csr32".into(),
            FormatKind::Bsr { br, bc } => format!("bsr{br}x{bc}"),
            FormatKind::Nm { n, m } => format!("nm{n}of{m}"),
        }
    }
}

/// Any validated weight matrix. The runtime stores layers as this enum and dispatches on it.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightMatrix {
    Dense(Dense),
    Csr16(Csr<u16>),
    Csr32(Csr<u32>),
    Bsr(Bsr),
    Nm(NmMatrix),
}

impl WeightMatrix {
    pub fn rows(&self) -> usize {
        match self {
            WeightMatrix::Dense(m) => m.rows(),
            WeightMatrix::Csr16(m) => m.rows(),
            WeightMatrix::Csr32(m) => m.rows(),
            WeightMatrix::Bsr(m) => m.rows(),
            WeightMatrix::Nm(m) => m.rows(),
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            WeightMatrix::Dense(m) => m.cols(),
            WeightMatrix::Csr16(m) => m.cols(),
            WeightMatrix::Csr32(m) => m.cols(),
            WeightMatrix::Bsr(m) => m.cols(),
            WeightMatrix::Nm(m) => m.cols(),
        }
    }

    pub fn kind(&self) -> FormatKind {
        match self {
            WeightMatrix::Dense(_) => FormatKind::Dense,
            WeightMatrix::Csr16(_) => FormatKind::Csr16,
            WeightMatrix::Csr32(_) => FormatKind::Csr32,
            WeightMatrix::Bsr(m) => FormatKind::Bsr {
                br: m.block_rows(),
                bc: m.block_cols(),
            },
            WeightMatrix::Nm(m) => FormatKind::Nm { n: m.n(), m: m.m() },
        }
    }

    pub fn dtype(&self) -> Dtype {
        match self {
            WeightMatrix::Dense(_) | WeightMatrix::Nm(_) => Dtype::F32,
            WeightMatrix::Csr16(m) => m.values().dtype(),
            WeightMatrix::Csr32(m) => m.values().dtype(),
            WeightMatrix::Bsr(m) => m.values().dtype(),
        }
    }

    /// Bytes of all arrays the format stores (values, indices, pointers, scales).
    pub fn storage_bytes(&self) -> usize {
        match self {
            WeightMatrix::Dense(m) => m.storage_bytes(),
            WeightMatrix::Csr16(m) => m.storage_bytes(),
            WeightMatrix::Csr32(m) => m.storage_bytes(),
            WeightMatrix::Bsr(m) => m.storage_bytes(),
            WeightMatrix::Nm(m) => m.storage_bytes(),
        }
    }

    /// Number of stored entries (structural nonzeros, including explicit zeros in blocks).
    pub fn stored(&self) -> usize {
        match self {
            WeightMatrix::Dense(m) => m.rows() * m.cols(),
            WeightMatrix::Csr16(m) => m.nnz(),
            WeightMatrix::Csr32(m) => m.nnz(),
            WeightMatrix::Bsr(m) => m.stored(),
            WeightMatrix::Nm(m) => m.stored(),
        }
    }

    /// Rows a thread partition must be aligned to (block height for BSR, else 1).
    pub fn row_granularity(&self) -> usize {
        match self {
            WeightMatrix::Bsr(m) => m.block_rows(),
            _ => 1,
        }
    }

    /// Work per row in stored entries, used to balance threads. Length `rows`.
    pub fn row_costs(&self) -> Vec<usize> {
        match self {
            WeightMatrix::Dense(m) => vec![m.cols(); m.rows()],
            WeightMatrix::Csr16(m) => m.row_costs(),
            WeightMatrix::Csr32(m) => m.row_costs(),
            WeightMatrix::Bsr(m) => m.row_costs(),
            WeightMatrix::Nm(m) => vec![m.stored() / m.rows().max(1); m.rows()],
        }
    }

    /// Calls `f(row, col, w)` for every stored entry, with the effective weight in f64
    /// (`q * scale` for int8). The reference twins and `to_dense` are built on this.
    pub fn for_each_entry(&self, f: impl FnMut(usize, usize, f64)) {
        match self {
            WeightMatrix::Dense(m) => m.for_each_entry(f),
            WeightMatrix::Csr16(m) => m.for_each_entry(f),
            WeightMatrix::Csr32(m) => m.for_each_entry(f),
            WeightMatrix::Bsr(m) => m.for_each_entry(f),
            WeightMatrix::Nm(m) => m.for_each_entry(f),
        }
    }

    /// Decodes to a dense `[rows, cols]` matrix (int8 is dequantized).
    pub fn to_dense(&self) -> Dense {
        let (rows, cols) = (self.rows(), self.cols());
        let mut data = vec![0.0f32; rows * cols];
        self.for_each_entry(|r, c, w| data[r * cols + c] = w as f32);
        Dense::from_vec(rows, cols, data).expect("dimensions come from a validated matrix")
    }

    /// Re-checks every invariant. Constructors already do this; useful after deserialising.
    pub fn validate(&self) -> Result<(), FormatError> {
        match self {
            WeightMatrix::Dense(m) => m.validate(),
            WeightMatrix::Csr16(m) => m.validate(),
            WeightMatrix::Csr32(m) => m.validate(),
            WeightMatrix::Bsr(m) => m.validate(),
            WeightMatrix::Nm(m) => m.validate(),
        }
    }
}

pub(crate) fn check_dims(rows: usize, cols: usize) -> Result<(), FormatError> {
    for (what, value) in [("rows", rows), ("cols", cols)] {
        if value > MAX_DIM {
            return Err(FormatError::DimensionTooLarge {
                what,
                value,
                limit: MAX_DIM,
            });
        }
    }
    Ok(())
}

pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    actual: usize,
) -> Result<(), FormatError> {
    if expected != actual {
        return Err(FormatError::LengthMismatch {
            what,
            expected,
            actual,
        });
    }
    Ok(())
}

impl WeightMatrix {
    /// Encodes the kept entries of `dense` (mask row-major, `true` keeps) into `kind`, with int8
    /// values when `dtype` is [`Dtype::I8`]. Dense keeps every entry (masked ones as zeros).
    /// N:M has no int8 variant yet.
    pub fn encode(
        dense: &Dense,
        mask: &[bool],
        kind: FormatKind,
        dtype: Dtype,
    ) -> Result<Self, FormatError> {
        let m = match kind {
            FormatKind::Dense => {
                let mut d = dense.clone();
                d.apply_mask(mask)?;
                WeightMatrix::Dense(d)
            }
            FormatKind::Csr16 => WeightMatrix::Csr16(Csr::from_dense_masked(dense, mask)?),
            FormatKind::Csr32 => WeightMatrix::Csr32(Csr::from_dense_masked(dense, mask)?),
            FormatKind::Bsr { br, bc } => {
                WeightMatrix::Bsr(Bsr::from_dense_masked(dense, br, bc, mask)?)
            }
            FormatKind::Nm { n, m } => {
                WeightMatrix::Nm(NmMatrix::from_dense_masked(dense, n, m, mask)?)
            }
        };
        match dtype {
            Dtype::F32 => Ok(m),
            Dtype::I8 => m.quantize_i8(),
        }
    }

    /// The same structure with int8 values and per-row scales (CSR and BSR).
    pub fn quantize_i8(&self) -> Result<Self, FormatError> {
        match self {
            WeightMatrix::Csr16(m) => Ok(WeightMatrix::Csr16(m.quantize_i8()?)),
            WeightMatrix::Csr32(m) => Ok(WeightMatrix::Csr32(m.quantize_i8()?)),
            WeightMatrix::Bsr(m) => Ok(WeightMatrix::Bsr(m.quantize_i8()?)),
            WeightMatrix::Dense(_) | WeightMatrix::Nm(_) => Err(FormatError::NoInt8Variant {
                format: self.kind().name(),
            }),
        }
    }
}
