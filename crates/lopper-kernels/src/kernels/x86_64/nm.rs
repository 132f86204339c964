//! N:M kernels with AVX2+FMA.
//!
//! SpMV (for `8 % n == 0`) turns eight slots into column indices in registers: slot `s` of a
//! row lies in group `s / n`, so its column is `(s / n) * m + idx[s]`. With `s` a multiple of 8
//! and `n` dividing 8, the group offsets of the eight lanes are a constant vector.

use core::arch::x86_64::*;
use std::ops::Range;

use super::{hsum, spmm_row_acc, tail_mask};
use crate::format::NmMatrix;

/// # Safety
/// See [`crate::kernels::KernelFn`]; `n == 1` and `8 % w.n() == 0`.
pub(crate) unsafe fn nm_spmv(
    w: &NmMatrix,
    x: &[f32],
    _n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { spmv(w, x, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn spmv(w: &NmMatrix, x: &[f32], y: &mut [f32], rows: Range<usize>) {
    let (gn, gm, row_len) = (w.n(), w.m(), w.row_len());
    let (vp, ip, xp) = (w.values().as_ptr(), w.idx().as_ptr(), x.as_ptr());
    let total = w.values().len();
    let lane: [i32; 8] = std::array::from_fn(|l| ((l / gn) * gm) as i32);
    // SAFETY: `lane` has 8 i32.
    let lane_off = unsafe { _mm256_loadu_si256(lane.as_ptr() as *const __m256i) };
    let zero = _mm256_setzero_ps();
    for (li, r) in rows.enumerate() {
        let base = r * row_len;
        let (mut a0, mut a1) = (zero, zero);
        let mut tail = 0.0f32;
        let mut s = 0;
        // SAFETY: slot `base + s .. base + s + 8` lies inside the row when `s + 8 <= row_len`;
        // every column `(s / n) * m + idx < cols = x.len()` by validation. The masked tail loads
        // eight slots only when they lie inside the arrays and gathers only unmasked lanes.
        unsafe {
            while s + 8 <= row_len {
                let idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(ip.add(base + s) as *const __m128i));
                let cols = _mm256_add_epi32(
                    _mm256_add_epi32(idx, lane_off),
                    _mm256_set1_epi32(((s / gn) * gm) as i32),
                );
                let g = _mm256_i32gather_ps::<4>(xp, cols);
                if (s / 8) % 2 == 0 {
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vp.add(base + s)), g, a0);
                } else {
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(vp.add(base + s)), g, a1);
                }
                s += 8;
            }
            if s < row_len {
                if base + s + 8 <= total {
                    let m = tail_mask(row_len - s);
                    let idx =
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64(ip.add(base + s) as *const __m128i));
                    let cols = _mm256_add_epi32(
                        _mm256_add_epi32(idx, lane_off),
                        _mm256_set1_epi32(((s / gn) * gm) as i32),
                    );
                    let mf = _mm256_castsi256_ps(m);
                    let g = _mm256_mask_i32gather_ps::<4>(zero, xp, cols, mf);
                    a1 = _mm256_fmadd_ps(
                        _mm256_and_ps(_mm256_loadu_ps(vp.add(base + s)), mf),
                        g,
                        a1,
                    );
                } else {
                    for t in s..row_len {
                        let col = (t / gn) * gm + *ip.add(base + t) as usize;
                        tail += *vp.add(base + t) * *xp.add(col);
                    }
                }
            }
        }
        y[li] = hsum(_mm256_add_ps(a0, a1)) + tail;
    }
}

/// # Safety
/// See [`crate::kernels::KernelFn`].
pub(crate) unsafe fn nm_spmm(w: &NmMatrix, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { spmm(w, x, n, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn spmm(w: &NmMatrix, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    let (gn, gm, row_len) = (w.n(), w.m(), w.row_len());
    let ip = w.idx().as_ptr();
    y.fill(0.0);
    for (li, r) in rows.enumerate() {
        let base = r * row_len;
        // SAFETY: output row `li` has `n` floats; slots `base..base + row_len` exist and map to
        // columns `< cols`, which are rows of `X`.
        unsafe {
            spmm_row_acc(
                y.as_mut_ptr().add(li * n),
                n,
                x.as_ptr(),
                w.values().as_ptr(),
                base..base + row_len,
                |k| ((k - base) / gn) * gm + *ip.add(k) as usize,
            );
        }
    }
}
