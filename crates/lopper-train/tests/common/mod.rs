//! Helpers shared by the integration tests that compare burn models with their exports.

use burn::tensor::{Device, Tensor, TensorData};
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::{Executor, Model};
use lopper_train::export::ExportMeta;
use lopper_train::model::Classifier;
use rand::{Rng, SeedableRng};

/// `batch` standardised-looking images `[batch, 784]`, seeded.
pub fn input(seed: u64, batch: usize) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..batch * 784)
        .map(|_| r.gen_range(-1.5f32..1.5))
        .collect()
}

/// Evaluation-mode logits `[batch, 10]` of a burn model.
pub fn burn_logits<M: Classifier>(m: &M, x: &[f32], batch: usize) -> Vec<f32> {
    let t = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [batch, 784]), &Device::flex());
    m.forward(t)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Logits `[batch, 10]` of an exported model through the lopper runtime, under a plan of `mode`.
pub fn lop_logits(m: &Model, x: &[f32], batch: usize, mode: PlanMode) -> Vec<f32> {
    let plan = make_plan(m, "t", batch, 1, mode).unwrap();
    Executor::new(m, &plan).unwrap().run(x).unwrap().to_vec()
}

/// Largest absolute difference, relative to `1 + max |want|`.
pub fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = 1.0 + want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f32, |a, (p, q)| a.max((p - q).abs()))
        / scale
}

/// Export metadata with only a name.
pub fn meta(name: &str) -> ExportMeta {
    ExportMeta {
        name: name.into(),
        preprocess: None,
        labels: Vec::new(),
    }
}
