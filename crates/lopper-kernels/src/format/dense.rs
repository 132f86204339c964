//! Dense f32 matrices, row-major `[rows, cols]` = `[out, in]`.

use super::{check_dims, check_len};
use crate::error::FormatError;

/// A dense row-major matrix. Invariant: `data.len() == rows * cols`, both dims `<= MAX_DIM`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Dense {
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, FormatError> {
        check_dims(rows, cols)?;
        check_len("dense data", rows * cols, data.len())?;
        Ok(Self { rows, cols, data })
    }

    pub fn zeros(rows: usize, cols: usize) -> Result<Self, FormatError> {
        check_dims(rows, cols)?;
        Ok(Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn get(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }

    pub fn storage_bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// Fraction of entries that are exactly zero.
    pub fn sparsity(&self) -> f64 {
        if self.data.is_empty() {
            return 0.0;
        }
        self.data.iter().filter(|v| **v == 0.0).count() as f64 / self.data.len() as f64
    }

    /// Zeroes every entry whose mask bit is false. The mask is row-major like the data.
    pub fn apply_mask(&mut self, mask: &[bool]) -> Result<(), FormatError> {
        if mask.len() != self.data.len() {
            return Err(FormatError::MaskLength {
                expected: self.data.len(),
                actual: mask.len(),
            });
        }
        for (v, keep) in self.data.iter_mut().zip(mask) {
            if !keep {
                *v = 0.0;
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        check_dims(self.rows, self.cols)?;
        check_len("dense data", self.rows * self.cols, self.data.len())
    }

    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(usize, usize, f64)) {
        for r in 0..self.rows {
            for (c, &w) in self.row(r).iter().enumerate() {
                f(r, c, w as f64);
            }
        }
    }
}
