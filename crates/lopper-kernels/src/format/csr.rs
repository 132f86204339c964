//! Compressed sparse rows with 16- or 32-bit column indices.
//!
//! Invariants of a [`Csr`] (checked by every constructor):
//! - `row_ptr.len() == rows + 1`, `row_ptr[0] == 0`, non-decreasing, `row_ptr[rows] == nnz`;
//! - within each row, column indices are strictly increasing (sorted, no duplicates) and `< cols`;
//! - `cols <= I::MAX_COLS` (65 536 for `u16`), both dims `<= MAX_DIM`;
//! - `values` holds `nnz` entries; int8 values carry one scale per row.
//!
//! u16 indices bring a stored nonzero to 6 bytes (f32) or 3 bytes (int8) instead of 8 or 5,
//! which matters at batch 1 where the product is bound by memory traffic.

use super::quant::{quantize_per_row, Values};
use super::{check_dims, check_len, Dense, MAX_NNZ};
use crate::error::FormatError;

/// An unsigned column index type.
pub trait ColIndex: Copy + Send + Sync + std::fmt::Debug + PartialEq + 'static {
    const BITS: u32;
    /// Largest column count whose indices all fit.
    const MAX_COLS: usize;
    /// Converts an index known to be `< MAX_COLS`.
    fn from_usize(v: usize) -> Self;
    fn to_usize(self) -> usize;
}

impl ColIndex for u16 {
    const BITS: u32 = 16;
    const MAX_COLS: usize = 1 << 16;
    fn from_usize(v: usize) -> Self {
        debug_assert!(v < Self::MAX_COLS);
        v as u16
    }
    fn to_usize(self) -> usize {
        self as usize
    }
}

impl ColIndex for u32 {
    const BITS: u32 = 32;
    const MAX_COLS: usize = super::MAX_DIM;
    fn from_usize(v: usize) -> Self {
        debug_assert!(v < Self::MAX_COLS);
        v as u32
    }
    fn to_usize(self) -> usize {
        self as usize
    }
}

/// A validated CSR matrix `[rows, cols]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr<I: ColIndex> {
    rows: usize,
    cols: usize,
    row_ptr: Vec<u32>,
    col_idx: Vec<I>,
    values: Values,
}

