//! int8 × int8 products: every available path equals the exact twin (`int8::reference`) bit for
//! bit, on a shape grid around the 16 × 4 tile and the column tiles (8 for VNNI, 2 for AVX2), on
//! adversarial sparsity and values (−128 and 127 weights, 0 and 255 activations, the i32 bound),
//! and under proptest; activation quantization keeps its error within half a step.

use lopper_kernels::int8::{
    matmul_with, quantize_acts, reference, Q8Matrix, Q8Path, QuantActs, GROUP, MAX_IN, ROWS,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn paths() -> impl Iterator<Item = Q8Path> {
    Q8Path::ALL.into_iter().filter(|p| p.available())
}

/// Activations given directly as bytes, scales and zero points (`q: [n, k]`).
fn acts(
    k: usize,
    n: usize,
    q: impl Fn(usize, usize) -> u8,
    zero: impl Fn(usize) -> i32,
) -> QuantActs {
    let k_pad = k.div_ceil(GROUP) * GROUP;
    let mut x = QuantActs::from_parts(
        k,
        n,
        vec![0u8; n * k_pad],
        (0..n).map(|c| 0.5 + c as f32 * 0.25).collect(),
        (0..n).map(&zero).collect(),
    );
    for c in 0..n {
        for kk in 0..k_pad {
            let at = x.at(kk, c);
            x.q[at] = if kk < k { q(kk, c) } else { zero(c) as u8 };
        }
    }
    x
}

fn check(w: &Q8Matrix, x: &QuantActs, bias: Option<&[f32]>, what: &str) {
    let want = reference(w, x, bias);
    for p in paths() {
        let mut y = vec![f32::NAN; w.rows() * x.n];
        matmul_with(p, w, x, bias, &mut y);
        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{what}, path {}: y[{i}] = {a}, twin {b} (rows {}, cols {}, n {})",
                p.name(),
                w.rows(),
                w.cols(),
                x.n
            );
        }
    }
}

fn random_case(rows: usize, cols: usize, n: usize, density: f64, seed: u64, keep: bool) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let q: Vec<i8> = (0..rows * cols)
        .map(|_| {
            if r.gen_bool(density) {
                r.gen::<i8>()
            } else {
                0
            }
        })
        .collect();
    let scale: Vec<f32> = (0..rows).map(|_| r.gen_range(0.001..0.1)).collect();
    let w = Q8Matrix::new(rows, cols, &q, &scale, keep).unwrap();
    let bytes: Vec<u8> = (0..n * cols).map(|_| r.gen()).collect();
    let zeros: Vec<i32> = (0..n).map(|_| r.gen_range(0..=255)).collect();
    let x = acts(cols, n, |k, c| bytes[c * cols + k], |c| zeros[c]);
    let bias: Vec<f32> = (0..rows).map(|_| r.gen_range(-1.0..1.0)).collect();
    check(
        &w,
        &x,
        Some(&bias),
        &format!("random d {density} keep {keep}"),
    );
    check(
        &w,
        &x,
        None,
        &format!("random d {density} keep {keep}, no bias"),
    );
}

#[test]
fn every_path_equals_the_twin_on_the_tile_grid() {
    let rows = [1, ROWS - 1, ROWS, ROWS + 1, 2 * ROWS + 1];
    let cols = [1, GROUP - 1, GROUP, GROUP + 1, 2 * GROUP, 63, 64, 65];
    // Column tiles: 2 (AVX2) and 8 (VNNI), below, at and above.
    let ns = [1, 2, 3, 7, 8, 9, 16, 17];
    let mut seed = 0;
    for &r in &rows {
        for &c in &cols {
            for &n in &ns {
                seed += 1;
                random_case(r, c, n, 1.0, seed, true);
                random_case(r, c, n, 0.2, seed, false);
            }
        }
    }
}

