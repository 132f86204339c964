//! Direct convolution kernels against their f64 twin: a geometry grid (kernel sizes, strides,
//! padding, batch widths around the vector widths), adversarial sparsity and values, f32 and
//! int8, u16 and u32 indices, every split into threads bit-identical, proptest, and rejects.

use lopper_kernels::conv::{
    candidates, conv_reference, execute, ConvGeom, ConvKernel, CONV_KERNELS,
};
use lopper_kernels::synth::{random_dense, random_mask, rng, Pattern};
use lopper_kernels::{Dense, Dtype, FormatKind, Isa, Partition, WeightMatrix};
use proptest::prelude::*;

fn weights(
    rows: usize,
    g: &ConvGeom,
    mask: &[bool],
    kind: FormatKind,
    dtype: Dtype,
    seed: u64,
) -> WeightMatrix {
    let d = random_dense(rows, g.k(), &mut rng(seed));
    WeightMatrix::encode(&d, mask, kind, dtype).unwrap()
}

fn input(g: &ConvGeom, n: usize, seed: u64) -> Vec<f32> {
    random_dense(1, g.c * g.h * g.w * n, &mut rng(seed)).into_vec()
}

/// `w` in the format `k` takes: itself, or BSR 4x1 with the same stored entries (a stored zero
/// stays stored, so the NaN rule is exercised in both formats).
fn for_kernel(k: &ConvKernel, w: &WeightMatrix) -> WeightMatrix {
    if k.accepts(w) {
        return w.clone();
    }
    let d = w.to_dense();
    let mut mask = vec![false; w.rows() * w.cols()];
    w.for_each_entry(|r, c, _| mask[r * w.cols() + c] = true);
    WeightMatrix::encode(&d, &mask, FormatKind::Bsr { br: 4, bc: 1 }, w.dtype()).unwrap()
}

/// Runs every available kernel on `w` (in its format) and checks it against the twin.
fn check_all(w: &WeightMatrix, g: &ConvGeom, x: &[f32], n: usize, what: &str) {
    for k in candidates(Isa::Avx512).filter(|k| k.supports(g, n)) {
        let wk = for_kernel(k, w);
        let want = conv_reference(&wk, g, x, n);
        let mut y = vec![f32::NAN; w.rows() * g.pixels() * n];
        k.run(&wk, g, x, n, &mut y, 0..w.rows()).unwrap();
        if let Err(e) = want.check(&y) {
            panic!("{} {what}: {e}", k.name);
        }
    }
}

#[test]
fn every_kernel_matches_the_twin_on_a_geometry_grid() {
    // Batch widths below, at and above the 8- and 16-lane vectors.
    let geoms = [
        (1, 6, 6, 3, 3, 1, 1, 1, 1),
        (3, 7, 5, 3, 3, 1, 1, 0, 0),
        (2, 9, 9, 5, 5, 1, 1, 2, 2),
        (2, 8, 7, 3, 3, 2, 2, 1, 1),
        (4, 5, 5, 1, 1, 1, 1, 0, 0),
        (3, 6, 6, 1, 1, 2, 2, 0, 0),
        (2, 4, 9, 2, 3, 1, 2, 0, 1),
        (1, 3, 3, 5, 5, 1, 1, 3, 3),
        // Batch-1 8x8 register blocks: all interior, and interior behind padding.
        (2, 12, 12, 5, 5, 1, 1, 0, 0),
        (1, 20, 19, 3, 3, 1, 1, 1, 1),
        (2, 18, 26, 3, 3, 2, 1, 2, 1),
        // Batch-1 shifted rows: planes of 9 x 64 floats, and 2 x 64 + 15 behind padding.
        (1, 28, 28, 5, 5, 1, 1, 0, 0),
        (3, 11, 13, 3, 3, 1, 1, 1, 1),
    ];
    for (gi, &(c, h, w, kh, kw, sh, sw, ph, pw)) in geoms.iter().enumerate() {
        let g = ConvGeom::new(c, h, w, kh, kw, sh, sw, ph, pw).unwrap();
        for n in [1, 7, 8, 9, 16, 17] {
            for (kind, dtype) in [
                (FormatKind::Csr16, Dtype::F32),
                (FormatKind::Csr32, Dtype::F32),
                (FormatKind::Csr16, Dtype::I8),
            ] {
                let rows = 5;
                let mask =
                    random_mask(rows, g.k(), 0.4, Pattern::Unstructured, &mut rng(gi as u64));
                let wm = weights(rows, &g, &mask, kind, dtype, 10 + gi as u64);
                let x = input(&g, n, 20 + n as u64);
                check_all(
                    &wm,
                    &g,
                    &x,
                    n,
                    &format!("geom {gi} n {n} {kind:?} {dtype:?}"),
                );
            }
        }
    }
}

