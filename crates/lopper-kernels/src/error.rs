//! Typed errors for building formats and running kernels.
//!
//! Every constructor that takes parts from outside (a file, a caller) validates them and returns
//! one of these instead of panicking. Fields carry the coordinates of the first problem found,
//! so a caller can name the tensor and the position in its own message.

use thiserror::Error;

/// Why a set of parts does not form a valid weight matrix.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("{what}: expected length {expected}, got {actual}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("dimension {what} = {value} exceeds the limit {limit}")]
    DimensionTooLarge {
        what: &'static str,
        value: usize,
        limit: usize,
    },
    #[error("row pointer must start at 0, starts at {start}")]
    RowPtrStart { start: u32 },
    #[error("row pointer decreases at row {row} ({from} -> {to})")]
    RowPtrNotMonotonic { row: usize, from: u32, to: u32 },
    #[error("row pointer ends at {end} but there are {nnz} stored entries")]
    RowPtrEnd { end: u32, nnz: usize },
    #[error("row {row}: column {col} is out of range (matrix has {cols} columns)")]
    ColumnOutOfRange { row: usize, col: usize, cols: usize },
    #[error(
        "row {row}: columns are not strictly increasing ({prev} then {col}): unsorted or duplicate"
    )]
    ColumnsNotSorted { row: usize, prev: usize, col: usize },
    #[error("{cols} columns do not fit {bits}-bit column indices")]
    IndexTooNarrow { cols: usize, bits: u32 },
    #[error("block shape {br}x{bc} is not supported (each side must be 1..=64)")]
    BadBlockShape { br: usize, bc: usize },
    #[error("block at block-row {block_row}, column {col}: stores a nonzero outside the matrix")]
    BlockPaddingNotZero { block_row: usize, col: usize },
    #[error("N:M pattern {n}:{m} is not supported (need 1 <= n <= m <= 16)")]
    BadNmPattern { n: usize, m: usize },
    #[error("N:M needs the column count ({cols}) to be a multiple of M = {m}")]
    NmColsNotMultiple { cols: usize, m: usize },
    #[error("row {row}, group {group}: {count} nonzeros exceed N = {n}")]
    NmGroupOverfull {
        row: usize,
        group: usize,
        count: usize,
        n: usize,
    },
    #[error(
        "row {row}, group {group}: in-group indices must be strictly increasing and < M = {m}"
    )]
    NmBadIndex { row: usize, group: usize, m: usize },
    #[error("row {row}: scale {scale} is not a finite non-negative number")]
    BadScale { row: usize, scale: f32 },
    #[error("row {row}, column {col}: weight {value} is not finite and cannot be quantized")]
    NonFiniteWeight { row: usize, col: usize, value: f32 },
    #[error("format {format} has no int8 variant")]
    NoInt8Variant { format: String },
    #[error("mask has length {actual}, matrix has {expected} entries")]
    MaskLength { expected: usize, actual: usize },
}

/// Why a kernel call was refused. Raised before any memory is touched.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KernelError {
    #[error("kernel {kernel} does not support this matrix ({reason})")]
    Unsupported {
        kernel: &'static str,
        reason: &'static str,
    },
    #[error("{what}: expected length {expected}, got {actual}")]
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error(
        "row range {start}..{end} is invalid for {rows} rows with row granularity {granularity}"
    )]
    BadRowRange {
        start: usize,
        end: usize,
        rows: usize,
        granularity: usize,
    },
    #[error("kernel {kernel} needs {isa} but this CPU does not have it")]
    IsaUnavailable {
        kernel: &'static str,
        isa: &'static str,
    },
}
