//! Dynamic sparse training (SET, RigL): the mask update that runs between the backward pass
//! and the optimiser step. Each prunable layer drops the given fraction of its kept weights
//! with the smallest magnitude and regrows as many elsewhere, at random (SET) or where the
//! dense gradient is largest (RigL), so its number of kept weights never changes. Regrown
//! weights start at zero. A weight kept before (or dropped by this very update and regrown, which
//! RigL allows) would keep the momentum and Adam second moment it had, decayed by the masked
//! steps since; with `reset_regrown` (the default) the trainer zeroes that state through
//! [`super::regrow_state`], so every regrown weight starts like one never kept.
//!
//! Layouts are burn's (Linear `[in, out]`, Conv2d `[out, in, kh, kw]`); masks and gradients
//! are flattened in that order, as everywhere in this crate.

use burn::module::Module;
use burn::optim::GradientsParams;
use lopper_kernels::mask::drop_and_grow;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::masks::{prunable_layers, LayerInfo, Masks};
use super::schedule::Grow;

/// The dense gradient of `layer` (before masking), flattened; `None` for a parameter that took
/// no part in the loss.
pub(crate) fn gradient(grads: &GradientsParams, layer: &LayerInfo) -> Option<Vec<f32>> {
    let data = match layer.shape.len() {
        1 => grads.get::<1>(layer.id)?.into_data(),
        2 => grads.get::<2>(layer.id)?.into_data(),
        4 => grads.get::<4>(layer.id)?.into_data(),
        _ => return None,
    };
    data.convert::<f32>().try_into_vec::<f32>().ok()
}

/// The masks after one update at `fraction`; layers without a mask are left dense. Random
/// regrowth is seeded by `seed` and `step`, so a run is reproducible.
pub fn update<M: Module>(
    model: &M,
    grads: &GradientsParams,
    masks: &Masks,
    fraction: f64,
    grow: Grow,
    seed: u64,
    step: usize,
) -> Masks {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = Masks::new();
    for layer in prunable_layers(model) {
        let Some(keep) = masks.get(&layer.path) else {
            continue;
        };
        let kept = keep.iter().filter(|k| **k).count();
        let k = (fraction * kept as f64).round() as usize;
        let random = |rng: &mut ChaCha8Rng| -> Vec<f32> {
            (0..keep.len())
                .map(|_| rng.gen_range(0.0f32..1.0))
                .collect()
        };
        let score: Vec<f32> = match grow {
            Grow::Random => random(&mut rng),
            // A layer whose gradient is missing (it took no part in the loss) regrows at random.
            Grow::Gradient => gradient(grads, &layer)
                .map(|g| g.iter().map(|v| v.abs()).collect())
                .unwrap_or_else(|| random(&mut rng)),
        };
        out.insert(
            layer.path.clone(),
            drop_and_grow(&layer.values, keep, k, &score),
        );
    }
    out
}