#[test]
fn adversarial_sparsity() {
    let g = ConvGeom::new(3, 6, 6, 3, 3, 1, 1, 1, 1).unwrap();
    let (rows, k) = (6, g.k());
    let mut cases: Vec<(&str, Vec<bool>)> = vec![
        ("all zero", vec![false; rows * k]),
        ("dense", vec![true; rows * k]),
    ];
    let mut one = vec![false; rows * k];
    one[2 * k + 13] = true;
    cases.push(("one nonzero", one));
    let mut row = vec![false; rows * k];
    row[4 * k..5 * k].iter_mut().for_each(|b| *b = true);
    cases.push(("all in one row", row));
    let mut empty_rows = random_mask(rows, k, 0.5, Pattern::Unstructured, &mut rng(3));
    empty_rows[..k].iter_mut().for_each(|b| *b = false);
    empty_rows[3 * k..4 * k].iter_mut().for_each(|b| *b = false);
    cases.push(("empty rows", empty_rows));
    for (what, mask) in cases {
        for dtype in [Dtype::F32, Dtype::I8] {
            let w = weights(rows, &g, &mask, FormatKind::Csr16, dtype, 5);
            // Batch 3, and batch 1 where the shifted-row kernels run too.
            for n in [3, 1] {
                check_all(
                    &w,
                    &g,
                    &input(&g, n, 1),
                    n,
                    &format!("{what} {dtype:?} n {n}"),
                );
            }
        }
    }
}

#[test]
fn rows_longer_than_one_entry_batch() {
    // K = 30*3*3 = 270 > 256 entries per dense row: the BSR 4x1 body decodes them in two
    // batches that accumulate into one output; the CSR body decodes all of them at once.
    let g = ConvGeom::new(30, 5, 6, 3, 3, 1, 1, 1, 1).unwrap();
    for (n, dtype) in [(1, Dtype::F32), (8, Dtype::F32), (65, Dtype::I8)] {
        let w = weights(3, &g, &vec![true; 3 * g.k()], FormatKind::Csr16, dtype, 8);
        check_all(&w, &g, &input(&g, n, 9), n, &format!("long rows n {n}"));
    }
}

#[test]
fn adversarial_values_nan_through_stored_zero_and_huge_values() {
    let g = ConvGeom::new(2, 5, 5, 3, 3, 1, 1, 1, 1).unwrap();
    let mut d = vec![0.0f32; 2 * g.k()];
    d[4] = 1e30;
    d[5] = -1e30;
    d[g.k() + 7] = 3e-39; // subnormal weight
    let dense = Dense::from_vec(2, g.k(), d).unwrap();
    let mut mask = vec![false; 2 * g.k()];
    mask[4] = true;
    mask[5] = true;
    mask[g.k() + 7] = true;
    mask[g.k() + 1] = true; // a stored zero
    let w = WeightMatrix::encode(&dense, &mask, FormatKind::Csr16, Dtype::F32).unwrap();
    for n in [2, 1] {
        let mut x = input(&g, n, 9);
        x[(5 * 5 + 7) * n] = f32::NAN; // channel 1: reaches row 1 through the stored zero
        x[3 / n] = 1e10;
        check_all(&w, &g, &x, n, &format!("nan and huge, n {n}"));
    }
}

#[test]
fn every_split_into_threads_is_bit_identical() {
    // 12x12 with padding 1: at batch 1 the CSR body's 8x8 blocks start at output row 1, so the
    // split also covers blocks next to border rows and columns.
    for g in [
        ConvGeom::new(4, 8, 8, 3, 3, 1, 1, 1, 1).unwrap(),
        ConvGeom::new(4, 12, 12, 3, 3, 1, 1, 1, 1).unwrap(),
    ] {
        splits_are_bit_identical(&g);
    }
}

