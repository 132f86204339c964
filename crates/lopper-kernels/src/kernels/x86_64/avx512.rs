//! AVX-512F kernels for batch > 1, where products are bound by arithmetic: 16-lane FMAs
//! double the work per instruction over AVX2, and lane masks handle batch tails without
//! scalar code.
//!
//! - Dense GEMM `Y = W · X`: an 8-row x 32-column register tile (16 accumulators), `W`
//!   broadcast one element at a time, the reduction split into blocks of [`KC`] so the `X` panel
//!   stays in L2 while a block of `W` rows stays in L1. Each output element is accumulated in the
//!   same order whatever the row range, so thread partitions do not change results.
//! - Sparse SpMM (CSR, BSR 1x8, N:M): each stored value broadcast over a 64-column tile of the
//!   batch row of `X` it multiplies.
//! - BSR 4x1 SpMM: one 32-column tile of `X[c, :]` feeds four rows.

use core::arch::x86_64::*;
use std::ops::Range;

use super::{scale_rows, SimdIdx, SimdVal};
use crate::format::{Bsr, Csr, Dense, NmMatrix};
use crate::kernels::generic;

/// How many entries ahead SpMM prefetches the rows of `X` it will multiply.
const X_AHEAD: usize = 8;

/// Reduction block of the dense GEMM.
const KC: usize = 256;

/// Lane mask for the first `w` (`<= 16`) lanes.
#[inline]
pub(crate) fn lanes(w: usize) -> __mmask16 {
    if w >= 16 {
        0xFFFF
    } else {
        ((1u32 << w) - 1) as __mmask16
    }
}

/// # Safety
/// See [`crate::kernels::KernelFn`].
pub(crate) unsafe fn dense_gemm(w: &Dense, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { gemm(w, x, n, y, rows) }
}

#[target_feature(enable = "avx512f")]
unsafe fn gemm(w: &Dense, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    let k = w.cols();
    let (wp, xp, yp) = (w.data().as_ptr(), x.as_ptr(), y.as_mut_ptr());
    if k == 0 {
        y.fill(0.0);
        return;
    }
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let mut r = rows.start;
        while r < rows.end {
            let mr = 8.min(rows.end - r);
            let mut j0 = 0;
            while j0 < n {
                let nw = 32.min(n - j0);
                let (m0, m1) = (lanes(nw), lanes(nw.saturating_sub(16)));
                // SAFETY: rows `r..r + mr` of `W` exist (`mr <= rows.end - r`), columns
                // `k0..k0 + kc` of them and rows `k0..k0 + kc` of `X` too; the masks limit every
                // access of `X` and `Y` to columns `j0..j0 + nw <= n`, and masked-off lanes are
                // not accessed.
                unsafe {
                    let a = Tile {
                        w: wp.add(r * k + k0),
                        ldw: k,
                        x: xp.add(k0 * n + j0),
                        ldx: n,
                        y: yp.add((r - rows.start) * n + j0),
                        ldy: n,
                        kc,
                        m0,
                        m1,
                        accumulate: k0 > 0,
                    };
                    match mr {
                        8 => micro::<8>(&a),
                        7 => micro::<7>(&a),
                        6 => micro::<6>(&a),
                        5 => micro::<5>(&a),
                        4 => micro::<4>(&a),
                        3 => micro::<3>(&a),
                        2 => micro::<2>(&a),
                        _ => micro::<1>(&a),
                    }
                }
                j0 += nw;
            }
            r += mr;
        }
    }
}

struct Tile {
    w: *const f32,
    ldw: usize,
    x: *const f32,
    ldx: usize,
    y: *mut f32,
    ldy: usize,
    kc: usize,
    m0: __mmask16,
    m1: __mmask16,
    accumulate: bool,
}

/// `Y[R, 32] (+)= W[R, kc] · X[kc, 32]`, columns masked by `m0` (first 16) and `m1` (next 16).
///
/// # Safety
/// The pointers in `t` must cover `R` rows of `W` and `Y` and `kc` rows of `X` with the given
/// leading dimensions, for the lanes enabled by the masks.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn micro<const R: usize>(t: &Tile) {
    // SAFETY: as documented above.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if t.accumulate {
            for (i, a) in acc.iter_mut().enumerate() {
                a[0] = _mm512_maskz_loadu_ps(t.m0, t.y.add(i * t.ldy));
                a[1] = _mm512_maskz_loadu_ps(t.m1, t.y.add(i * t.ldy + 16));
            }
        }
        for p in 0..t.kc {
            let x0 = _mm512_maskz_loadu_ps(t.m0, t.x.add(p * t.ldx));
            let x1 = _mm512_maskz_loadu_ps(t.m1, t.x.add(p * t.ldx + 16));
            for (i, a) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*t.w.add(i * t.ldw + p));
                a[0] = _mm512_fmadd_ps(wv, x0, a[0]);
                a[1] = _mm512_fmadd_ps(wv, x1, a[1]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(t.y.add(i * t.ldy), t.m0, a[0]);
            _mm512_mask_storeu_ps(t.y.add(i * t.ldy + 16), t.m1, a[1]);
        }
    }
}

