//! The 2x2, stride-2 max-pool of LeNet and most CNNs on batched activations.
//!
//! Layout: `x` is `[C, H, W, n]` and `y` is `[C, H/2, W/2, n]` (floor; a last odd row or
//! column is dropped, as with no padding), the batch innermost. Each output pixel is the
//! elementwise maximum of four contiguous `n`-float vectors, two from each of two input rows,
//! so the loop runs over whole vectors with no per-pixel setup. NaN wins, as in PyTorch's
//! `max_pool2d`. [`max_pool_2x2_reference`] is the plain twin.

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
}