#[test]
fn adversarial_sparsity() {
    let (rows, cols, n) = (37, 70, 5);
    let scale = vec![0.01; rows];
    let x = acts(cols, n, |k, c| (k * 7 + c * 13) as u8, |c| c as i32 * 50);
    type Pattern = Box<dyn Fn(usize, usize) -> i8>;
    let cases: Vec<(&str, Pattern)> = vec![
        ("all zero", Box::new(|_, _| 0)),
        (
            "one nonzero",
            Box::new(|r, c| if r == 17 && c == 66 { -128 } else { 0 }),
        ),
        (
            "all in one row",
            Box::new(|r, c| {
                if r == 36 {
                    (c as i8).wrapping_mul(3)
                } else {
                    0
                }
            }),
        ),
        (
            "empty rows between",
            Box::new(|r, c| if r % 16 == 3 { 127 - c as i8 } else { 0 }),
        ),
        (
            "dense",
            Box::new(|r, c| ((r * 31 + c * 17) % 256) as u8 as i8),
        ),
    ];
    for (what, f) in cases {
        let q: Vec<i8> = (0..rows * cols).map(|i| f(i / cols, i % cols)).collect();
        for keep in [true, false] {
            let w = Q8Matrix::new(rows, cols, &q, &scale, keep).unwrap();
            check(&w, &x, None, what);
        }
    }
    // An all-zero matrix stores no tile when empty tiles are dropped.
    let w = Q8Matrix::new(rows, cols, &vec![0; rows * cols], &scale, false).unwrap();
    assert_eq!(w.tiles(), 0);
}

#[test]
fn extreme_values_at_the_i32_bound() {
    // −128 · 255 over 65 536 inputs (the u8 × s8 pair sums that saturate `vpmaddubsw`), and the
    // zero-point side: q = 0 with zero = 255.
    let (rows, cols, n) = (ROWS + 1, MAX_IN, 3);
    let scale = vec![1.0; rows];
    for (wv, qv, z) in [
        (-128i8, 255u8, 0),
        (127, 255, 0),
        (-128, 0, 255),
        (127, 0, 255),
    ] {
        let w = Q8Matrix::new(rows, cols, &vec![wv; rows * cols], &scale, true).unwrap();
        let x = acts(cols, n, |_, _| qv, |_| z);
        check(&w, &x, None, &format!("w {wv}, q {qv}, zero {z}"));
        let mut y = vec![0.0; rows * n];
        matmul_with(Q8Path::Scalar, &w, &x, None, &mut y);
        let exact = wv as f64 * (qv as f64 - z as f64) * cols as f64;
        assert_eq!(y[0] as f64 / (x.scale[0] as f64), (exact as f32) as f64);
    }
    assert!(Q8Matrix::new(1, MAX_IN + 1, &vec![1; MAX_IN + 1], &[1.0], true).is_err());
}

#[test]
fn packing_is_checked() {
    assert!(Q8Matrix::new(2, 3, &[1; 5], &[1.0, 1.0], true).is_err());
    assert!(Q8Matrix::new(2, 3, &[1; 6], &[1.0], true).is_err());
    assert!(Q8Matrix::new(2, 3, &[1; 6], &[1.0, f32::NAN], true).is_err());
    assert!(Q8Matrix::new(2, 3, &[1; 6], &[1.0, -1.0], true).is_err());
    assert!(Q8Matrix::quantize(1, 2, &[1.0, f32::INFINITY], true).is_err());
    let w = Q8Matrix::quantize(2, 3, &[0.5, -1.0, 0.25, 0.0, 0.0, 0.0], true).unwrap();
    assert_eq!((w.get(0, 1), w.get(0, 0), w.get(1, 2)), (-127, 64, 0));
    assert_eq!(w.scales(), &[1.0 / 127.0, 0.0]);
}

