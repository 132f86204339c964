//! Layers whose file allows int8 activations (`int8_acts`, written by `lopper quantize`): the
//! permission survives a file round trip, the int8 × int8 plan runs close to the f32 reference
//! (only the activations' quantization differs: the weights are the same int8), a measured plan
//! may pick either kind of kernel, and an int8 × int8 kernel is refused for a layer whose file
//! does not allow it (in a plan and in a cached plan).

mod common;

use common::*;
use lopper_kernels::{Dtype, FormatKind};
use lopper_model::runtime::plan::{cached_plan_problem, int8_plan, make_plan, PlanMode};
use lopper_model::{Executor, Model};

/// `m` with every int8 weight allowed int8 activations.
fn allowed(m: &Model) -> Model {
    let mut g = m.graph.clone();
    for spec in g.weights.values_mut() {
        spec.int8_acts = spec.dtype == lopper_model::graph::WeightDtype::I8;
    }
    Model::new(g, m.weights.clone(), m.vectors.clone()).unwrap()
}

fn models() -> Vec<(&'static str, Model)> {
    vec![
        (
            "mlp",
            mlp(
                3,
                [FormatKind::Csr16, FormatKind::Bsr { br: 4, bc: 1 }],
                Dtype::I8,
            ),
        ),
        ("cnn", cnn(4, FormatKind::Csr16, Dtype::I8)),
    ]
}

#[test]
fn the_permission_round_trips_and_int8_activations_stay_close_to_f32() {
    for (what, plain) in models() {
        let m = allowed(&plain);
        let flagged: Vec<&String> = m
            .graph
            .weights
            .iter()
            .filter(|(_, s)| s.int8_acts)
            .map(|(k, _)| k)
            .collect();
        assert!(!flagged.is_empty(), "{what}: no int8 weight");
        let back = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(
            back.graph.weights, m.graph.weights,
            "{what}: specs after a round trip"
        );
        let mut r = rng(5);
        for batch in [1, 3] {
            let x = randn(&mut r, m.graph.input_len() * batch);
            let want = reference(&m, &x, batch);
            let plan = int8_plan(&m, batch).unwrap();
            let q8 = plan
                .layers
                .iter()
                .filter(|l| l.kernel.starts_with("i8i8_"))
                .count();
            assert_eq!(
                q8,
                flagged.len(),
                "{what}: every allowed layer on int8 x int8"
            );
            let got = Executor::new(&m, &plan).unwrap().run(&x).unwrap().to_vec();
            let e = rel_err(&got, &want);
            // 8-bit activations: about 2^-9 relative error per layer, a few layers deep.
            assert!(
                e < 0.03,
                "{what} batch {batch}: int8 activations off by {e}"
            );
            // The measured plan may choose either; its outputs are close either way.
            let measured = make_plan(&m, "t", batch, 1, PlanMode::Measured).unwrap();
            let got = Executor::new(&m, &measured)
                .unwrap()
                .run(&x)
                .unwrap()
                .to_vec();
            assert!(
                rel_err(&got, &want) < 0.03,
                "{what} batch {batch}: measured plan"
            );
        }
    }
}

#[test]
fn int8_activation_kernels_are_refused_where_the_file_does_not_allow_them() {
    for (what, plain) in models() {
        let m = allowed(&plain);
        let plan = int8_plan(&m, 1).unwrap();
        assert_eq!(cached_plan_problem(&plan, &m), None, "{what}");
        let problem = cached_plan_problem(&plan, &plain).expect("a plan the file does not allow");
        assert!(problem.contains("i8i8_"), "{what}: {problem}");
        let err = Executor::new(&plain, &plan)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("does not allow"), "{what}: {err}");
        // Without the permission, no int8 x int8 candidate is even timed.
        let measured = make_plan(&plain, "t", 1, 1, PlanMode::Measured).unwrap();
        assert!(measured
            .layers
            .iter()
            .flat_map(|l| &l.candidates)
            .all(|c| !c.kernel.starts_with("i8i8_")));
    }
}