/// `out[j0..j0 + 16V] (+)= Σ_k vals[k] · X[col(k), j0..]`, lanes past `n` masked; `init`
/// overwrites instead of accumulating.
///
/// # Safety
/// `out` has `n` floats, `X` is `[_, n]` at `xp` and holds every `col(k)` as a row, `vals[k]`
/// is readable for `k` in `ks`, and `j0 < n`.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // a hot inner routine: plain arguments stay in registers
unsafe fn tile<const V: usize, T: SimdVal>(
    out: *mut f32,
    n: usize,
    j0: usize,
    xp: *const f32,
    vp: *const T,
    ks: Range<usize>,
    col: &impl Fn(usize) -> usize,
    init: bool,
) {
    let masks: [__mmask16; V] = std::array::from_fn(|t| lanes((n - j0).saturating_sub(16 * t)));
    let full = n - j0 >= 16 * V;
    // SAFETY: every access is to columns `< n` of the rows named above: full tiles use plain
    // loads (`j0 + 16V <= n`), others masked ones, which do not touch masked-off lanes.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); V];
        if !init {
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm512_maskz_loadu_ps(masks[t], out.add(j0 + 16 * t));
            }
        }
        // Two accumulator sets for alternating entries: a row is one long chain of dependent
        // FMAs, and with one set its 4-cycle latency, not FMA throughput, sets the pace.
        let mut acc2 = [_mm512_setzero_ps(); V];
        let load = |p: *const f32, t: usize| {
            if full {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(masks[t], p)
            }
        };
        let mut k = ks.start;
        while k + 2 <= ks.end {
            // The `X` rows of upcoming entries are scattered through L2: ask for them early.
            if k + X_AHEAD + 2 <= ks.end {
                let (p0, p1) = (
                    xp.add(col(k + X_AHEAD) * n + j0),
                    xp.add(col(k + X_AHEAD + 1) * n + j0),
                );
                for t in 0..V {
                    _mm_prefetch::<_MM_HINT_T0>(p0.add(16 * t) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(p1.add(16 * t) as *const i8);
                }
            }
            let (v0, v1) = (
                _mm512_set1_ps((*vp.add(k)).into()),
                _mm512_set1_ps((*vp.add(k + 1)).into()),
            );
            let (x0, x1) = (xp.add(col(k) * n + j0), xp.add(col(k + 1) * n + j0));
            for t in 0..V {
                acc[t] = _mm512_fmadd_ps(v0, load(x0.add(16 * t), t), acc[t]);
                acc2[t] = _mm512_fmadd_ps(v1, load(x1.add(16 * t), t), acc2[t]);
            }
            k += 2;
        }
        if k < ks.end {
            let v0 = _mm512_set1_ps((*vp.add(k)).into());
            let x0 = xp.add(col(k) * n + j0);
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(v0, load(x0.add(16 * t), t), *a);
            }
        }
        for (a, b) in acc.iter_mut().zip(acc2) {
            *a = _mm512_add_ps(*a, b);
        }
        for (t, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(j0 + 16 * t), masks[t], *a);
        }
    }
}

