//! Dense f32 GEMV (batch 1) with AVX2+FMA: four rows at a time share each load of `x`.

use core::arch::x86_64::*;
use std::ops::Range;

use super::{hsum, prefetch, tail_mask, PREFETCH_BYTES};
use crate::format::Dense;

/// # Safety
/// See [`crate::kernels::KernelFn`]; `n == 1`.
pub(crate) unsafe fn dense_spmv(
    w: &Dense,
    x: &[f32],
    _n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { gemv(w, x, y, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemv(w: &Dense, x: &[f32], y: &mut [f32], rows: Range<usize>) {
    let k = w.cols();
    let (wp, xp) = (w.data().as_ptr(), x.as_ptr());
    let mut r = rows.start;
    // SAFETY: rows are in bounds, each row has `k` floats, `x` has `k` floats; vector loads stay
    // below `c + 8 <= k` and the tail uses masked loads, which do not touch masked-off lanes.
    unsafe {
        while r + 4 <= rows.end {
            let p = [
                wp.add(r * k),
                wp.add((r + 1) * k),
                wp.add((r + 2) * k),
                wp.add((r + 3) * k),
            ];
            let mut a = [_mm256_setzero_ps(); 4];
            let mut b = [_mm256_setzero_ps(); 4];
            let mut c = 0;
            while c + 16 <= k {
                let x0 = _mm256_loadu_ps(xp.add(c));
                let x1 = _mm256_loadu_ps(xp.add(c + 8));
                for pi in p {
                    prefetch(pi.add(c).wrapping_add(PREFETCH_BYTES / 4) as *const i8);
                }
                for i in 0..4 {
                    a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(p[i].add(c)), x0, a[i]);
                    b[i] = _mm256_fmadd_ps(_mm256_loadu_ps(p[i].add(c + 8)), x1, b[i]);
                }
                c += 16;
            }
            if c + 8 <= k {
                let x0 = _mm256_loadu_ps(xp.add(c));
                for i in 0..4 {
                    a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(p[i].add(c)), x0, a[i]);
                }
                c += 8;
            }
            if c < k {
                let m = tail_mask(k - c);
                let x0 = _mm256_maskload_ps(xp.add(c), m);
                for i in 0..4 {
                    b[i] = _mm256_fmadd_ps(_mm256_maskload_ps(p[i].add(c), m), x0, b[i]);
                }
            }
            for i in 0..4 {
                y[r + i - rows.start] = hsum(_mm256_add_ps(a[i], b[i]));
            }
            r += 4;
        }
        while r < rows.end {
            let p = wp.add(r * k);
            let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut c = 0;
            while c + 16 <= k {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(c)), _mm256_loadu_ps(xp.add(c)), a);
                b = _mm256_fmadd_ps(
                    _mm256_loadu_ps(p.add(c + 8)),
                    _mm256_loadu_ps(xp.add(c + 8)),
                    b,
                );
                c += 16;
            }
            if c + 8 <= k {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(c)), _mm256_loadu_ps(xp.add(c)), a);
                c += 8;
            }
            if c < k {
                let m = tail_mask(k - c);
                b = _mm256_fmadd_ps(
                    _mm256_maskload_ps(p.add(c), m),
                    _mm256_maskload_ps(xp.add(c), m),
                    b,
                );
            }
            y[r - rows.start] = hsum(_mm256_add_ps(a, b));
            r += 1;
        }
    }
}
