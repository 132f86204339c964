//! Portable kernels: plain Rust, no explicit SIMD, any batch `n >= 1`.
//!
//! They accumulate in f32 in storage order, entry by entry, into the output row (which is the
//! access order that keeps `X` rows streaming for `n > 1`). They are safe functions: every
//! index is bounds-checked, so a broken invariant panics instead of reading out of bounds.

use std::ops::Range;

use crate::format::{Bsr, ColIndex, Csr, Dense, NmMatrix, Values};

/// Adds `v * X[c, :]` to `out`.
#[inline(always)]
fn axpy(out: &mut [f32], v: f32, x: &[f32], c: usize, n: usize) {
    for (o, &xv) in out.iter_mut().zip(&x[c * n..(c + 1) * n]) {
        *o += v * xv;
    }
}

/// Multiplies each output row (of `n` floats, rows `rows`) by its int8 scale, if any.
pub(crate) fn scale_rows(y: &mut [f32], n: usize, scales: Option<&[f32]>, rows: Range<usize>) {
    if let Some(s) = scales {
        for (out, r) in y.chunks_exact_mut(n).zip(rows) {
            out.iter_mut().for_each(|o| *o *= s[r]);
        }
    }
}

pub(crate) fn dense_spmm(w: &Dense, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    for (out, r) in y.chunks_exact_mut(n).zip(rows) {
        out.fill(0.0);
        for (c, &v) in w.row(r).iter().enumerate() {
            axpy(out, v, x, c, n);
        }
    }
}

fn csr_rows<I: ColIndex, V: Copy + Into<f32>>(
    w: &Csr<I>,
    vals: &[V],
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (rp, ci) = (w.row_ptr(), w.col_idx());
    for (out, r) in y.chunks_exact_mut(n).zip(rows) {
        out.fill(0.0);
        for k in rp[r] as usize..rp[r + 1] as usize {
            axpy(out, vals[k].into(), x, ci[k].to_usize(), n);
        }
    }
}

pub(crate) fn csr_spmm<I: ColIndex>(
    w: &Csr<I>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    match w.values() {
        Values::F32(v) => csr_rows(w, v, x, n, y, rows),
        Values::I8 { q, scales } => {
            csr_rows(w, q, x, n, y, rows.clone());
            scale_rows(y, n, Some(scales), rows);
        }
    }
}

fn bsr_rows<V: Copy + Into<f32>>(
    w: &Bsr,
    vals: &[V],
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (br, bc) = (w.block_rows(), w.block_cols());
    let (brp, bcol) = (w.block_row_ptr(), w.block_col());
    y.fill(0.0);
    let first_block_row = rows.start / br;
    let last_block_row = rows.end.div_ceil(br);
    for ib in first_block_row..last_block_row {
        for k in brp[ib] as usize..brp[ib + 1] as usize {
            let c0 = bcol[k] as usize * bc;
            for i in 0..br {
                let r = ib * br + i;
                if r >= rows.end {
                    break;
                }
                let out = &mut y[(r - rows.start) * n..(r - rows.start + 1) * n];
                for j in 0..bc.min(w.cols() - c0) {
                    axpy(out, vals[(k * br + i) * bc + j].into(), x, c0 + j, n);
                }
            }
        }
    }
}

pub(crate) fn bsr_spmm(w: &Bsr, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    match w.values() {
        Values::F32(v) => bsr_rows(w, v, x, n, y, rows),
        Values::I8 { q, scales } => {
            bsr_rows(w, q, x, n, y, rows.clone());
            scale_rows(y, n, Some(scales), rows);
        }
    }
}

pub(crate) fn nm_spmm(w: &NmMatrix, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    let (vals, idx, row_len) = (w.values(), w.idx(), w.row_len());
    let (gn, gm) = (w.n(), w.m());
    for (out, r) in y.chunks_exact_mut(n).zip(rows) {
        out.fill(0.0);
        for s in 0..row_len {
            let k = r * row_len + s;
            axpy(out, vals[k], x, (s / gn) * gm + idx[k] as usize, n);
        }
    }
}

/// Dense `Y = W[rows] · X` through the `gemm` crate, single-threaded (the executor splits rows
/// across threads). `gemm` picks its own SIMD path at run time, independent of `LOPPER_ISA`.
pub(crate) fn dense_gemm(w: &Dense, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    let (m, k) = (rows.len(), w.cols());
    assert!(
        rows.end <= w.rows() && x.len() == k * n && y.len() == m * n,
        "dense_gemm: shape"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let lhs = &w.data()[rows.start * k..rows.end * k];
    // SAFETY: the assert above makes `y` m x n, `lhs` m x k and `x` k x n, all row-major with
    // unit column stride; `read_dst = false` means `y` is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            x.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
