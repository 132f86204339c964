//! The depthwise convolution against its f64 twin, for every ISA this CPU has: a geometry grid
//! around the batch-1 register block (output widths below, at and past multiples of
//! `BLOCK`), strides, padding and dilation, batch 1 and wider; adversarial values; proptest.

use lopper_kernels::depthwise::{depthwise_reference, depthwise_with, DwGeom, BLOCK};
use lopper_kernels::Isa;
use proptest::prelude::*;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Runs every available ISA and compares with the twin (relative to the sum of |terms|).
fn check(g: &DwGeom, w: &[f32], b: Option<&[f32]>, x: &[f32], n: usize) {
    let want = depthwise_reference(g, w, b, x, n);
    // The error bound needs Σ|w·x| per output: the twin on absolute values.
    let (aw, ax): (Vec<f32>, Vec<f32>) = (
        w.iter().map(|v| v.abs()).collect(),
        x.iter().map(|v| v.abs()).collect(),
    );
    let ab: Option<Vec<f32>> = b.map(|b| b.iter().map(|v| v.abs()).collect());
    let mag = depthwise_reference(g, &aw, ab.as_deref(), &ax, n);
    let terms = (g.kh * g.kw + 2) as f64;
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let mut y = vec![f32::NAN; g.c * g.oh * g.ow * n];
        let mut scratch = vec![f32::NAN; g.scratch_len(n)];
        depthwise_with(isa, g, w, b, x, n, &mut y, &mut scratch);
        for (i, (got, (e, m))) in y.iter().zip(want.iter().zip(&mag)).enumerate() {
            let tol = terms * 2f64.powi(-23) * m + 1e-30;
            if e.is_nan() {
                assert!(
                    got.is_nan(),
                    "{isa:?} {g:?} n {n}: output {i} should be NaN"
                );
                continue;
            }
            assert!(
                (*got as f64 - e).abs() <= tol,
                "{isa:?} {g:?} n {n}: output {i} is {got}, twin {e}"
            );
        }
    }
}

#[test]
fn a_grid_around_the_register_block() {
    let mut seed = 1;
    for &n in &[1usize, 2, 5] {
        for &(k, s, p, d) in &[
            (3, 1, 1, 1),
            (3, 2, 1, 1),
            (5, 1, 2, 1),
            (3, 1, 2, 2),
            (1, 1, 0, 1),
            (3, 3, 0, 1),
            (7, 2, 3, 1),
        ] {
            for size in [
                1usize,
                BLOCK - 1,
                BLOCK,
                BLOCK + 1,
                2 * BLOCK,
                2 * BLOCK + 3,
            ] {
                let Some(g) = DwGeom::new(3, [size, size + 1], [k, k], [s, s], [p, p], [d, d])
                else {
                    continue;
                };
                seed += 1;
                let w = values(g.c * k * k, seed);
                let b = values(g.c, seed + 100);
                let x = values(g.c * g.h * g.w * n, seed + 200);
                check(&g, &w, Some(&b), &x, n);
                check(&g, &w, None, &x, n);
            }
        }
    }
}

#[test]
fn adversarial_values() {
    let g = DwGeom::new(2, [9, 9], [3, 3], [1, 1], [1, 1], [1, 1]).unwrap();
    for n in [1usize, 3] {
        let len = g.c * g.h * g.w * n;
        // All zero weights; huge and tiny magnitudes; one NaN input spreads to its windows only.
        check(&g, &[0.0; 18], None, &values(len, 7), n);
        let big: Vec<f32> = values(len, 8).iter().map(|v| v * 1e30).collect();
        check(&g, &values(18, 9), None, &big, n);
        let tiny: Vec<f32> = values(len, 10).iter().map(|v| v * 1e-30).collect();
        check(&g, &values(18, 11), None, &tiny, n);
        let mut nan = values(len, 12);
        nan[(4 * 9 + 4) * n] = f32::NAN;
        check(&g, &values(18, 13), Some(&[0.5, -0.5]), &nan, n);
    }
}

#[test]
fn geometry_refuses_what_does_not_fit() {
    assert!(DwGeom::new(0, [4, 4], [3, 3], [1, 1], [0, 0], [1, 1]).is_none());
    assert!(DwGeom::new(1, [2, 2], [3, 3], [1, 1], [0, 0], [1, 1]).is_none());
    assert!(DwGeom::new(1, [4, 4], [3, 3], [1, 1], [0, 0], [2, 2]).is_none());
    assert!(DwGeom::new(1, [4, 4], [3, 3], [0, 1], [0, 0], [1, 1]).is_none());
    let g = DwGeom::new(1, [5, 5], [3, 3], [2, 2], [1, 1], [1, 1]).unwrap();
    assert_eq!((g.oh, g.ow), (3, 3));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_geometries_match_the_twin(
        c in 1usize..4, h in 1usize..20, w in 1usize..20, k in 1usize..6, s in 1usize..4,
        p in 0usize..3, d in 1usize..3, n in 1usize..4, seed in 0u64..1000,
    ) {
        if let Some(g) = DwGeom::new(c, [h, w], [k, k], [s, s], [p, p], [d, d]) {
            check(&g, &values(c * k * k, seed), Some(&values(c, seed + 1)), &values(c * h * w * n, seed + 2), n);
        }
    }
}
