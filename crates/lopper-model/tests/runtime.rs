//! The runtime against the plain reference interpreter, on small random models covering every
//! op, every stored format and dtype, batch 1 and 3, one and two threads, and measured, dense
//! and stored plans; and file round trips.

mod common;

use common::*;
use lopper_kernels::{Dtype, FormatKind};
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::{Executor, Model, StorageChoice};

fn check(model: &Model, what: &str) {
    let mut r = rng(7);
    for batch in [1, 3] {
        let input = randn(&mut r, model.graph.input_len() * batch);
        let want = reference(model, &input, batch);
        for threads in [1, 2] {
            for mode in [PlanMode::Stored, PlanMode::Dense, PlanMode::Measured] {
                let plan = make_plan(model, "test", batch, threads, mode).unwrap();
                let mut ex = Executor::new(model, &plan).unwrap();
                let got = ex.run(&input).unwrap().to_vec();
                let e = rel_err(&got, &want);
                assert!(
                    e < 1e-5,
                    "{what} batch {batch} threads {threads} {mode:?}: error {e}"
                );
                // Same plan, same input: bit-identical on a second run (no state leaks).
                assert_eq!(ex.run(&input).unwrap(), &got[..]);
            }
        }
    }
}

#[test]
fn mlp_matches_reference_in_every_format() {
    let b18 = FormatKind::Bsr { br: 1, bc: 8 };
    let b41 = FormatKind::Bsr { br: 4, bc: 1 };
    for (kinds, dt) in [
        ([FormatKind::Csr16, FormatKind::Csr32], Dtype::F32),
        ([b18, b41], Dtype::F32),
        ([FormatKind::Dense, FormatKind::Csr16], Dtype::F32),
        ([FormatKind::Csr16, b41], Dtype::I8),
        ([b18, FormatKind::Csr32], Dtype::I8),
    ] {
        check(&mlp(1, kinds, dt), &format!("mlp {kinds:?} {dt:?}"));
    }
}

#[test]
fn cnn_with_residual_bn_and_pools_matches_reference() {
    for (kind, dt) in [
        (FormatKind::Csr16, Dtype::F32),
        (FormatKind::Dense, Dtype::F32),
        (FormatKind::Bsr { br: 4, bc: 1 }, Dtype::I8),
    ] {
        check(&cnn(2, kind, dt), &format!("cnn {kind:?} {dt:?}"));
    }
}

#[test]
fn multithreaded_run_is_bit_identical_to_single_threaded() {
    let model = cnn(3, FormatKind::Csr16, Dtype::F32);
    let input = randn(&mut rng(9), model.graph.input_len() * 4);
    let p1 = make_plan(&model, "t", 4, 1, PlanMode::Stored).unwrap();
    let mut p2 = p1.clone();
    p2.threads = 2;
    for l in &mut p2.layers {
        l.parts = 2;
    }
    let a = Executor::new(&model, &p1)
        .unwrap()
        .run(&input)
        .unwrap()
        .to_vec();
    let b = Executor::new(&model, &p2)
        .unwrap()
        .run(&input)
        .unwrap()
        .to_vec();
    assert_eq!(a, b);
}

#[test]
fn file_round_trip_preserves_every_format() {
    let b18 = FormatKind::Bsr { br: 1, bc: 8 };
    for (m, what) in [
        (mlp(4, [FormatKind::Csr16, b18], Dtype::F32), "mlp f32"),
        (
            mlp(
                5,
                [FormatKind::Csr32, FormatKind::Bsr { br: 4, bc: 1 }],
                Dtype::I8,
            ),
            "mlp i8",
        ),
        (
            cnn(6, FormatKind::Bsr { br: 3, bc: 5 }, Dtype::F32),
            "cnn bsr3x5",
        ),
    ] {
        let bytes = m.to_bytes().unwrap();
        let back = Model::from_bytes(&bytes).unwrap();
        assert!(back.graph == m.graph, "{what}: graph differs");
        assert!(back.weights == m.weights, "{what}: weights differ");
        assert!(back.vectors == m.vectors, "{what}: vectors differ");
        assert!(
            back.to_bytes().unwrap() == bytes,
            "{what}: writing is not deterministic"
        );
    }
}

