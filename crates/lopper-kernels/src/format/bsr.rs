//! Block-sparse rows (BSR) with `br x bc` blocks on an aligned grid.
//!
//! The matrix is cut into block rows of `br` rows and block columns of `bc` columns, starting at
//! (0, 0). Only blocks holding a kept entry are stored, whole: a dropped entry inside a kept block
//! is stored as zero. Invariants (checked by every constructor):
//! - `block_row_ptr.len() == ceil(rows / br) + 1`, starts at 0, non-decreasing, ends at the
//!   block count;
//! - within a block row, block-column indices (in units of `bc`) are strictly increasing and
//!   `< ceil(cols / bc)`;
//! - `values` holds `blocks * br * bc` entries, each block row-major (`br` rows of `bc`);
//! - entries of edge blocks that fall outside the matrix are zero, so kernels may skip them;
//! - int8 values carry one scale per matrix row.
//!
//! 1x8 blocks make batch-1 products contiguous loads of `x`; 4x1 blocks let batch-N products
//! reuse each loaded row of `X` for four outputs.

use super::quant::{quantize_per_row, Values};
use super::{check_dims, check_len, csr::check_mask, Dense, MAX_NNZ};
use crate::error::FormatError;

/// A validated block-sparse matrix `[rows, cols]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bsr {
    rows: usize,
    cols: usize,
    br: usize,
    bc: usize,
    block_row_ptr: Vec<u32>,
    block_col: Vec<u32>,
    values: Values,
}

/// Largest block side accepted.
pub const MAX_BLOCK_SIDE: usize = 64;

