//! `.lop` graph models: the reader (`Model::from_bytes`: framing, header JSON, graph validation,
//! weight decoding), then for small models the stored plan and one forward pass, since a file
//! the reader accepts must also run without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_model::file::{set_verify_digest, spec_of};
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::{Executor, Model};

fuzz_target!(|data: &[u8]| {
    // Mutated weight bytes would almost all fail the digest; with the check off the fuzzer
    // reaches the decoders behind it (the digest itself has a unit test).
    set_verify_digest(false);
    let Ok(model) = Model::from_bytes(data) else {
        return;
    };
    let _ = model.weight_stats();
    // Bound the pass: multiply-accumulates (weights × output positions) and activations.
    let mut macs = 0usize;
    for node in &model.graph.nodes {
        let Some(w) = node.op.weight().and_then(|w| model.weights.get(w)) else {
            continue;
        };
        let [r, c] = spec_of(w).shape;
        let pos = model
            .shapes
            .get(&node.output)
            .map_or(1, |s| s.iter().product());
        macs = macs.saturating_add(r.saturating_mul(c).saturating_mul(pos));
    }
    let acts: usize = model
        .shapes
        .values()
        .map(|s| s.iter().product::<usize>())
        .fold(0, usize::saturating_add);
    if macs > 1 << 22 || acts > 1 << 18 {
        return;
    }
    let Ok(plan) = make_plan(&model, "fuzz", 2, 1, PlanMode::Stored) else {
        return;
    };
    let Ok(mut ex) = Executor::new(&model, &plan) else {
        return;
    };
    let x = vec![0.5f32; 2 * model.graph.input_len()];
    let _ = ex.run(&x);
});
