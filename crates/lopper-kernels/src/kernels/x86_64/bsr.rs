//! BSR kernels with AVX2+FMA for 1x8 and 4x1 blocks.
//!
//! - 1x8 SpMV: one contiguous 8-wide load of `x` per block (masked at the right edge), no gather.
//! - 1x8 SpMM: a block is eight consecutive columns; handled as eight entries by the shared
//!   batch-row routine, the right-edge block clipped to the matrix.
//! - 4x1 SpMV: one broadcast of `x[c]` feeds four rows (128-bit FMA).
//! - 4x1 SpMM: one load of a 16-wide tile of `X[c, :]` feeds four rows (eight accumulators).
//!   A final block row with fewer than four rows runs the portable kernel.

use core::arch::x86_64::*;
use std::ops::Range;

use super::{hsum, prefetch, scale_rows, spmm_row_acc, tail_mask, SimdVal, PREFETCH_BYTES};
use crate::format::Bsr;
use crate::kernels::generic;

/// # Safety
/// See [`crate::kernels::KernelFn`]; `n == 1` and 1x8 blocks.
pub(crate) unsafe fn bsr1x8_spmv(w: &Bsr, x: &[f32], _n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { dispatch_values!(w, spmv_1x8, x, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn spmv_1x8<V: SimdVal>(
    w: &Bsr,
    vals: &[V],
    scales: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (brp, bcol, cols) = (w.block_row_ptr(), w.block_col(), w.cols());
    let (vp, xp) = (vals.as_ptr(), x.as_ptr());
    let bp = bcol.as_ptr();
    for (li, r) in rows.enumerate() {
        let (s, mut e) = (brp[r] as usize, brp[r + 1] as usize);
        // Four chains: with two, the FMA latency bound each block to two cycles (measured on
        // an AMD EPYC guest: LeNet-300-100's fc1, 4.4 k blocks in 2.8 us).
        let mut acc = [_mm256_setzero_ps(); 4];
        // SAFETY: block `k` holds 8 values at `8k` and starts at column `c0 = 8 * bcol[k] <
        // cols`. Blocks are sorted, so only the row's last block can cross the right edge; it is
        // peeled off and loads `x` with a mask that touches only lanes inside `x`. Every other
        // block reads `x[c0..c0 + 8]` in full. Every block read has `k + j < e`: four at a time
        // while `k + 4 <= e`, then the remaining `e - k < 4`.
        unsafe {
            let mut edge = _mm256_setzero_ps();
            if e > s && *bp.add(e - 1) as usize * 8 + 8 > cols {
                let c0 = *bp.add(e - 1) as usize * 8;
                let xv = _mm256_maskload_ps(xp.add(c0), tail_mask(cols - c0));
                edge = _mm256_mul_ps(V::load8(vp.add(8 * (e - 1))), xv);
                e -= 1;
            }
            let mut k = s;
            while k + 4 <= e {
                prefetch(
                    vp.add(8 * k)
                        .wrapping_add(PREFETCH_BYTES / std::mem::size_of::<V>())
                        as *const i8,
                );
                prefetch(bp.add(k).wrapping_add(PREFETCH_BYTES / 8) as *const i8);
                for (j, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(xp.add(*bp.add(k + j) as usize * 8));
                    *a = _mm256_fmadd_ps(V::load8(vp.add(8 * (k + j))), xv, *a);
                }
                k += 4;
            }
            for (j, a) in acc.iter_mut().enumerate().take(e - k) {
                let xv = _mm256_loadu_ps(xp.add(*bp.add(k + j) as usize * 8));
                *a = _mm256_fmadd_ps(V::load8(vp.add(8 * (k + j))), xv, *a);
            }
            acc[3] = _mm256_add_ps(acc[3], edge);
        }
        let sum = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        y[li] = scales.map_or(sum, |sc| sum * sc[r]);
    }
}

/// # Safety
/// See [`crate::kernels::KernelFn`]; 1x8 blocks.
pub(crate) unsafe fn bsr1x8_spmm(w: &Bsr, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { dispatch_values!(w, spmm_1x8, x, n, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn spmm_1x8<V: SimdVal>(
    w: &Bsr,
    vals: &[V],
    scales: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (brp, bcol, cols) = (w.block_row_ptr(), w.block_col(), w.cols());
    y.fill(0.0);
    let col = |f: usize| bcol[f / 8] as usize * 8 + f % 8;
    for (li, r) in rows.clone().enumerate() {
        let (s, mut e) = (brp[r] as usize, brp[r + 1] as usize);
        // SAFETY: output row `li` has `n` floats; flat entry `f` of block `f / 8` is value `f`,
        // and only blocks wholly inside the matrix are passed in full; the last block of a row
        // may cross the right edge and is clipped to `cols - c0` entries.
        unsafe {
            let out = y.as_mut_ptr().add(li * n);
            if e > s && bcol[e - 1] as usize * 8 + 8 > cols {
                let c0 = bcol[e - 1] as usize * 8;
                let f0 = (e - 1) * 8;
                spmm_row_acc(out, n, x.as_ptr(), vals.as_ptr(), f0..f0 + (cols - c0), col);
                e -= 1;
            }
            spmm_row_acc(out, n, x.as_ptr(), vals.as_ptr(), s * 8..e * 8, col);
        }
    }
    scale_rows(y, n, scales, rows);
}

/// # Safety
/// See [`crate::kernels::KernelFn`]; `n == 1` and 4x1 blocks.
pub(crate) unsafe fn bsr4x1_spmv(w: &Bsr, x: &[f32], _n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { dispatch_values!(w, spmv_4x1, x, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn spmv_4x1<V: SimdVal>(
    w: &Bsr,
    vals: &[V],
    scales: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (brp, bcol) = (w.block_row_ptr(), w.block_col());
    let vp = vals.as_ptr();
    for ib in rows.start / 4..rows.end.div_ceil(4) {
        let (s, e) = (brp[ib] as usize, brp[ib + 1] as usize);
        // Four accumulator chains: with two, each block waited on the FMA latency of the one
        // two blocks back (LeNet-5 fc1: 1.8 cycles per block).
        let mut acc = [_mm_setzero_ps(); 4];
        let mut k = s;
        // SAFETY: block `k` holds 4 values at `4k`; `bcol[k] < cols = x.len()` (1-wide blocks).
        unsafe {
            let block = |k: usize| {
                (
                    V::load4(vp.add(4 * k)),
                    _mm_set1_ps(*x.get_unchecked(*bcol.get_unchecked(k) as usize)),
                )
            };
            while k + 4 <= e {
                for (j, a) in acc.iter_mut().enumerate() {
                    let (v, xv) = block(k + j);
                    *a = _mm_fmadd_ps(v, xv, *a);
                }
                k += 4;
            }
            for (j, kk) in (k..e).enumerate() {
                let (v, xv) = block(kk);
                acc[j] = _mm_fmadd_ps(v, xv, acc[j]);
            }
        }
        let (a0, a1) = (_mm_add_ps(acc[0], acc[2]), _mm_add_ps(acc[1], acc[3]));
        let mut out = [0.0f32; 4];
        // SAFETY: `out` has 4 floats.
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), _mm_add_ps(a0, a1)) };
        for (i, v) in out.iter().enumerate() {
            let r = ib * 4 + i;
            if r < rows.end {
                y[r - rows.start] = scales.map_or(*v, |sc| v * sc[r]);
            }
        }
    }
}

/// # Safety
/// See [`crate::kernels::KernelFn`]; 4x1 blocks.
pub(crate) unsafe fn bsr4x1_spmm(w: &Bsr, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { dispatch_values!(w, spmm_4x1, x, n, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn spmm_4x1<V: SimdVal>(
    w: &Bsr,
    vals: &[V],
    scales: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (brp, bcol) = (w.block_row_ptr(), w.block_col());
    let (vp, xp) = (vals.as_ptr(), x.as_ptr());
    let full_end = rows.start + (rows.len() / 4) * 4;
    for r0 in (rows.start..full_end).step_by(4) {
        let ib = r0 / 4;
        let ks = brp[ib] as usize..brp[ib + 1] as usize;
        let out = y[(r0 - rows.start) * n..].as_mut_ptr();
        let mut j0 = 0;
        // SAFETY: the four output rows `r0..r0 + 4` lie in `y` (`r0 + 4 <= rows.end`), each of
        // `n` floats; every tile stays below `n`; block `k` holds 4 values at `4k` and its
        // column is a row of `X`.
        unsafe {
            while j0 + 16 <= n {
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for k in ks.clone() {
                    let xr = xp.add(bcol[k] as usize * n + j0);
                    let (x0, x1) = (_mm256_loadu_ps(xr), _mm256_loadu_ps(xr.add(8)));
                    for (i, a) in acc.iter_mut().enumerate() {
                        let v = _mm256_set1_ps((*vp.add(4 * k + i)).into());
                        a[0] = _mm256_fmadd_ps(v, x0, a[0]);
                        a[1] = _mm256_fmadd_ps(v, x1, a[1]);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.add(i * n + j0), a[0]);
                    _mm256_storeu_ps(out.add(i * n + j0 + 8), a[1]);
                }
                j0 += 16;
            }
            if j0 + 8 <= n {
                let mut acc = [_mm256_setzero_ps(); 4];
                for k in ks.clone() {
                    let x0 = _mm256_loadu_ps(xp.add(bcol[k] as usize * n + j0));
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_set1_ps((*vp.add(4 * k + i)).into()), x0, *a);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.add(i * n + j0), *a);
                }
                j0 += 8;
            }
            if j0 < n {
                for i in 0..4 {
                    for j in j0..n {
                        *out.add(i * n + j) = 0.0;
                    }
                }
                for k in ks.clone() {
                    let xr = xp.add(bcol[k] as usize * n);
                    for i in 0..4 {
                        let v: f32 = (*vp.add(4 * k + i)).into();
                        for j in j0..n {
                            *out.add(i * n + j) += v * *xr.add(j);
                        }
                    }
                }
            }
        }
    }
    scale_rows(
        &mut y[..(full_end - rows.start) * n],
        n,
        scales,
        rows.start..full_end,
    );
    if full_end < rows.end {
        // The last block row of the matrix has fewer than four rows.
        generic::bsr_spmm(
            w,
            x,
            n,
            &mut y[(full_end - rows.start) * n..],
            full_end..rows.end,
        );
    }
}
