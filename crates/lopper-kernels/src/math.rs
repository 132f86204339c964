//! Elementwise functions written so the compiler vectorises them (no calls into libm inside
//! the loop): `exp` by range reduction to `2^k · p(r)`, and `erf` by Abramowitz & Stegun 7.1.26
//! on top of it (1.5e-7 in exact arithmetic, below 1e-6 in f32; PyTorch's vectorised CPU `erf`
//! uses the same formula). Their reference twins
//! are the libm functions, compared in the tests over the whole useful range.

/// `e^x` for f32, relative error below 2e-7 on [-87, 88]; saturates outside.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // x = k ln2 + r, |r| <= ln2 / 2, with ln2 split in two for an exact product.
    // Round to nearest with the 1.5 · 2^23 trick: after the add, the low mantissa bits of `t`
    // hold k as an integer, so no float-to-int conversion (a libm call or a saturating cast)
    // stops the loop from vectorising.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let k = t - MAGIC;
    let ki = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    // Degree-6 Taylor-like minimax polynomial of e^r on [-ln2/2, ln2/2].
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67 + r * (0.041_666_41 + r * (0.008_333_452 + r * 0.001_394_2)))));
    // 2^k by building the exponent field; k is in [-126, 127] after the clamp.
    let bits = (ki.wrapping_add(127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// `erf(x)` for f32 (Abramowitz & Stegun 7.1.26), absolute error below 1e-6.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `row = softmax(row)`, stable (the maximum is subtracted first). The maximum and the sum run
/// in 16 independent lanes: a single running value would serialise on its latency.
#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    const L: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = if *v > *m { *v } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let mut sums = [0.0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c.iter_mut()) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// The same loop compiled for AVX-512 (16 lanes) or AVX2+FMA (8 lanes) instead of SSE2's 4,
/// picked by [`Isa::selected`](crate::Isa::selected) (so `LOPPER_ISA` overrides it too).
macro_rules! multiversion {
    ($name:ident, $body:ident, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(x: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn wide512(x: &mut [f32]) {
                    $body(x)
                }
                #[target_feature(enable = "avx2,fma")]
                fn wide(x: &mut [f32]) {
                    $body(x)
                }
                match crate::Isa::selected() {
                    // SAFETY: `selected` only returns ISAs the CPU was detected to support.
                    crate::Isa::Avx512 => return unsafe { wide512(x) },
                    // SAFETY: as above.
                    crate::Isa::Avx2 => return unsafe { wide(x) },
                    crate::Isa::Scalar => {}
                }
            }
            $body(x)
        }
    };
}

multiversion!(
    gelu_inplace,
    gelu_body,
    "GELU in its erf form, `x/2 · (1 + erf(x/√2))`, in place."
);
multiversion!(
    softmax_inplace,
    softmax_body,
    "Softmax of one row, in place."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (g, w) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((g - w) / w).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp(-200.0), exp(-87.0));
    }

    #[test]
    fn softmax_and_gelu_match_plain_formulas() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) / 3.0).collect();
        let want: Vec<f64> = {
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let z: f64 = row.iter().map(|v| (*v as f64 - m).exp()).sum();
            row.iter().map(|v| (*v as f64 - m).exp() / z).collect()
        };
        softmax_inplace(&mut row);
        for (g, w) in row.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6);
        }
        let mut x: Vec<f32> = (0..41).map(|i| (i as f32 - 20.0) / 4.0).collect();
        let want: Vec<f64> = x
            .iter()
            .map(|v| 0.5 * *v as f64 * (1.0 + libm::erf(*v as f64 / 2f64.sqrt())))
            .collect();
        gelu_inplace(&mut x);
        for (g, w) in x.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 5e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf(x) as f64 - libm::erf(x as f64)).abs());
            x += 0.001;
        }
        assert!(worst < 1e-6, "absolute error {worst}");
        assert!(erf(0.0).abs() < 1e-6);
        assert!((erf(30.0) - 1.0).abs() < 1e-7 && (erf(-30.0) + 1.0).abs() < 1e-7);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert!(erf(f32::NAN).is_nan());
    }
}