fn splits_are_bit_identical(g: &ConvGeom) {
    let g = *g;
    let rows = 11;
    let mask = random_mask(rows, g.k(), 0.3, Pattern::Unstructured, &mut rng(4));
    let w = weights(rows, &g, &mask, FormatKind::Csr16, Dtype::F32, 6);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    // Batch 1 is where the shifted-row kernels run (each thread builds its own shifted rows).
    for n in [5, 1] {
        let x = input(&g, n, 7);
        for k in candidates(Isa::Avx512).filter(|k| k.supports(&g, n)) {
            let wk = for_kernel(k, &w);
            let mut one = vec![0.0; rows * g.pixels() * n];
            execute(
                k,
                &wk,
                &g,
                &x,
                n,
                &mut one,
                std::slice::from_ref(&(0..rows)),
            )
            .unwrap();
            for parts in [2, 3, 7] {
                let p = Partition::balanced(&wk, parts);
                let mut y = vec![0.0; one.len()];
                pool.install(|| execute(k, &wk, &g, &x, n, &mut y, p.ranges()))
                    .unwrap();
                assert!(y == one, "{}: split {:?} differs", k.name, p.ranges());
            }
            // Empty parts, first and in the middle (at a row that every format's blocks
            // align to).
            for ranges in [vec![0..0, 0..rows], vec![0..8, 8..8, 8..rows]] {
                let mut y = vec![0.0; one.len()];
                pool.install(|| execute(k, &wk, &g, &x, n, &mut y, &ranges))
                    .unwrap();
                assert!(y == one, "{}: split {ranges:?} differs", k.name);
            }
        }
    }
}

#[test]
fn shifted_rows_run_only_batch_one_unit_stride() {
    let g = ConvGeom::new(2, 6, 6, 3, 3, 1, 1, 1, 1).unwrap();
    let w = weights(
        3,
        &g,
        &vec![true; 3 * g.k()],
        FormatKind::Csr16,
        Dtype::F32,
        1,
    );
    let k = CONV_KERNELS
        .iter()
        .find(|k| k.name == "conv_shift_csr_scalar")
        .unwrap();
    assert!(k.supports(&g, 1) && !k.supports(&g, 2));
    let mut y = vec![0.0; 3 * g.pixels() * 2];
    let e = k
        .run(&w, &g, &input(&g, 2, 1), 2, &mut y, 0..3)
        .unwrap_err();
    assert!(e.to_string().contains("batch 1"), "{e}");
    let g2 = ConvGeom::new(2, 6, 6, 3, 3, 2, 1, 1, 1).unwrap();
    assert!(!k.supports(&g2, 1));
    let mut y = vec![0.0; 3 * g2.pixels()];
    assert!(k.run(&w, &g2, &input(&g2, 1, 1), 1, &mut y, 0..3).is_err());
    // 3 x 512 x 226 x 224 floats of shifted input would pass 64 MiB: not offered.
    let big = ConvGeom::new(512, 224, 224, 3, 3, 1, 1, 1, 1).unwrap();
    assert!(!k.supports(&big, 1));
    // The others take any batch and stride.
    let direct = CONV_KERNELS
        .iter()
        .find(|k| k.name == "conv_direct_csr_scalar")
        .unwrap();
    assert!(direct.supports(&g2, 7));
}

