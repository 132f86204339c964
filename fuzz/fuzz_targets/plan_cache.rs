//! The plan cache (`MODEL.lop.plan.json`): parsing (`parse_cache`), then the checks a cached plan
//! must pass before it is used (`cached_plan_problem`), against the committed MLP fixture, and
//! for a plan that passes, building the executor and one forward pass.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lopper_model::import::onnx::import;
use lopper_model::runtime::plan::{cached_plan_problem, parse_cache};
use lopper_model::{Executor, Model};

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/lopper-model/tests/fixtures/onnx/mlp.onnx"
        );
        import(std::path::Path::new(path)).expect("the MLP fixture imports")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(plans) = parse_cache(data) else {
        return;
    };
    let m = model();
    for p in plans.iter().take(4) {
        if cached_plan_problem(p, m).is_some() || p.batch == 0 || p.batch > 8 {
            continue;
        }
        if let Ok(mut ex) = Executor::new(m, p) {
            let _ = ex.run(&vec![0.25f32; p.batch * m.graph.input_len()]);
        }
    }
});
