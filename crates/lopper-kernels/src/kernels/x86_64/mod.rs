//! x86-64 kernels: AVX2+FMA in `dense`, `csr`, `bsr`, `nm`; AVX-512F in `avx512`. Every
//! `#[target_feature]` function in the crate lives under this module.
//!
//! All functions here are `unsafe`: they read through raw pointers whose bounds follow from the
//! invariants of the validated formats and from the checks of
//! [`crate::kernels::Kernel::check`], and they need a CPU with AVX2 and FMA. The registry only
//! reaches them through that check.

/// Calls `$f(w, values, scales, args...)` with the matrix's f32 values (`scales = None`) or its
/// int8 values and per-row scales, so each kernel body is written once, generic over the value type.
macro_rules! dispatch_values {
    ($w:expr, $f:ident, $($arg:expr),*) => {
        match $w.values() {
            crate::format::Values::F32(v) => $f($w, v, None, $($arg),*),
            crate::format::Values::I8 { q, scales } => $f($w, q, Some(scales.as_slice()), $($arg),*),
        }
    };
}

pub(crate) mod avx512;
pub(crate) mod bsr;
pub(crate) mod csr;
pub(crate) mod dense;
pub(crate) mod nm;

use core::arch::x86_64::*;
use std::ops::Range;

use crate::format::ColIndex;
pub(crate) use crate::kernels::generic::scale_rows;

/// Column index types that load eight at a time as `i32` lanes.
pub(crate) trait SimdIdx: ColIndex {
    /// # Safety
    /// Eight elements must be readable at `p`; the CPU must support AVX2.
    unsafe fn load8(p: *const Self) -> __m256i;
}

impl SimdIdx for u16 {
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const u16) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes at `p`; loadu has no alignment need.
        unsafe { _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)) }
    }
}

impl SimdIdx for u32 {
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const u32) -> __m256i {
        // SAFETY: the caller guarantees 32 readable bytes at `p`.
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }
}

/// Stored value types (f32, or int8 before its row scale) that load as f32 lanes.
pub(crate) trait SimdVal: Copy + Into<f32> {
    /// # Safety
    /// Eight elements must be readable at `p`; the CPU must support AVX2.
    unsafe fn load8(p: *const Self) -> __m256;
    /// # Safety
    /// Four elements must be readable at `p`; the CPU must support AVX2.
    unsafe fn load4(p: *const Self) -> __m128;
}

impl SimdVal for f32 {
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32 at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load4(p: *const f32) -> __m128 {
        // SAFETY: the caller guarantees 4 readable f32 at `p`.
        unsafe { _mm_loadu_ps(p) }
    }
}

impl SimdVal for i8 {
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(p: *const i8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bytes at `p`; loadl reads exactly 8.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load4(p: *const i8) -> __m128 {
        // SAFETY: the caller guarantees 4 readable bytes at `p`.
        let bits = unsafe { std::ptr::read_unaligned(p as *const i32) };
        _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(bits)))
    }
}

/// How far ahead of the current entry the batch-1 kernels prefetch their streams. At batch 1
/// the stored arrays are read once, front to back; without software prefetch the gathers and
/// the misses on those streams do not overlap, and cold (DRAM-resident) weights run at about
/// the sum of compute time and transfer time instead of the larger of the two.
pub(crate) const PREFETCH_BYTES: usize = 4096;

/// Hints the cache to fetch the line at `p`. Safe for any `p`: a prefetch does not access memory
/// architecturally and never faults, so `p` may point past the end of an array.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn prefetch(p: *const i8) {
    _mm_prefetch::<_MM_HINT_T0>(p)
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// All-ones in the first `rem` lanes (`rem <= 8`), zero in the rest.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn tail_mask(rem: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(rem as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// `out[j0..j0 + 8W] += Σ_{k in ks} vals[k] · X[col(k), j0..j0 + 8W]`.
///
/// # Safety
/// `out` must have `j0 + 8W` writable floats, every `col(k)` must be a row of `X` (`[_, n]` at
/// `xp`) with `j0 + 8W <= n`, and `vals[k]` readable for every `k` in `ks`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const W: usize, V: SimdVal>(
    out: *mut f32,
    n: usize,
    j0: usize,
    xp: *const f32,
    vp: *const V,
    ks: Range<usize>,
    col: &impl Fn(usize) -> usize,
) {
    // SAFETY: bounds as documented above.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); W];
        for (t, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(out.add(j0 + 8 * t));
        }
        for k in ks {
            let v = _mm256_set1_ps((*vp.add(k)).into());
            let xr = xp.add(col(k) * n + j0);
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr.add(8 * t)), *a);
            }
        }
        for (t, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(j0 + 8 * t), *a);
        }
    }
}

/// `out[0..n] += Σ_{k in ks} vals[k] · X[col(k), :]`: one output row of an SpMM, tiled over the
/// batch in 64-, 32-, 16- and 8-column steps with a scalar tail.
///
/// # Safety
/// `out` must have `n` writable floats, `X` is `[_, n]` at `xp` and every `col(k)` is one of its
/// rows, and `vals[k]` is readable for every `k` in `ks`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn spmm_row_acc<V: SimdVal>(
    out: *mut f32,
    n: usize,
    xp: *const f32,
    vp: *const V,
    ks: Range<usize>,
    col: impl Fn(usize) -> usize,
) {
    // SAFETY: every tile stays within `j0 + 8W <= n`, as `tile` requires.
    unsafe {
        let mut j0 = 0;
        while j0 + 64 <= n {
            tile::<8, V>(out, n, j0, xp, vp, ks.clone(), &col);
            j0 += 64;
        }
        if j0 + 32 <= n {
            tile::<4, V>(out, n, j0, xp, vp, ks.clone(), &col);
            j0 += 32;
        }
        if j0 + 16 <= n {
            tile::<2, V>(out, n, j0, xp, vp, ks.clone(), &col);
            j0 += 16;
        }
        if j0 + 8 <= n {
            tile::<1, V>(out, n, j0, xp, vp, ks.clone(), &col);
            j0 += 8;
        }
        if j0 < n {
            for k in ks {
                let v: f32 = (*vp.add(k)).into();
                let xr = xp.add(col(k) * n);
                for j in j0..n {
                    *out.add(j) += v * *xr.add(j);
                }
            }
        }
    }
}