#[test]
fn rejects_bad_shapes_formats_and_ranges() {
    let g = ConvGeom::new(2, 5, 5, 3, 3, 1, 1, 1, 1).unwrap();
    let mask = vec![true; 4 * g.k()];
    let w = weights(4, &g, &mask, FormatKind::Csr16, Dtype::F32, 1);
    let x = input(&g, 2, 2);
    let k = CONV_KERNELS.last().unwrap();
    assert!(k.name.contains("csr"));
    let mut y = vec![0.0; 4 * 25 * 2];
    assert!(k.run(&w, &g, &x[1..], 2, &mut y, 0..4).is_err(), "short x");
    assert!(k.run(&w, &g, &x, 2, &mut y[1..], 0..4).is_err(), "short y");
    assert!(
        k.run(&w, &g, &x, 2, &mut y, 0..5).is_err(),
        "rows past the end"
    );
    let mut other = g;
    other.oh += 1;
    assert!(
        k.run(&w, &other, &x, 2, &mut y, 0..4).is_err(),
        "inconsistent geometry"
    );
    let dense = WeightMatrix::Dense(w.to_dense());
    assert!(
        k.run(&dense, &g, &x, 2, &mut y, 0..4).is_err(),
        "dense weights"
    );
    let g3 = ConvGeom::new(3, 5, 5, 3, 3, 1, 1, 1, 1).unwrap();
    assert!(
        k.run(&w, &g3, &input(&g3, 2, 2), 2, &mut y, 0..4).is_err(),
        "columns != C*kh*kw"
    );
    assert!(
        ConvGeom::new(1, 2, 2, 3, 3, 1, 1, 0, 0).is_none(),
        "window larger than the input"
    );
    assert!(
        execute(k, &w, &g, &x, 2, &mut y, std::slice::from_ref(&(0..2))).is_err(),
        "split that does not cover"
    );
    let b41 = CONV_KERNELS
        .iter()
        .find(|k| k.name == "conv_direct_bsr4x1_scalar")
        .unwrap();
    assert!(
        b41.run(&w, &g, &x, 2, &mut y, 0..4).is_err(),
        "CSR into a BSR kernel"
    );
    let wb = for_kernel(b41, &w);
    assert!(
        b41.run(&wb, &g, &x, 2, &mut y[..2 * 50], 2..4).is_err(),
        "range not aligned to blocks"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn random_geometries_match_the_twin(
        c in 1usize..4, h in 1usize..9, w in 1usize..9, kh in 1usize..5, kw in 1usize..5,
        sh in 1usize..3, sw in 1usize..3, ph in 0usize..3, pw in 0usize..3,
        n in 1usize..20, rows in 1usize..6, density in 0.0f64..1.0, seed in 0u64..1000,
        int8 in any::<bool>(),
    ) {
        prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
        let g = ConvGeom::new(c, h, w, kh, kw, sh, sw, ph, pw).unwrap();
        let mask = random_mask(rows, g.k(), density, Pattern::Unstructured, &mut rng(seed));
        let dtype = if int8 { Dtype::I8 } else { Dtype::F32 };
        let wm = weights(rows, &g, &mask, FormatKind::Csr16, dtype, seed + 1);
        let x = input(&g, n, seed + 2);
        let want = conv_reference(&wm, &g, &x, n);
        for k in candidates(Isa::Avx512).filter(|k| k.supports(&g, n)) {
            let wk = for_kernel(k, &wm);
            let want = if k.accepts(&wm) { want.clone() } else { conv_reference(&wk, &g, &x, n) };
            let mut y = vec![f32::NAN; rows * g.pixels() * n];
            k.run(&wk, &g, &x, n, &mut y, 0..rows).unwrap();
            prop_assert!(want.check(&y).is_ok(), "{}: {:?}", k.name, want.check(&y));
        }
    }

    /// Batch 1, unit strides: the shifted-row kernels on planes below, at and above their
    /// 64-, 16- and 4-float chunks, against the twin.
    #[test]
    fn batch_one_unit_stride_matches_the_twin(
        c in 1usize..5, h in 1usize..22, w in 1usize..22, kh in 1usize..6, kw in 1usize..6,
        ph in 0usize..3, pw in 0usize..3, rows in 1usize..6, density in 0.0f64..1.0,
        seed in 0u64..1000, int8 in any::<bool>(),
    ) {
        prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
        let g = ConvGeom::new(c, h, w, kh, kw, 1, 1, ph, pw).unwrap();
        let mask = random_mask(rows, g.k(), density, Pattern::Unstructured, &mut rng(seed));
        let dtype = if int8 { Dtype::I8 } else { Dtype::F32 };
        let wm = weights(rows, &g, &mask, FormatKind::Csr16, dtype, seed + 1);
        let x = input(&g, 1, seed + 2);
        let want = conv_reference(&wm, &g, &x, 1);
        for k in candidates(Isa::Avx512).filter(|k| k.name.contains("_shift_")) {
            let wk = for_kernel(k, &wm);
            let want = if k.accepts(&wm) { want.clone() } else { conv_reference(&wk, &g, &x, 1) };
            let mut y = vec![f32::NAN; rows * g.pixels()];
            k.run(&wk, &g, &x, 1, &mut y, 0..rows).unwrap();
            prop_assert!(want.check(&y).is_ok(), "{}: {:?}", k.name, want.check(&y));
        }
    }
}
