//! Reference twins: the plain definition of every kernel, in f64.
//!
//! `reference` walks the stored entries of any format (the same entries its kernels use, see the
//! NaN rule in [`crate::format`]) and accumulates `w · x` in f64. It also returns, per output,
//! `Σ|w·x|` and the number of terms, which give the error bound every f32 kernel must meet:
//!
//! `|y − y_ref| ≤ c · ε · Σ|w·x| + c · 2⁻¹⁴⁹`, with `ε = 2⁻²³` and `c = terms + 2`.
//!
//! `terms · u` (u = 2⁻²⁴) bounds the rounding of any f32 summation order of `terms` products
//! (FMA or not); `ε = 2u` leaves room for the final int8 scale multiply, and the absolute part
//! covers results in the subnormal range. NaN in the reference must be NaN in the kernel. When
//! the exact result overflows f32 the kernel must return the infinity of the same sign.

use crate::format::WeightMatrix;

/// Exact-ish product and its error budget.
#[derive(Debug, Clone)]
pub struct Reference {
    /// `[rows, n]` row-major.
    pub y: Vec<f64>,
    /// `Σ|w·x|` per output, `[rows, n]`.
    pub abs: Vec<f64>,
    /// Stored entries per row.
    pub terms: Vec<usize>,
    pub n: usize,
}

/// Computes `W · X` in f64 from the stored entries. `x` is `[cols, n]` row-major.
pub fn reference(w: &WeightMatrix, x: &[f32], n: usize) -> Reference {
    assert_eq!(x.len(), w.cols() * n, "reference: x must be [cols, n]");
    let rows = w.rows();
    let mut y = vec![0.0f64; rows * n];
    let mut abs = vec![0.0f64; rows * n];
    let mut terms = vec![0usize; rows];
    w.for_each_entry(|r, c, wv| {
        terms[r] += 1;
        for j in 0..n {
            let p = wv * x[c * n + j] as f64;
            y[r * n + j] += p;
            abs[r * n + j] += p.abs();
        }
    });
    Reference { y, abs, terms, n }
}

impl Reference {
    /// The allowed absolute error for output `(r, j)`.
    pub fn tolerance(&self, r: usize, j: usize) -> f64 {
        let c = (self.terms[r] + 2) as f64;
        c * f32::EPSILON as f64 * self.abs[r * self.n + j] + c * f64::from(f32::from_bits(1))
    }

    /// Checks `got` (`[rows, n]`) against the bound. Returns the first violation.
    pub fn check(&self, got: &[f32]) -> Result<(), String> {
        if got.len() != self.y.len() {
            return Err(format!("length {} != {}", got.len(), self.y.len()));
        }
        for (i, (&g, &want)) in got.iter().zip(&self.y).enumerate() {
            let (r, j) = (i / self.n, i % self.n);
            let ok = if want.is_nan() {
                g.is_nan()
            } else if (want as f32).is_infinite() {
                g == want as f32
            } else {
                g.is_finite() && (g as f64 - want).abs() <= self.tolerance(r, j)
            };
            if !ok {
                return Err(format!(
                    "output ({r}, {j}): got {g:e}, want {want:e} (tolerance {:e}, {} terms)",
                    self.tolerance(r, j),
                    self.terms[r]
                ));
            }
        }
        Ok(())
    }
}
