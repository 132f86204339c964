//! CSR kernels with AVX2+FMA.
//!
//! SpMV gathers eight `x` entries per step (`vgatherdps`) and keeps two accumulators. A row's
//! tail of fewer than eight entries uses a masked gather when a full 8-wide index load stays
//! inside the arrays (it reads into the next row's entries but masks them out), else scalar code.
//! SpMM broadcasts each stored value over a contiguous batch row of `X`.

use core::arch::x86_64::*;
use std::ops::Range;

use super::{
    hsum, prefetch, scale_rows, spmm_row_acc, tail_mask, SimdIdx, SimdVal, PREFETCH_BYTES,
};
use crate::format::Csr;

/// # Safety
/// See [`crate::kernels::KernelFn`]; `n == 1`.
pub(crate) unsafe fn csr_spmv<I: SimdIdx>(
    w: &Csr<I>,
    x: &[f32],
    _n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { dispatch_values!(w, spmv, x, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn spmv<I: SimdIdx, V: SimdVal>(
    w: &Csr<I>,
    vals: &[V],
    scales: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (rp, ci) = (w.row_ptr(), w.col_idx());
    let (cp, vp, xp) = (ci.as_ptr(), vals.as_ptr(), x.as_ptr());
    let total = ci.len();
    let zero = _mm256_setzero_ps();
    for (li, r) in rows.enumerate() {
        let (s, e) = (rp[r] as usize, rp[r + 1] as usize);
        let (mut a0, mut a1) = (zero, zero);
        let mut tail = 0.0f32;
        let mut k = s;
        // SAFETY: `k + 16 <= e` (or `+ 8`) keeps index and value loads inside the row; every
        // column index is `< cols = x.len()`, so gathers read inside `x`. The masked tail loads
        // eight entries only when `k + 8 <= total`, and masked-off lanes are neither gathered
        // nor kept (their values are zeroed with the mask before the FMA).
        unsafe {
            while k + 16 <= e {
                prefetch(
                    vp.add(k)
                        .wrapping_add(PREFETCH_BYTES / std::mem::size_of::<V>())
                        as *const i8,
                );
                prefetch(
                    cp.add(k)
                        .wrapping_add(PREFETCH_BYTES / std::mem::size_of::<I>())
                        as *const i8,
                );
                let g0 = _mm256_i32gather_ps::<4>(xp, I::load8(cp.add(k)));
                let g1 = _mm256_i32gather_ps::<4>(xp, I::load8(cp.add(k + 8)));
                a0 = _mm256_fmadd_ps(V::load8(vp.add(k)), g0, a0);
                a1 = _mm256_fmadd_ps(V::load8(vp.add(k + 8)), g1, a1);
                k += 16;
            }
            if k + 8 <= e {
                let g0 = _mm256_i32gather_ps::<4>(xp, I::load8(cp.add(k)));
                a0 = _mm256_fmadd_ps(V::load8(vp.add(k)), g0, a0);
                k += 8;
            }
            if k < e {
                if k + 8 <= total {
                    let m = _mm256_castsi256_ps(tail_mask(e - k));
                    let g = _mm256_mask_i32gather_ps::<4>(zero, xp, I::load8(cp.add(k)), m);
                    let v = _mm256_and_ps(V::load8(vp.add(k)), m);
                    a1 = _mm256_fmadd_ps(v, g, a1);
                } else {
                    for j in k..e {
                        let v: f32 = (*vp.add(j)).into();
                        tail += v * *xp.add((*cp.add(j)).to_usize());
                    }
                }
            }
        }
        let sum = hsum(_mm256_add_ps(a0, a1)) + tail;
        y[li] = match scales {
            Some(sc) => sum * sc[r],
            None => sum,
        };
    }
}

/// # Safety
/// See [`crate::kernels::KernelFn`].
pub(crate) unsafe fn csr_spmm<I: SimdIdx>(
    w: &Csr<I>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { dispatch_values!(w, spmm, x, n, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn spmm<I: SimdIdx, V: SimdVal>(
    w: &Csr<I>,
    vals: &[V],
    scales: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (rp, ci) = (w.row_ptr(), w.col_idx());
    let cp = ci.as_ptr();
    y.fill(0.0);
    for (li, r) in rows.clone().enumerate() {
        let ks = rp[r] as usize..rp[r + 1] as usize;
        // SAFETY: output row `li` has `n` floats in `y`; entries `ks` belong to row `r` and their
        // columns are rows of `X` (`cols * n` floats).
        unsafe {
            spmm_row_acc(
                y.as_mut_ptr().add(li * n),
                n,
                x.as_ptr(),
                vals.as_ptr(),
                ks,
                |k| (*cp.add(k)).to_usize(),
            );
        }
    }
    scale_rows(y, n, scales, rows);
}