impl Bsr {
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        rows: usize,
        cols: usize,
        br: usize,
        bc: usize,
        block_row_ptr: Vec<u32>,
        block_col: Vec<u32>,
        values: Values,
    ) -> Result<Self, FormatError> {
        let m = Self {
            rows,
            cols,
            br,
            bc,
            block_row_ptr,
            block_col,
            values,
        };
        m.validate()?;
        Ok(m)
    }

    /// Stores every block holding an entry for which `keep(row, col, value)` holds; the other
    /// entries of a stored block become zero.
    pub fn from_dense_where(
        dense: &Dense,
        br: usize,
        bc: usize,
        mut keep: impl FnMut(usize, usize, f32) -> bool,
    ) -> Result<Self, FormatError> {
        check_block_shape(br, bc)?;
        let (rows, cols) = (dense.rows(), dense.cols());
        let (nbr, nbc) = (rows.div_ceil(br), cols.div_ceil(bc));
        let mut block_row_ptr = vec![0u32];
        let mut block_col = Vec::new();
        let mut values = Vec::new();
        let mut block = vec![0.0f32; br * bc];
        for ib in 0..nbr {
            for jb in 0..nbc {
                let mut any = false;
                for i in 0..br {
                    for j in 0..bc {
                        let (r, c) = (ib * br + i, jb * bc + j);
                        let v = if r < rows && c < cols && keep(r, c, dense.get(r, c)) {
                            any = true;
                            dense.get(r, c)
                        } else {
                            0.0
                        };
                        block[i * bc + j] = v;
                    }
                }
                if any {
                    block_col.push(jb as u32);
                    values.extend_from_slice(&block);
                }
            }
            if values.len() > MAX_NNZ {
                return Err(FormatError::DimensionTooLarge {
                    what: "stored entries",
                    value: values.len(),
                    limit: MAX_NNZ,
                });
            }
            block_row_ptr.push(block_col.len() as u32);
        }
        Self::from_parts(
            rows,
            cols,
            br,
            bc,
            block_row_ptr,
            block_col,
            Values::F32(values),
        )
    }

    pub fn from_dense_masked(
        dense: &Dense,
        br: usize,
        bc: usize,
        mask: &[bool],
    ) -> Result<Self, FormatError> {
        check_mask(dense, mask)?;
        let cols = dense.cols();
        Self::from_dense_where(dense, br, bc, |r, c, _| mask[r * cols + c])
    }

    pub fn from_dense_threshold(
        dense: &Dense,
        br: usize,
        bc: usize,
        threshold: f32,
    ) -> Result<Self, FormatError> {
        Self::from_dense_where(dense, br, bc, |_, _, v| v.abs() > threshold || v.is_nan())
    }

    /// Returns the same structure with int8 values and per-row scales.
    pub fn quantize_i8(&self) -> Result<Self, FormatError> {
        let Values::F32(v) = &self.values else {
            return Ok(self.clone());
        };
        let owner = self.block_row_of_blocks();
        let (br, bc) = (self.br, self.bc);
        let row_of = |k: usize| {
            let r = owner[k / (br * bc)] * br + (k % (br * bc)) / bc;
            r.min(self.rows.saturating_sub(1))
        };
        let col_of = |k: usize| self.block_col[k / (br * bc)] as usize * bc + k % bc;
        let values = quantize_per_row(v, self.rows, row_of, col_of)?;
        Self::from_parts(
            self.rows,
            self.cols,
            br,
            bc,
            self.block_row_ptr.clone(),
            self.block_col.clone(),
            values,
        )
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn block_rows(&self) -> usize {
        self.br
    }
    pub fn block_cols(&self) -> usize {
        self.bc
    }
    pub fn block_row_ptr(&self) -> &[u32] {
        &self.block_row_ptr
    }
    pub fn block_col(&self) -> &[u32] {
        &self.block_col
    }
    pub fn values(&self) -> &Values {
        &self.values
    }
    pub fn blocks(&self) -> usize {
        self.block_col.len()
    }
    /// Stored entries, explicit zeros included.
    pub fn stored(&self) -> usize {
        self.blocks() * self.br * self.bc
    }

    pub fn storage_bytes(&self) -> usize {
        self.block_row_ptr.len() * 4 + self.block_col.len() * 4 + self.values.storage_bytes()
    }

    pub fn row_costs(&self) -> Vec<usize> {
        let mut costs = Vec::with_capacity(self.rows);
        for w in self.block_row_ptr.windows(2) {
            let cost = (w[1] - w[0]) as usize * self.bc;
            for _ in 0..self.br {
                if costs.len() < self.rows {
                    costs.push(cost);
                }
            }
        }
        costs
    }

    fn block_row_of_blocks(&self) -> Vec<usize> {
        let mut owner = Vec::with_capacity(self.blocks());
        for (ib, w) in self.block_row_ptr.windows(2).enumerate() {
            owner.extend(std::iter::repeat_n(ib, (w[1] - w[0]) as usize));
        }
        owner
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        check_dims(self.rows, self.cols)?;
        check_block_shape(self.br, self.bc)?;
        let (nbr, nbc) = (self.rows.div_ceil(self.br), self.cols.div_ceil(self.bc));
        check_len("block_row_ptr", nbr + 1, self.block_row_ptr.len())?;
        let blocks = self.block_col.len();
        let stored = blocks
            .checked_mul(self.br * self.bc)
            .filter(|s| *s <= MAX_NNZ);
        let Some(stored) = stored else {
            return Err(FormatError::DimensionTooLarge {
                what: "stored entries",
                value: blocks.saturating_mul(self.br * self.bc),
                limit: MAX_NNZ,
            });
        };
        self.values.validate(stored, self.rows)?;
        if self.block_row_ptr[0] != 0 {
            return Err(FormatError::RowPtrStart {
                start: self.block_row_ptr[0],
            });
        }
        for (row, w) in self.block_row_ptr.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(FormatError::RowPtrNotMonotonic {
                    row,
                    from: w[0],
                    to: w[1],
                });
            }
        }
        let end = self.block_row_ptr[nbr];
        if end as usize != blocks {
            return Err(FormatError::RowPtrEnd { end, nnz: blocks });
        }
        for ib in 0..nbr {
            let (s, e) = (
                self.block_row_ptr[ib] as usize,
                self.block_row_ptr[ib + 1] as usize,
            );
            let mut prev: Option<usize> = None;
            for k in s..e {
                let jb = self.block_col[k] as usize;
                if jb >= nbc {
                    return Err(FormatError::ColumnOutOfRange {
                        row: ib * self.br,
                        col: jb * self.bc,
                        cols: self.cols,
                    });
                }
                if let Some(p) = prev {
                    if jb <= p {
                        return Err(FormatError::ColumnsNotSorted {
                            row: ib * self.br,
                            prev: p * self.bc,
                            col: jb * self.bc,
                        });
                    }
                }
                prev = Some(jb);
                self.check_padding(ib, jb, k)?;
            }
        }
        Ok(())
    }

    fn check_padding(&self, ib: usize, jb: usize, k: usize) -> Result<(), FormatError> {
        let base = k * self.br * self.bc;
        for i in 0..self.br {
            for j in 0..self.bc {
                let (r, c) = (ib * self.br + i, jb * self.bc + j);
                if r < self.rows && c < self.cols {
                    continue;
                }
                let zero = match &self.values {
                    Values::F32(v) => v[base + i * self.bc + j] == 0.0,
                    Values::I8 { q, .. } => q[base + i * self.bc + j] == 0,
                };
                if !zero {
                    return Err(FormatError::BlockPaddingNotZero {
                        block_row: ib,
                        col: c,
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(usize, usize, f64)) {
        let (br, bc) = (self.br, self.bc);
        for ib in 0..self.block_row_ptr.len() - 1 {
            for k in self.block_row_ptr[ib] as usize..self.block_row_ptr[ib + 1] as usize {
                let c0 = self.block_col[k] as usize * bc;
                for i in 0..br {
                    let r = ib * br + i;
                    if r >= self.rows {
                        break;
                    }
                    for j in 0..bc {
                        let c = c0 + j;
                        if c < self.cols {
                            f(r, c, self.values.weight(k * br * bc + i * bc + j, r));
                        }
                    }
                }
            }
        }
    }
}

fn check_block_shape(br: usize, bc: usize) -> Result<(), FormatError> {
    if br == 0 || bc == 0 || br > MAX_BLOCK_SIDE || bc > MAX_BLOCK_SIDE {
        return Err(FormatError::BadBlockShape { br, bc });
    }
    Ok(())
}
