//! Helpers shared by the integration tests that compare burn models with their exports.

use burn::tensor::{Device, Tensor, TensorData};
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