/// `out[0..n] (+)= Σ_{k in ks} vals[k] · X[col(k), :]` in 64-column tiles (the last one masked);
/// with `init` the row is overwritten instead of accumulated into, so callers need not zero it.
///
/// # Safety
/// As for [`tile`], for every `j0 < n`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn spmm_row_acc<T: SimdVal>(
    out: *mut f32,
    n: usize,
    xp: *const f32,
    vp: *const T,
    ks: Range<usize>,
    col: impl Fn(usize) -> usize,
    init: bool,
) {
    let mut j0 = 0;
    // SAFETY: `j0 < n` in every call.
    unsafe {
        while j0 < n {
            match (n - j0).div_ceil(16) {
                1 => tile::<1, T>(out, n, j0, xp, vp, ks.clone(), &col, init),
                2 => tile::<2, T>(out, n, j0, xp, vp, ks.clone(), &col, init),
                3 => tile::<3, T>(out, n, j0, xp, vp, ks.clone(), &col, init),
                _ => tile::<4, T>(out, n, j0, xp, vp, ks.clone(), &col, init),
            }
            j0 += 64;
        }
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
    unsafe { dispatch_values!(w, csr, x, n, y, rows) }
}

#[target_feature(enable = "avx512f")]
unsafe fn csr<I: SimdIdx, V: SimdVal>(
    w: &Csr<I>,
    vals: &[V],
    scales: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (rp, cp) = (w.row_ptr(), w.col_idx().as_ptr());
    for (li, r) in rows.clone().enumerate() {
        let ks = rp[r] as usize..rp[r + 1] as usize;
        // SAFETY: output row `li` has `n` floats; entries `ks` belong to row `r`, their columns
        // are rows of `X`.
        unsafe {
            spmm_row_acc(
                y.as_mut_ptr().add(li * n),
                n,
                x.as_ptr(),
                vals.as_ptr(),
                ks,
                |k| (*cp.add(k)).to_usize(),
                true,
            )
        };
    }
    scale_rows(y, n, scales, rows);
}

/// # Safety
/// See [`crate::kernels::KernelFn`]; 1x8 blocks.
pub(crate) unsafe fn bsr1x8_spmm(w: &Bsr, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { dispatch_values!(w, bsr1x8, x, n, y, rows) }
}

#[target_feature(enable = "avx512f")]
unsafe fn bsr1x8<V: SimdVal>(
    w: &Bsr,
    vals: &[V],
    scales: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let (brp, bcol, cols) = (w.block_row_ptr(), w.block_col(), w.cols());
    let col = |f: usize| bcol[f / 8] as usize * 8 + f % 8;
    for (li, r) in rows.clone().enumerate() {
        let (s, mut e) = (brp[r] as usize, brp[r + 1] as usize);
        // SAFETY: as in the AVX2 kernel: full blocks lie inside the matrix, and the row's last
        // block is clipped to the columns inside it.
        unsafe {
            let out = y.as_mut_ptr().add(li * n);
            let mut init = true;
            if e > s && bcol[e - 1] as usize * 8 + 8 > cols {
                let f0 = (e - 1) * 8;
                spmm_row_acc(
                    out,
                    n,
                    x.as_ptr(),
                    vals.as_ptr(),
                    f0..f0 + (cols - bcol[e - 1] as usize * 8),
                    col,
                    true,
                );
                init = false;
                e -= 1;
            }
            spmm_row_acc(out, n, x.as_ptr(), vals.as_ptr(), s * 8..e * 8, col, init);
        }
    }
    scale_rows(y, n, scales, rows);
}

/// # Safety
/// See [`crate::kernels::KernelFn`].
pub(crate) unsafe fn nm_spmm(w: &NmMatrix, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { nm(w, x, n, y, rows) }
}

#[target_feature(enable = "avx512f")]
unsafe fn nm(w: &NmMatrix, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    let (gn, gm, row_len, ip) = (w.n(), w.m(), w.row_len(), w.idx().as_ptr());
    for (li, r) in rows.enumerate() {
        let base = r * row_len;
        // SAFETY: slots `base..base + row_len` exist and map to columns `< cols`.
        unsafe {
            spmm_row_acc(
                y.as_mut_ptr().add(li * n),
                n,
                x.as_ptr(),
                w.values().as_ptr(),
                base..base + row_len,
                |k| ((k - base) / gn) * gm + *ip.add(k) as usize,
                true,
            )
        };
    }
}

/// # Safety
/// See [`crate::kernels::KernelFn`]; 4x1 blocks.
pub(crate) unsafe fn bsr4x1_spmm(w: &Bsr, x: &[f32], n: usize, y: &mut [f32], rows: Range<usize>) {
    // SAFETY: preconditions forwarded from the caller.
    unsafe { dispatch_values!(w, bsr4x1, x, n, y, rows) }
}

#[target_feature(enable = "avx512f")]
unsafe fn bsr4x1<V: SimdVal>(
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
        while j0 < n {
            let nw = 32.min(n - j0);
            let (m0, m1) = (lanes(nw), lanes(nw.saturating_sub(16)));
            // SAFETY: the four output rows `r0..r0 + 4` lie in `y`; accesses are masked to
            // columns `j0..j0 + nw <= n`; block `k` holds 4 values at `4k` and its column is a
            // row of `X`.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 2]; 4];
                for k in ks.clone() {
                    let xr = xp.add(bcol[k] as usize * n + j0);
                    let (x0, x1) = (
                        _mm512_maskz_loadu_ps(m0, xr),
                        _mm512_maskz_loadu_ps(m1, xr.add(16)),
                    );
                    for (i, a) in acc.iter_mut().enumerate() {
                        let v = _mm512_set1_ps((*vp.add(4 * k + i)).into());
                        a[0] = _mm512_fmadd_ps(v, x0, a[0]);
                        a[1] = _mm512_fmadd_ps(v, x1, a[1]);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(i * n + j0), m0, a[0]);
                    _mm512_mask_storeu_ps(out.add(i * n + j0 + 16), m1, a[1]);
                }
            }
            j0 += nw;
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
