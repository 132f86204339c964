//! Stored values: f32, or symmetric int8 with one f32 scale per output row.
//!
//! int8 encoding: `scale[r] = max_j |w[r, j]| / 127` over the row's stored entries and
//! `q = round(w / scale)` clamped to `[-127, 127]` (−128 is never produced, so the range is
//! symmetric). A row whose stored entries are all zero gets `scale = 0` and `q = 0`. Kernels
//! accumulate `q * x` in f32 and multiply by the row's scale once at the end.

use super::check_len;
use crate::error::FormatError;

/// The value array of a sparse format, in storage order.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I8 { q: Vec<i8>, scales: Vec<f32> },
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I8 { q, .. } => q.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> super::Dtype {
        match self {
            Values::F32(_) => super::Dtype::F32,
            Values::I8 { .. } => super::Dtype::I8,
        }
    }

    pub fn storage_bytes(&self) -> usize {
        match self {
            Values::F32(v) => v.len() * 4,
            Values::I8 { q, scales } => q.len() + scales.len() * 4,
        }
    }

    /// Checks the value count and, for int8, that there is one finite, non-negative scale per row.
    pub(crate) fn validate(&self, expected_len: usize, rows: usize) -> Result<(), FormatError> {
        check_len("values", expected_len, self.len())?;
        if let Values::I8 { scales, .. } = self {
            check_len("scales", rows, scales.len())?;
            for (row, &scale) in scales.iter().enumerate() {
                if !scale.is_finite() || scale < 0.0 {
                    return Err(FormatError::BadScale { row, scale });
                }
            }
        }
        Ok(())
    }

    /// The effective weight of stored entry `k`, which belongs to row `row`.
    #[inline]
    pub(crate) fn weight(&self, k: usize, row: usize) -> f64 {
        match self {
            Values::F32(v) => v[k] as f64,
            Values::I8 { q, scales } => q[k] as f64 * scales[row] as f64,
        }
    }
}

/// Quantizes f32 values to int8 with per-row scales. `row_of(k)` names the row of entry `k`.
/// Refuses non-finite weights, reporting the row and `col_of(k)`.
pub fn quantize_per_row(
    values: &[f32],
    rows: usize,
    row_of: impl Fn(usize) -> usize,
    col_of: impl Fn(usize) -> usize,
) -> Result<Values, FormatError> {
    let mut max_abs = vec![0.0f32; rows];
    for (k, &v) in values.iter().enumerate() {
        let row = row_of(k);
        if !v.is_finite() {
            return Err(FormatError::NonFiniteWeight {
                row,
                col: col_of(k),
                value: v,
            });
        }
        max_abs[row] = max_abs[row].max(v.abs());
    }
    let scales: Vec<f32> = max_abs.iter().map(|m| m / 127.0).collect();
    let q = values
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let s = scales[row_of(k)];
            if s == 0.0 {
                0
            } else {
                (v / s).round().clamp(-127.0, 127.0) as i8
            }
        })
        .collect();
    Ok(Values::I8 { q, scales })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_error_is_within_half_a_step() {
        let vals = [0.5f32, -1.0, 0.25, 3.0, -0.1, 0.0];
        let rows = [0usize, 0, 0, 1, 1, 1];
        let q = quantize_per_row(&vals, 2, |k| rows[k], |k| k).unwrap();
        for (k, &v) in vals.iter().enumerate() {
            let w = q.weight(k, rows[k]);
            let Values::I8 { scales, .. } = &q else {
                unreachable!()
            };
            assert!(
                (w - v as f64).abs() <= scales[rows[k]] as f64 * 0.5 + 1e-9,
                "k={k}"
            );
        }
    }

    #[test]
    fn zero_row_gets_zero_scale() {
        let q = quantize_per_row(&[0.0, 0.0], 1, |_| 0, |k| k).unwrap();
        assert_eq!(
            q,
            Values::I8 {
                q: vec![0, 0],
                scales: vec![0.0]
            }
        );
    }

    #[test]
    fn rejects_non_finite_weight() {
        let err = quantize_per_row(&[1.0, f32::NAN], 1, |_| 0, |k| k).unwrap_err();
        assert!(matches!(
            err,
            FormatError::NonFiniteWeight { row: 0, col: 1, .. }
        ));
    }
}
