//! N:M structured sparsity: at most `n` stored entries in every group of `m` consecutive
//! columns of a row (2:4 is the pattern of sparse tensor cores).
//!
//! Storage: for each row, for each of the `cols / m` groups, exactly `n` slots, each a value
//! (`f32`) and an in-group index (`u8`, `< m`). Invariants (checked by every constructor):
//! - `1 <= n <= m <= 16` and `cols % m == 0`;
//! - `values.len() == idx.len() == rows * (cols / m) * n`;
//! - within a group the `n` indices are strictly increasing.
//!
//! A group with fewer than `n` kept entries fills its spare slots with zeros at unused positions;
//! those slots are stored entries (see the NaN rule in [`crate::format`]).

use super::{check_dims, check_len, csr::check_mask, Dense};
use crate::error::FormatError;

/// A validated N:M matrix `[rows, cols]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NmMatrix {
    rows: usize,
    cols: usize,
    n: usize,
    m: usize,
    values: Vec<f32>,
    idx: Vec<u8>,
}

impl NmMatrix {
    pub fn from_parts(
        rows: usize,
        cols: usize,
        n: usize,
        m: usize,
        values: Vec<f32>,
        idx: Vec<u8>,
    ) -> Result<Self, FormatError> {
        let mat = Self {
            rows,
            cols,
            n,
            m,
            values,
            idx,
        };
        mat.validate()?;
        Ok(mat)
    }

    /// Encodes the entries for which `keep(row, col, value)` holds. A group with more than `n`
    /// kept entries is an error: choose them first, e.g. with [`crate::mask::nm_mask`].
    pub fn from_dense_where(
        dense: &Dense,
        n: usize,
        m: usize,
        mut keep: impl FnMut(usize, usize, f32) -> bool,
    ) -> Result<Self, FormatError> {
        check_pattern(n, m, dense.cols())?;
        let (rows, cols) = (dense.rows(), dense.cols());
        let groups = cols / m;
        let mut values = Vec::with_capacity(rows * groups * n);
        let mut idx = Vec::with_capacity(rows * groups * n);
        let mut slots: Vec<u8> = Vec::with_capacity(m);
        for r in 0..rows {
            for g in 0..groups {
                slots.clear();
                for j in 0..m {
                    let c = g * m + j;
                    if keep(r, c, dense.get(r, c)) {
                        slots.push(j as u8);
                    }
                }
                if slots.len() > n {
                    return Err(FormatError::NmGroupOverfull {
                        row: r,
                        group: g,
                        count: slots.len(),
                        n,
                    });
                }
                let kept = slots.len();
                for j in 0..m as u8 {
                    if slots.len() == n {
                        break;
                    }
                    if !slots[..kept].contains(&j) {
                        slots.push(j);
                    }
                }
                let spare: Vec<u8> = slots[kept..].to_vec();
                slots.sort_unstable();
                for &j in slots.iter() {
                    let c = g * m + j as usize;
                    values.push(if spare.contains(&j) {
                        0.0
                    } else {
                        dense.get(r, c)
                    });
                    idx.push(j);
                }
            }
        }
        Self::from_parts(rows, cols, n, m, values, idx)
    }

    pub fn from_dense_masked(
        dense: &Dense,
        n: usize,
        m: usize,
        mask: &[bool],
    ) -> Result<Self, FormatError> {
        check_mask(dense, mask)?;
        let cols = dense.cols();
        Self::from_dense_where(dense, n, m, |r, c, _| mask[r * cols + c])
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn n(&self) -> usize {
        self.n
    }
    pub fn m(&self) -> usize {
        self.m
    }
    pub fn values(&self) -> &[f32] {
        &self.values
    }
    pub fn idx(&self) -> &[u8] {
        &self.idx
    }
    /// Slots per row (`cols / m * n`).
    pub fn row_len(&self) -> usize {
        self.cols / self.m * self.n
    }
    pub fn stored(&self) -> usize {
        self.values.len()
    }
    pub fn storage_bytes(&self) -> usize {
        self.values.len() * 4 + self.idx.len()
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        check_dims(self.rows, self.cols)?;
        check_pattern(self.n, self.m, self.cols)?;
        let len = self.rows * (self.cols / self.m) * self.n;
        check_len("values", len, self.values.len())?;
        check_len("idx", len, self.idx.len())?;
        let groups = self.cols / self.m;
        for (gi, chunk) in self.idx.chunks_exact(self.n).enumerate() {
            let ok = chunk.iter().all(|&j| (j as usize) < self.m)
                && chunk.windows(2).all(|w| w[0] < w[1]);
            if !ok {
                return Err(FormatError::NmBadIndex {
                    row: gi / groups.max(1),
                    group: gi % groups.max(1),
                    m: self.m,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(usize, usize, f64)) {
        let row_len = self.row_len();
        for r in 0..self.rows {
            for s in 0..row_len {
                let k = r * row_len + s;
                let c = (s / self.n) * self.m + self.idx[k] as usize;
                f(r, c, self.values[k] as f64);
            }
        }
    }
}

fn check_pattern(n: usize, m: usize, cols: usize) -> Result<(), FormatError> {
    if n == 0 || n > m || m > 16 {
        return Err(FormatError::BadNmPattern { n, m });
    }
    if !cols.is_multiple_of(m) {
        return Err(FormatError::NmColsNotMultiple { cols, m });
    }
    Ok(())
}
