//! SparseGPT (Frantar & Alistarh 2023): prune a Linear column by column and update the columns
//! not yet visited to compensate, using the inverse Hessian of the layer-wise reconstruction
//! loss `H = X Xᵀ` from calibration inputs (optimal brain surgeon, one column at a time).
//!
//! `w` is row-major `[out, in]`; `h` is `[in, in]`. Following the reference implementation:
//! dampening `λ = damp · mean(diag H)`, dead inputs (zero diagonal) get weight zero, the upper
//! Cholesky factor `U` of `H⁻¹` drives the updates, masks are chosen per block of `block`
//! columns from the current weights (`w² / U_ii²`, the OBS saliency; summed over each block of
//! rows for [`Target::Block`]), and updates to later blocks are applied lazily once per block.

use super::linalg::{cholesky_lower, cholesky_upper, inverse_from_cholesky, mean_diagonal};
use super::Target;
use crate::error::ModelError;
use lopper_kernels::mask::top_k_mask;

/// Prunes `w` in place to `target`; `h` is consumed as scratch.
pub fn sparsegpt(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    mut h: Vec<f64>,
    target: Target,
    damp: f64,
    block: usize,
) -> Result<(), ModelError> {
    assert_eq!(w.len(), rows * cols);
    assert_eq!(h.len(), cols * cols);
    let mut wd: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    for i in 0..cols {
        if h[i * cols + i] == 0.0 {
            h[i * cols + i] = 1.0;
            for r in 0..rows {
                wd[r * cols + i] = 0.0;
            }
        }
    }
    let mean_diag = mean_diagonal(&h, cols);
    // Dampening grows until H is numerically positive definite (calibration sets smaller than
    // the layer's width make H singular).
    let mut lambda = damp * mean_diag;
    let u = loop {
        let mut hd = h.clone();
        for i in 0..cols {
            hd[i * cols + i] += lambda;
        }
        if let Some(l) = cholesky_lower(&hd, cols) {
            let inv = inverse_from_cholesky(&l, cols);
            if let Some(u) = cholesky_upper(&inv, cols) {
                break u;
            }
        }
        lambda = if lambda > 0.0 { lambda * 10.0 } else { 1e-8 };
        if lambda > 1e6 * mean_diag.max(1e-30) {
            return Err(ModelError::Plan(
                "SparseGPT: the calibration Hessian stays singular after dampening".into(),
            ));
        }
    };
    let block = block.max(1);
    let mut err = vec![0.0f64; rows * block];
    let mut pruned = vec![false; rows * block];
    for i1 in (0..cols).step_by(block) {
        let i2 = (i1 + block).min(cols);
        let count = i2 - i1;
        if let Target::Unstructured(sparsity) | Target::Block { sparsity, .. } = target {
            // Saliency of every entry of the block at its current (updated) value.
            let mut scores = vec![0.0f32; rows * count];
            for r in 0..rows {
                for c in 0..count {
                    let d = u[(i1 + c) * cols + i1 + c];
                    let v = wd[r * cols + i1 + c];
                    scores[r * count + c] = ((v * v) / (d * d)).sqrt() as f32;
                }
            }
            let keep = match target {
                Target::Block { rows: br, .. } => {
                    super::row_block_mask(&scores, count, br, sparsity, false)
                }
                _ => top_k_mask(&scores, sparsity),
            };
            // `pruned` rows are `block` wide; the last block may be narrower.
            for r in 0..rows {
                for c in 0..count {
                    pruned[r * block + c] = !keep[r * count + c];
                }
            }
        }
        for c in 0..count {
            let i = i1 + c;
            if let Target::Nm { n, m } = target {
                if (i - i1).is_multiple_of(m) {
                    // Per row, the m - n entries of least saliency in this group go.
                    let end = (i + m).min(i2);
                    for r in 0..rows {
                        let s: Vec<f32> = (i..end)
                            .map(|j| {
                                let d = u[j * cols + j];
                                (wd[r * cols + j].abs() / d) as f32
                            })
                            .collect();
                        let keep = top_k_mask(&s, 1.0 - n as f64 / m as f64);
                        for (j, k) in keep.iter().enumerate() {
                            pruned[r * block + (i - i1) + j] = !k;
                        }
                    }
                }
            }
            let d = u[i * cols + i];
            let urow = &u[i * cols + i..i * cols + i2];
            for r in 0..rows {
                let row = &mut wd[r * cols..(r + 1) * cols];
                let wv = row[i];
                let q = if pruned[r * block + c] { 0.0 } else { wv };
                let e = (wv - q) / d;
                // Columns i+1..i2 of this block absorb the error now; column i becomes q.
                for (x, &uv) in row[i..i2].iter_mut().zip(urow) {
                    *x -= e * uv;
                }
                row[i] = q;
                err[r * block + c] = e;
            }
        }
        if i2 < cols {
            // Lazy update of the columns after this block: W[:, i2:] -= Err · U[i1:i2, i2:].
            for r in 0..rows {
                let row = &mut wd[r * cols + i2..(r + 1) * cols];
                for c in 0..count {
                    let e = err[r * block + c];
                    if e != 0.0 {
                        let urow = &u[(i1 + c) * cols + i2..(i1 + c + 1) * cols];
                        for (x, &uv) in row.iter_mut().zip(urow) {
                            *x -= e * uv;
                        }
                    }
                }
            }
        }
    }
    for (o, v) in w.iter_mut().zip(&wd) {
        *o = *v as f32;
    }
    Ok(())
}
