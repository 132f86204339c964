//! Every registry kernel against its reference twin: a shape grid derived from the kernel's
//! tile, adversarial sparsity and adversarial values.

mod common;

use common::*;
use lopper_kernels::registry::KERNELS;
use lopper_kernels::synth::{self, random_mask};
use lopper_kernels::{Dense, Dtype, Kernel};

fn available() -> impl Iterator<Item = &'static Kernel> {
    KERNELS.iter().filter(|k| k.isa.available())
}

/// Sizes below, at and above a tile side, plus small primes.
fn around(t: usize, extra: &[usize]) -> Vec<usize> {
    let mut v = vec![1, t.saturating_sub(1).max(1), t, t + 1, 2 * t + 1];
    v.extend_from_slice(extra);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn shape_grid_matches_reference() {
    let mut cases = 0;
    for kernel in available() {
        for kind in formats_for(kernel) {
            for rows in around(kernel.tile.m, &[7, 13]) {
                for cols in around(kernel.tile.k, &[8, 31]) {
                    let cols = fit_cols(kind, cols);
                    for n in batches_for(kernel, &[3, 17]) {
                        for density in [0.3, 1.0] {
                            let seed = (rows * 1_000_003 + cols * 1009 + n) as u64;
                            let (dense, x) = random_operands(rows, cols, n, seed);
                            let mut rng = synth::rng(seed ^ 0x5eed);
                            let mut mask =
                                random_mask(rows, cols, density, pattern_for(kind), &mut rng);
                            let w = encode(kernel, kind, &dense, &mut mask);
                            check_kernel(kernel, &w, &x, n).unwrap();
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 1000, "grid too small: {cases}");
}

/// Rows long enough for several full steps of a kernel's inner loop followed by every short
/// remainder: 1x8 blocks four at a time leave 1, 2 or 3 blocks at 40, 48 and 56 columns, and
/// 59 adds a partial edge block; dense rows make the counts exact.
#[test]
fn remainders_after_full_inner_steps_match_reference() {
    for kernel in available() {
        for kind in formats_for(kernel) {
            for cols in [40, 48, 56, 59, 72, 100] {
                let cols = fit_cols(kind, cols);
                for n in batches_for(kernel, &[]) {
                    for density in [1.0, 0.6] {
                        let seed = (cols * 31 + n) as u64;
                        let (dense, x) = random_operands(5, cols, n, seed);
                        let mut rng = synth::rng(seed ^ 0xb10c);
                        let mut mask = random_mask(5, cols, density, pattern_for(kind), &mut rng);
                        let w = encode(kernel, kind, &dense, &mut mask);
                        check_kernel(kernel, &w, &x, n)
                            .unwrap_or_else(|e| panic!("{cols} columns, density {density}: {e}"));
                    }
                }
            }
        }
    }
}

/// Named sparsity structures that break naive kernels.
fn adversarial_masks(rows: usize, cols: usize) -> Vec<(&'static str, Vec<bool>)> {
    let at = |f: &dyn Fn(usize, usize) -> bool| -> Vec<bool> {
        (0..rows * cols).map(|i| f(i / cols, i % cols)).collect()
    };
    vec![
        ("all_zero", at(&|_, _| false)),
        ("dense", at(&|_, _| true)),
        ("empty_rows", at(&|r, c| r % 3 == 1 && (c * 7 + r) % 3 != 0)),
        ("single_nonzero", at(&|r, c| r == rows / 2 && c == cols / 3)),
        ("all_in_one_row", at(&|r, _| r == rows - 1)),
        ("first_column_only", at(&|_, c| c == 0)),
        ("last_column_only", at(&|_, c| c == cols - 1)),
        (
            "last_row_and_column",
            at(&|r, c| r == rows - 1 || c == cols - 1),
        ),
    ]
}

#[test]
fn adversarial_sparsity_matches_reference() {
    for kernel in available() {
        for kind in formats_for(kernel) {
            for (rows, cols) in [(9, 20), (16, 64), (5, 11)] {
                let cols = fit_cols(kind, cols);
                for n in batches_for(kernel, &[]) {
                    let (dense, x) = random_operands(rows, cols, n, 7);
                    for (name, mut mask) in adversarial_masks(rows, cols) {
                        let w = encode(kernel, kind, &dense, &mut mask);
                        check_kernel(kernel, &w, &x, n).unwrap_or_else(|e| panic!("{name}: {e}"));
                    }
                }
            }
        }
    }
}

/// Value at flat position `i`.
type ValueFn = Box<dyn Fn(usize) -> f32>;

/// Weights and activations with signed zeros, subnormals, large magnitudes and non-finite
/// activations. int8 formats get finite weights only (quantizing NaN is refused, tested in
/// `rejects.rs`).
#[test]
fn adversarial_values_match_reference() {
    let (rows, cols) = (12, 40);
    let sub = f32::from_bits(3); // subnormal
    let weights: Vec<(&str, ValueFn)> = vec![
        (
            "signed_zeros",
            Box::new(|i| if i % 2 == 0 { 0.0 } else { -0.0 }),
        ),
        (
            "subnormal",
            Box::new(move |i| if i % 3 == 0 { sub } else { -0.75 }),
        ),
        (
            "large",
            Box::new(|i| if i % 2 == 0 { 3e16 } else { -2.5e16 }),
        ),
        (
            "nan_weight",
            Box::new(|i| if i == 45 { f32::NAN } else { 0.5 }),
        ),
    ];
    let acts: Vec<(&str, ValueFn)> = vec![
        ("ordinary", Box::new(|i| (i % 7) as f32 - 3.0)),
        (
            "subnormal_x",
            Box::new(move |i| if i % 2 == 0 { sub } else { f32::MIN_POSITIVE }),
        ),
        (
            "large_x",
            Box::new(|i| if i % 3 == 0 { -3e16 } else { 2e16 }),
        ),
        ("nan_x", Box::new(|i| if i == 5 { f32::NAN } else { 1.0 })),
        (
            "inf_x",
            Box::new(|i| if i == 7 { f32::INFINITY } else { 0.25 }),
        ),
        ("neg_zero_x", Box::new(|_| -0.0)),
    ];
    for kernel in available() {
        for kind in formats_for(kernel) {
            let cols = fit_cols(kind, cols);
            for n in batches_for(kernel, &[]) {
                for (wname, wf) in &weights {
                    let data: Vec<f32> = (0..rows * cols).map(wf).collect();
                    if kernel.dtype == Dtype::I8 && data.iter().any(|v| !v.is_finite()) {
                        continue;
                    }
                    let dense = Dense::from_vec(rows, cols, data).unwrap();
                    for (xname, xf) in &acts {
                        let x: Vec<f32> = (0..cols * n).map(xf).collect();
                        let mut rng = synth::rng(11);
                        let mut mask = random_mask(rows, cols, 0.4, pattern_for(kind), &mut rng);
                        let w = encode(kernel, kind, &dense, &mut mask);
                        check_kernel(kernel, &w, &x, n)
                            .unwrap_or_else(|e| panic!("{wname}/{xname}: {e}"));
                    }
                }
            }
        }
    }
}

/// NaN propagation as documented: through stored entries only.
#[test]
fn nan_in_unstored_column_does_not_propagate() {
    use lopper_kernels::format::{Csr, WeightMatrix};
    let dense = Dense::from_vec(2, 4, vec![1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 0.0, 0.0]).unwrap();
    let w = WeightMatrix::Csr16(Csr::from_dense_threshold(&dense, 0.0).unwrap());
    let x = [1.0, 1.0, 1.0, f32::NAN];
    for kernel in available().filter(|k| k.supports(&w, 1).is_ok()) {
        let mut y = [0.0f32; 2];
        kernel.run(&w, &x, 1, &mut y, 0..2).unwrap();
        assert_eq!(y, [3.0, 3.0], "{}", kernel.name);
    }
}

#[test]
fn every_format_and_dtype_has_a_portable_kernel() {
    use lopper_kernels::registry::select;
    use lopper_kernels::{FormatKind, Isa, WeightMatrix};
    let (dense, _) = random_operands(8, 16, 1, 3);
    let mask = vec![true; 8 * 16];
    let kinds = [
        (FormatKind::Dense, Dtype::F32),
        (FormatKind::Csr16, Dtype::F32),
        (FormatKind::Csr16, Dtype::I8),
        (FormatKind::Csr32, Dtype::F32),
        (FormatKind::Csr32, Dtype::I8),
        (FormatKind::Bsr { br: 2, bc: 2 }, Dtype::F32),
        (FormatKind::Bsr { br: 2, bc: 2 }, Dtype::I8),
    ];
    for (kind, dtype) in kinds {
        let w = WeightMatrix::encode(&dense, &mask, kind, dtype).unwrap();
        for n in [1, 5] {
            let k = select(&w, n, Isa::Scalar).unwrap();
            assert_eq!(k.isa, Isa::Scalar, "{kind:?}");
        }
    }
}

#[test]
fn select_prefers_batch_one_kernels_at_batch_one() {
    use lopper_kernels::registry::{candidates, select};
    use lopper_kernels::{FormatKind, Isa, Op, WeightMatrix};
    let (dense, _) = random_operands(8, 16, 1, 3);
    let kinds = [
        FormatKind::Dense,
        FormatKind::Csr16,
        FormatKind::Csr32,
        FormatKind::Bsr { br: 1, bc: 8 },
        FormatKind::Bsr { br: 4, bc: 1 },
        FormatKind::Nm { n: 2, m: 4 },
    ];
    for kind in kinds {
        let mut mask = vec![true; 128];
        fit_mask(kind, &mut mask);
        let w = WeightMatrix::encode(&dense, &mask, kind, Dtype::F32).unwrap();
        let isa = Isa::best_available();
        if candidates(&w, 1, isa).any(|k| k.op == Op::Spmv) {
            assert_eq!(select(&w, 1, isa).unwrap().op, Op::Spmv, "{kind:?}");
        }
    }
}

#[test]
fn select_prefers_simd_when_available() {
    use lopper_kernels::registry::select;
    use lopper_kernels::{FormatKind, Isa, WeightMatrix};
    if !Isa::Avx2.available() {
        return;
    }
    let (dense, _) = random_operands(8, 16, 1, 3);
    let w = WeightMatrix::encode(&dense, &[true; 128], FormatKind::Csr16, Dtype::F32).unwrap();
    assert_eq!(
        select(&w, 1, Isa::Avx2).unwrap().name,
        "f32_spmv_csr16_avx2"
    );
    assert_eq!(
        select(&w, 64, Isa::Avx2).unwrap().name,
        "f32_spmm_csr16_avx2"
    );
    assert_eq!(
        select(&w, 64, Isa::Scalar).unwrap().name,
        "f32_spmm_csr16_scalar"
    );
}
