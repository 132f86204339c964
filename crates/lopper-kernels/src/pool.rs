//! The 2x2, stride-2 max-pool of LeNet and most CNNs on batched activations.
//!
//! Layout: `x` is `[C, H, W, n]` and `y` is `[C, H/2, W/2, n]` (floor; a last odd row or
//! column is dropped, as with no padding), the batch innermost. Each output pixel is the
//! elementwise maximum of four contiguous `n`-float vectors, two from each of two input rows,
//! so the loop runs over whole vectors with no per-pixel setup. NaN wins, as in PyTorch's
//! `max_pool2d`. [`max_pool_2x2_reference`] is the plain twin.
//!
//! At batch 1 (`n = 1`) there are no batch vectors: [`max_pool_2x2_single`] takes the maximum of
//! the two input rows in 16-lane vectors and then of adjacent columns by a two-source lane
//! permute, 16 outputs per step, instead of one output pixel at a time.

use crate::isa::Isa;

/// `max(a, b)` that propagates NaN from either side.
#[inline(always)]
pub fn nan_max(a: f32, b: f32) -> f32 {
    // `|`, not `||`: no short-circuit branch, so loops of it vectorise to compare + blend.
    if (b > a) | b.is_nan() {
        b
    } else {
        a
    }
}

#[inline(always)]
fn body(x: &[f32], c: usize, h: usize, w: usize, n: usize, y: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    for ch in 0..c {
        for oy in 0..oh {
            let r0 = &x[((ch * h + 2 * oy) * w) * n..][..2 * ow * n];
            let r1 = &x[((ch * h + 2 * oy + 1) * w) * n..][..2 * ow * n];
            let out = &mut y[(ch * oh + oy) * ow * n..][..ow * n];
            for ((o, a), b) in out
                .chunks_exact_mut(n)
                .zip(r0.chunks_exact(2 * n))
                .zip(r1.chunks_exact(2 * n))
            {
                let (a0, a1) = a.split_at(n);
                let (b0, b1) = b.split_at(n);
                for i in 0..n {
                    o[i] = nan_max(nan_max(a0[i], a1[i]), nan_max(b0[i], b1[i]));
                }
            }
        }
    }
}

/// 2x2, stride-2 max-pool of `x` (`[c, h, w, n]`) into `y` (`[c, h/2, w/2, n]`), compiled for the
/// best ISA [`Isa::selected`] allows (so `LOPPER_ISA` overrides it too).
///
/// # Panics
/// If `x` or `y` is shorter than those shapes (the runtime sizes both from the checked graph).
pub fn max_pool_2x2(x: &[f32], c: usize, h: usize, w: usize, n: usize, y: &mut [f32]) {
    assert!(x.len() >= c * h * w * n && y.len() >= c * (h / 2) * (w / 2) * n);
    if n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn wide512(x: &[f32], c: usize, h: usize, w: usize, n: usize, y: &mut [f32]) {
            body(x, c, h, w, n, y)
        }
        #[target_feature(enable = "avx2,fma")]
        fn wide(x: &[f32], c: usize, h: usize, w: usize, n: usize, y: &mut [f32]) {
            body(x, c, h, w, n, y)
        }
        match Isa::selected() {
            // SAFETY: `selected` only returns ISAs the CPU was detected to support.
            Isa::Avx512 => return unsafe { wide512(x, c, h, w, n, y) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { wide(x, c, h, w, n, y) },
            Isa::Scalar => {}
        }
    }
    body(x, c, h, w, n, y)
}

/// `nan_max(a, b)` per lane, bit for bit: `vmaxps` returns its second operand on ties and on
/// NaN, so `a` goes second (ties keep `a`) and a NaN `b` is blended back in.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn nan_max16(
    a: std::arch::x86_64::__m512,
    b: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let m = _mm512_max_ps(b, a);
    _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(b, b), b)
}

/// Batch-1 body for AVX-512: per output row, 16 outputs from 32 floats of each input row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn single_avx512(x: &[f32], c: usize, h: usize, w: usize, y: &mut [f32]) {
    use crate::kernels::x86_64::avx512::lanes;
    use std::arch::x86_64::*;
    let (oh, ow) = (h / 2, w / 2);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for ch in 0..c {
        for oy in 0..oh {
            let r0 = &x[(ch * h + 2 * oy) * w..][..2 * ow];
            let r1 = &x[(ch * h + 2 * oy + 1) * w..][..2 * ow];
            let out = &mut y[(ch * oh + oy) * ow..][..ow];
            let mut j = 0;
            while j < ow {
                let k = (ow - j).min(16);
                let (m0, m1) = (lanes(2 * k), lanes((2 * k).saturating_sub(16)));
                // SAFETY: the masks admit input lanes `2j .. 2j + 2k <= 2 ow` of `r0`/`r1` and
                // output lanes `j .. j + k <= ow` of `out`; masked-off lanes are not accessed.
                unsafe {
                    let (p0, p1) = (r0.as_ptr().add(2 * j), r1.as_ptr().add(2 * j));
                    let lo =
                        nan_max16(_mm512_maskz_loadu_ps(m0, p0), _mm512_maskz_loadu_ps(m0, p1));
                    let hi = nan_max16(
                        _mm512_maskz_loadu_ps(m1, p0.wrapping_add(16)),
                        _mm512_maskz_loadu_ps(m1, p1.wrapping_add(16)),
                    );
                    let v = nan_max16(
                        _mm512_permutex2var_ps(lo, even, hi),
                        _mm512_permutex2var_ps(lo, odd, hi),
                    );
                    _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), lanes(k), v);
                }
                j += 16;
            }
        }
    }
}