impl<I: ColIndex> Csr<I> {
    /// Builds from raw parts, validating every invariant.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        row_ptr: Vec<u32>,
        col_idx: Vec<I>,
        values: Values,
    ) -> Result<Self, FormatError> {
        let m = Self {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
        };
        m.validate()?;
        Ok(m)
    }

    /// Encodes the entries of `dense` for which `keep(row, col, value)` holds.
    pub fn from_dense_where(
        dense: &Dense,
        mut keep: impl FnMut(usize, usize, f32) -> bool,
    ) -> Result<Self, FormatError> {
        let (rows, cols) = (dense.rows(), dense.cols());
        if cols > I::MAX_COLS {
            return Err(FormatError::IndexTooNarrow {
                cols,
                bits: I::BITS,
            });
        }
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let mut col_idx = Vec::new();
        let mut values = Vec::new();
        row_ptr.push(0u32);
        for r in 0..rows {
            for (c, &v) in dense.row(r).iter().enumerate() {
                if keep(r, c, v) {
                    col_idx.push(I::from_usize(c));
                    values.push(v);
                }
            }
            if values.len() > MAX_NNZ {
                return Err(FormatError::DimensionTooLarge {
                    what: "nnz",
                    value: values.len(),
                    limit: MAX_NNZ,
                });
            }
            row_ptr.push(values.len() as u32);
        }
        Self::from_parts(rows, cols, row_ptr, col_idx, Values::F32(values))
    }

    /// Encodes the entries whose mask bit is set (mask is row-major, `rows * cols`).
    pub fn from_dense_masked(dense: &Dense, mask: &[bool]) -> Result<Self, FormatError> {
        check_mask(dense, mask)?;
        let cols = dense.cols();
        Self::from_dense_where(dense, |r, c, _| mask[r * cols + c])
    }

    /// Encodes the entries with `|w| > threshold` (so `threshold = 0` keeps every nonzero).
    pub fn from_dense_threshold(dense: &Dense, threshold: f32) -> Result<Self, FormatError> {
        Self::from_dense_where(dense, |_, _, v| v.abs() > threshold || v.is_nan())
    }

    /// Returns the same structure with int8 values and per-row scales.
    pub fn quantize_i8(&self) -> Result<Self, FormatError> {
        let Values::F32(v) = &self.values else {
            return Ok(self.clone());
        };
        let row_of = self.row_of_entries();
        let values = quantize_per_row(v, self.rows, |k| row_of[k], |k| self.col_idx[k].to_usize())?;
        Self::from_parts(
            self.rows,
            self.cols,
            self.row_ptr.clone(),
            self.col_idx.clone(),
            values,
        )
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn nnz(&self) -> usize {
        self.col_idx.len()
    }
    pub fn row_ptr(&self) -> &[u32] {
        &self.row_ptr
    }
    pub fn col_idx(&self) -> &[I] {
        &self.col_idx
    }
    pub fn values(&self) -> &Values {
        &self.values
    }

    pub fn storage_bytes(&self) -> usize {
        self.row_ptr.len() * 4
            + self.col_idx.len() * (I::BITS as usize / 8)
            + self.values.storage_bytes()
    }

    pub fn row_costs(&self) -> Vec<usize> {
        self.row_ptr
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .collect()
    }

    fn row_of_entries(&self) -> Vec<usize> {
        let mut rows = Vec::with_capacity(self.nnz());
        for r in 0..self.rows {
            let n = (self.row_ptr[r + 1] - self.row_ptr[r]) as usize;
            rows.extend(std::iter::repeat_n(r, n));
        }
        rows
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        check_dims(self.rows, self.cols)?;
        if self.cols > I::MAX_COLS {
            return Err(FormatError::IndexTooNarrow {
                cols: self.cols,
                bits: I::BITS,
            });
        }
        check_len("row_ptr", self.rows + 1, self.row_ptr.len())?;
        let nnz = self.col_idx.len();
        if nnz > MAX_NNZ {
            return Err(FormatError::DimensionTooLarge {
                what: "nnz",
                value: nnz,
                limit: MAX_NNZ,
            });
        }
        self.values.validate(nnz, self.rows)?;
        if self.row_ptr[0] != 0 {
            return Err(FormatError::RowPtrStart {
                start: self.row_ptr[0],
            });
        }
        for (row, w) in self.row_ptr.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(FormatError::RowPtrNotMonotonic {
                    row,
                    from: w[0],
                    to: w[1],
                });
            }
        }
        let end = self.row_ptr[self.rows];
        if end as usize != nnz {
            return Err(FormatError::RowPtrEnd { end, nnz });
        }
        for row in 0..self.rows {
            let (s, e) = (self.row_ptr[row] as usize, self.row_ptr[row + 1] as usize);
            let mut prev: Option<usize> = None;
            for &c in &self.col_idx[s..e] {
                let col = c.to_usize();
                if col >= self.cols {
                    return Err(FormatError::ColumnOutOfRange {
                        row,
                        col,
                        cols: self.cols,
                    });
                }
                if let Some(p) = prev {
                    if col <= p {
                        return Err(FormatError::ColumnsNotSorted { row, prev: p, col });
                    }
                }
                prev = Some(col);
            }
        }
        Ok(())
    }

    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(usize, usize, f64)) {
        for r in 0..self.rows {
            for k in self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize {
                f(r, self.col_idx[k].to_usize(), self.values.weight(k, r));
            }
        }
    }
}

pub(crate) fn check_mask(dense: &Dense, mask: &[bool]) -> Result<(), FormatError> {
    let expected = dense.rows() * dense.cols();
    if mask.len() != expected {
        return Err(FormatError::MaskLength {
            expected,
            actual: mask.len(),
        });
    }
    Ok(())
}