#[test]
fn activation_quantization_is_within_half_a_step() {
    let (k, n) = (37, 5);
    let mut r = ChaCha8Rng::seed_from_u64(9);
    let mut x: Vec<f32> = (0..k * n).map(|_| r.gen_range(-3.0..5.0)).collect();
    // Column 1 all positive, column 2 all zero, column 3 holds exact zeros among values.
    for kk in 0..k {
        x[kk * n + 1] = x[kk * n + 1].abs() + 1.0;
        x[kk * n + 2] = 0.0;
        if kk % 3 == 0 {
            x[kk * n + 3] = 0.0;
        }
    }
    let mut q = QuantActs::new();
    quantize_acts(&x, k, n, &mut q);
    assert_eq!((q.k, q.k_pad, q.n), (k, 40, n));
    assert_eq!((q.scale[2], q.zero[2]), (1.0, 0));
    assert_eq!(q.zero[1], 0, "an all-positive column keeps 0 in range");
    for c in 0..n {
        for kk in 0..q.k_pad {
            let v = q.q[q.at(kk, c)] as i32;
            if kk >= k {
                assert_eq!(v, q.zero[c], "padding holds the zero point");
                continue;
            }
            let back = q.scale[c] * (v - q.zero[c]) as f32;
            let orig = x[kk * n + c];
            assert!(
                (back - orig).abs() <= q.scale[c] * 0.5 + 1e-6,
                "{orig} -> {back}"
            );
            if orig == 0.0 {
                assert_eq!(v, q.zero[c], "zero is exact");
            }
        }
    }
}

#[test]
fn quantized_product_stays_within_its_error_bound() {
    let (rows, cols, n) = (33, 100, 4);
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let w: Vec<f32> = (0..rows * cols).map(|_| r.gen_range(-1.0..1.0)).collect();
    let x: Vec<f32> = (0..cols * n).map(|_| r.gen_range(-2.0..2.0)).collect();
    let qw = Q8Matrix::quantize(rows, cols, &w, true).unwrap();
    let mut qx = QuantActs::new();
    quantize_acts(&x, cols, n, &mut qx);
    for p in paths() {
        let mut y = vec![0.0; rows * n];
        matmul_with(p, &qw, &qx, None, &mut y);
        for row in 0..rows {
            let sw = qw.scales()[row];
            for c in 0..n {
                let (mut exact, mut bound) = (0.0f64, 0.0f64);
                for k in 0..cols {
                    let (a, b) = (w[row * cols + k] as f64, x[k * n + c] as f64);
                    exact += a * b;
                    let sx = qx.scale[c] as f64;
                    bound += a.abs() * sx / 2.0 + b.abs() * sw as f64 / 2.0 + sw as f64 * sx / 4.0;
                }
                let got = y[row * n + c] as f64;
                assert!(
                    (got - exact).abs() <= bound * 1.01 + 1e-4,
                    "{}: row {row} col {c}: {got} vs {exact} (bound {bound})",
                    p.name()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn proptest_paths_equal_the_twin(
        rows in 1usize..40,
        cols in 1usize..80,
        n in 1usize..20,
        density in 0.0f64..1.0,
        keep in any::<bool>(),
        seed in any::<u64>(),
    ) {
        random_case(rows, cols, n, density, seed, keep);
    }
}

#[test]
fn threads_split_row_blocks_without_changing_results() {
    let (rows, cols, n) = (5 * ROWS + 3, 130, 9);
    let mut r = ChaCha8Rng::seed_from_u64(11);
    let w: Vec<f32> = (0..rows * cols).map(|_| r.gen_range(-1.0..1.0)).collect();
    let x: Vec<f32> = (0..cols * n).map(|_| r.gen_range(-2.0..2.0)).collect();
    let bias: Vec<f32> = (0..rows).map(|_| r.gen_range(-1.0..1.0)).collect();
    let qw = Q8Matrix::quantize(rows, cols, &w, true).unwrap();
    let mut qx = QuantActs::new();
    quantize_acts(&x, cols, n, &mut qx);
    let want = reference(&qw, &qx, Some(&bias));
    for threads in [1, 2, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for p in paths() {
            let mut y = vec![f32::NAN; rows * n];
            pool.install(|| matmul_with(p, &qw, &qx, Some(&bias), &mut y));
            assert!(
                y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} threads, path {}",
                threads,
                p.name()
            );
        }
    }
}

#[test]
fn a_non_finite_activation_makes_its_column_scale_non_finite() {
    let (k, n) = (9, 3);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![0.5f32; k * n];
        x[4 * n + 1] = bad; // a middle row: later finite values must not hide it
        let mut q = QuantActs::new();
        quantize_acts(&x, k, n, &mut q);
        assert!(!q.scale[1].is_finite(), "{bad}: scale {}", q.scale[1]);
        assert!(q.scale[0].is_finite() && q.scale[2].is_finite());
    }
}