/// [`max_pool_2x2`] at batch 1: `x` `[c, h, w]`, `y` `[c, h/2, w/2]`, through 16-lane vectors
/// on AVX-512 (the portable loop otherwise, or under `LOPPER_ISA`). Same NaN rule.
///
/// # Panics
/// If `x` or `y` is shorter than those shapes.
pub fn max_pool_2x2_single(x: &[f32], c: usize, h: usize, w: usize, y: &mut [f32]) {
    assert!(x.len() >= c * h * w && y.len() >= c * (h / 2) * (w / 2));
    #[cfg(target_arch = "x86_64")]
    if Isa::selected() == Isa::Avx512 {
        // SAFETY: `selected` only returns ISAs the CPU was detected to support.
        return unsafe { single_avx512(x, c, h, w, y) };
    }
    // Elsewhere the batched loop at `n = 1`, one output pixel at a time.
    body(x, c, h, w, 1, y)
}

/// The plain twin: every output element from its four inputs by index.
pub fn max_pool_2x2_reference(x: &[f32], c: usize, h: usize, w: usize, n: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let at = |ch: usize, iy: usize, ix: usize, j: usize| x[((ch * h + iy) * w + ix) * n + j];
    let mut y = Vec::with_capacity(c * oh * ow * n);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                for j in 0..n {
                    let mut m = f32::NEG_INFINITY;
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let v = at(ch, 2 * oy + dy, 2 * ox + dx, j);
                        if v.is_nan() || v > m {
                            m = v;
                        }
                        if m.is_nan() {
                            break;
                        }
                    }
                    y.push(m);
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{random_dense, rng};

    fn same(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    #[test]
    fn matches_the_twin_on_a_shape_grid_with_nan_and_infinities() {
        // Batch widths around the 8- and 16-lane vectors; odd sides drop their last row/column.
        for (c, h, w) in [(1, 2, 2), (3, 5, 7), (2, 24, 24), (4, 9, 8)] {
            for n in [1, 2, 7, 8, 15, 16, 17, 33] {
                let mut x =
                    random_dense(1, c * h * w * n, &mut rng((c * h * w * n) as u64)).into_vec();
                x[n / 2] = f32::NAN;
                let last = x.len() - 1;
                x[last] = f32::INFINITY;
                if x.len() > 3 * n {
                    x[3 * n - 1] = f32::NEG_INFINITY;
                }
                let want = max_pool_2x2_reference(&x, c, h, w, n);
                let mut y = vec![0.0; want.len()];
                max_pool_2x2(&x, c, h, w, n, &mut y);
                assert!(same(&y, &want), "c {c} h {h} w {w} n {n}");
                assert!(y[n / 2].is_nan(), "NaN must win");
            }
        }
    }

    #[test]
    fn batch_one_matches_the_twin_around_its_16_lane_steps() {
        // Output widths below, at and above 16 and 32 (2 inputs per output), odd sides, and the
        // LeNet-5 planes (24x24 and 8x8).
        let mut shapes = vec![(20, 24, 24), (50, 8, 8), (1, 1, 1), (2, 3, 2)];
        for w in [2, 3, 14, 15, 16, 17, 30, 31, 32, 33, 34, 63, 64, 65, 66] {
            shapes.push((2, 5, w));
        }
        for (c, h, w) in shapes {
            let x = random_dense(1, c * h * w, &mut rng((c * h * w) as u64)).into_vec();
            // Adversarial values: NaN and infinities in either row and either column of a window,
            // signed zeros and a plane that is all -inf.
            let mut variants = vec![x.clone()];
            if x.len() >= 4 * w.max(1) {
                let mut v = x.clone();
                v[1] = f32::NAN; // top row, second column
                v[w + 2] = f32::NAN; // bottom row, third column
                v[3] = f32::INFINITY;
                v[w] = f32::NEG_INFINITY;
                variants.push(v);
            }
            variants.push(
                x.iter()
                    .map(|v| if *v > 0.0 { 0.0 } else { -0.0 })
                    .collect(),
            );
            variants.push(vec![f32::NEG_INFINITY; x.len()]);
            for v in variants {
                let want = max_pool_2x2_reference(&v, c, h, w, 1);
                let mut y = vec![7.0; want.len()];
                max_pool_2x2_single(&v, c, h, w, &mut y);
                let close = y.iter().zip(&want).all(|(a, b)| {
                    a.to_bits() == b.to_bits()
                        || (a.is_nan() && b.is_nan())
                        || (*a == 0.0 && *b == 0.0)
                });
                assert!(close, "c {c} h {h} w {w}: {y:?} vs {want:?}");
                assert!(y.len() == want.len());
            }
        }
    }

    #[test]
    fn batch_one_portable_and_vector_paths_both_match_the_twin() {
        for (c, h, w) in [(3, 24, 24), (2, 7, 35), (1, 2, 66)] {
            let mut x = random_dense(1, c * h * w, &mut rng(9)).into_vec();
            x[w + 1] = f32::NAN;
            let want = max_pool_2x2_reference(&x, c, h, w, 1);
            let mut a = vec![0.0; want.len()];
            body(&x, c, h, w, 1, &mut a);
            assert!(same(&a, &want), "portable {c} {h} {w}");
            #[cfg(target_arch = "x86_64")]
            if Isa::Avx512.available() {
                let mut b = vec![0.0; want.len()];
                // SAFETY: AVX-512 was detected just above.
                unsafe { single_avx512(&x, c, h, w, &mut b) };
                assert!(same(&b, &want), "avx512 {c} {h} {w}");
            }
        }
    }
}