#[test]
fn write_is_atomic_and_readable() {
    let dir = std::env::temp_dir().join(format!("lopper-model-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.lop");
    let m = mlp(8, [FormatKind::Csr16, FormatKind::Csr16], Dtype::F32);
    let size = m.write(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(leftovers, 1, "no temporary file is left behind");
    assert!(Model::read(&path).unwrap().weights == m.weights);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reencoding_keeps_outputs_and_int8_stays_close() {
    let m = cnn(10, FormatKind::Csr16, Dtype::F32);
    let input = randn(&mut rng(11), m.graph.input_len() * 2);
    let want = reference(&m, &input, 2);
    for choice in [
        StorageChoice::Auto,
        StorageChoice::Dense,
        StorageChoice::Bsr { br: 2, bc: 2 },
    ] {
        let r = m.reencoded(choice, Dtype::F32).unwrap();
        assert!(
            rel_err(&reference(&r, &input, 2), &want) < 1e-6,
            "{choice:?}"
        );
    }
    let q = m.reencoded(StorageChoice::Csr, Dtype::I8).unwrap();
    let e = rel_err(&reference(&q, &input, 2), &want);
    assert!(e > 0.0 && e < 0.05, "int8 error {e}");
    let d = q.densified().unwrap();
    assert!(rel_err(&reference(&d, &input, 2), &reference(&q, &input, 2)) < 1e-6);
    assert!(
        m.reencoded(StorageChoice::Dense, Dtype::I8).is_err(),
        "dense has no int8 form"
    );
}

#[test]
fn batchnorm_folding_matches_the_unfolded_graph() {
    let mut r = rng(12);
    let (rows, cols) = (6, 10);
    let w0 = randn(&mut r, rows * cols);
    let b0 = randn(&mut r, rows);
    let (ga, be, me) = (
        randn(&mut r, rows),
        randn(&mut r, rows),
        randn(&mut r, rows),
    );
    let va: Vec<f32> = (0..rows).map(|i| 0.3 + i as f32).collect();
    let x = randn(&mut r, cols);
    let (mut w, mut b) = (w0.clone(), b0.clone());
    lopper_model::convert::fold_batchnorm(&mut w, &mut b, &ga, &be, &me, &va, 1e-5);
    for o in 0..rows {
        let z: f64 = (0..cols)
            .map(|i| w0[o * cols + i] as f64 * x[i] as f64)
            .sum::<f64>()
            + b0[o] as f64;
        let bn = ga[o] as f64 * (z - me[o] as f64) / (va[o] as f64 + 1e-5).sqrt() + be[o] as f64;
        let folded: f64 = (0..cols)
            .map(|i| w[o * cols + i] as f64 * x[i] as f64)
            .sum::<f64>()
            + b[o] as f64;
        assert!(
            (bn - folded).abs() < 1e-5 * (1.0 + bn.abs()),
            "row {o}: {bn} vs {folded}"
        );
    }
}

#[test]
fn plans_measure_every_candidate_and_pick_the_fastest() {
    // Which candidate wins depends on timings (noisy, machine-dependent): this test checks only
    // what holds whatever they are. The selection itself is tested on fixed times in
    // `runtime/plan.rs` (`runner_up_swaps_…`, `uniform_forces_…`).
    let m = mlp(13, [FormatKind::Csr16, FormatKind::Csr16], Dtype::F32);
    let p = make_plan(&m, "t", 1, 1, PlanMode::Measured).unwrap();
    assert_eq!(p.layers.len(), 3);
    let valid_choice = p.chosen == "per-layer"
        || p.chosen.starts_with("uniform ")
        || p.chosen.starts_with("per-layer, ");
    assert!(valid_choice, "{}", p.chosen);
    for l in &p.layers {
        assert!(
            l.candidates.len() >= 4,
            "{}: {} candidates",
            l.node,
            l.candidates.len()
        );
        assert!(l.candidates.iter().any(|c| c.format == FormatKind::Dense));
        assert!(l.candidates.iter().all(|c| c.ns.is_finite() && c.ns > 0.0));
        // The chosen kernel is one of the measured candidates, with its measured time.
        assert!(
            l.candidates
                .iter()
                .any(|c| c.format == l.format && c.kernel == l.kernel && c.ns == l.ns),
            "{}: {} {} is not a measured candidate",
            l.node,
            l.format,
            l.kernel
        );
    }
    let d = make_plan(&m, "t", 1, 1, PlanMode::Dense).unwrap();
    assert!(d.layers.iter().all(|l| l.format == FormatKind::Dense));
}

#[test]
fn delta8_storage_round_trips_and_is_smaller_than_csr() {
    // fc1 of a wide layer: gaps over 255 columns force filler entries.
    let m = mlp(14, [FormatKind::Csr16, FormatKind::Csr16], Dtype::F32);
    for dtype in [Dtype::F32, Dtype::I8] {
        let csr = m.reencoded(StorageChoice::Csr, dtype).unwrap();
        let delta = m.reencoded(StorageChoice::CsrDelta8, dtype).unwrap();
        let bytes = delta.to_bytes().unwrap();
        assert!(bytes.len() < csr.to_bytes().unwrap().len(), "{dtype:?}");
        let back = Model::from_bytes(&bytes).unwrap();
        // Decoding keeps the nonzeros, so entries that quantized to 0 are no longer stored:
        // compare values, not structure.
        for (name, w) in &csr.weights {
            assert!(
                back.weights[name].to_dense() == w.to_dense(),
                "{dtype:?} {name}: decoded values differ"
            );
        }
        assert!(back.graph == delta.graph, "{dtype:?}: specs differ");
        assert!(back.to_bytes().unwrap() == bytes);
        let auto = m.reencoded(StorageChoice::Auto, dtype).unwrap();
        assert!(auto.to_bytes().unwrap().len() <= bytes.len());
    }
    let mut r = rng(15);
    let wide = weight(&mut r, 3, 2000, 0.995, FormatKind::Csr16, Dtype::F32);
    let e = lopper_model::delta::encode(
        match &wide {
            lopper_kernels::WeightMatrix::Csr16(c) => c.row_ptr(),
            _ => unreachable!(),
        },
        |k| match &wide {
            lopper_kernels::WeightMatrix::Csr16(c) => c.col_idx()[k] as usize,
            _ => unreachable!(),
        },
    );
    assert!(
        e.source.iter().any(|s| s.is_none()),
        "a 99.5 %-sparse 2000-wide row needs fillers"
    );
}

#[test]
fn wide_convolution_runs_in_tiles_and_matches_reference() {
    for kind in [
        FormatKind::Csr16,
        FormatKind::Dense,
        FormatKind::Bsr { br: 4, bc: 1 },
    ] {
        let m = wide_conv(16, kind);
        let plan = make_plan(&m, "t", 4, 1, PlanMode::Stored).unwrap();
        assert!(plan.layers[0].n < 90 * 4, "the test must exercise tiling");
        assert_eq!(plan.layers[0].n % 4, 0, "tiles hold whole pixels");
        check(&m, &format!("wide conv {kind:?}"));
    }
}

#[test]
fn large_batches_run_in_cache_sized_sub_batches_with_a_remainder() {
    // 23 KiB per example: sub-batches of 40, then a remainder of 20.
    let m = wide_conv(17, FormatKind::Csr16);
    let batch = 100;
    let plan = make_plan(&m, "t", batch, 1, PlanMode::Measured).unwrap();
    assert!(
        plan.sub_batch < batch && batch % plan.sub_batch != 0,
        "sub-batch {}",
        plan.sub_batch
    );
    let input = randn(&mut rng(18), m.graph.input_len() * batch);
    let want = reference(&m, &input, batch);
    let mut ex = Executor::new(&m, &plan).unwrap();
    assert_eq!(ex.sub_batch(), plan.sub_batch);
    let got = ex.run(&input).unwrap().to_vec();
    assert!(rel_err(&got, &want) < 1e-5);
    // The same examples one at a time give the same answers.
    let one = make_plan(&m, "t", 1, 1, PlanMode::Stored).unwrap();
    let mut ex1 = Executor::new(&m, &one).unwrap();
    let f = m.graph.input_len();
    for e in [0, 41, 99] {
        let y = ex1.run(&input[e * f..(e + 1) * f]).unwrap();
        assert!(rel_err(y, &want[e * 3..(e + 1) * 3]) < 1e-5, "example {e}");
    }
}
