//! Synthetic operands for tests and benchmarks: seeded random weights, activations and masks.
//!
//! Values are never zero (`±[0.05, 1)`), so a benchmark never multiplies by zeros it could
//! skip, and a mask is the only source of sparsity. Every function takes the RNG, so callers
//! own (and print) the seed.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::format::Dense;

/// The RNG used everywhere in lopper's synthetic data.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Sparsity structure of a random mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Unstructured,
    /// Whole `br x bc` blocks kept or dropped (aligned grid).
    Blocks {
        br: usize,
        bc: usize,
    },
    /// At most `n` of every `m` consecutive columns kept (exactly `n` here).
    Nm {
        n: usize,
        m: usize,
    },
}

/// A nonzero value in `±[0.05, 1)`.
pub fn nonzero(rng: &mut impl Rng) -> f32 {
    let v = rng.gen_range(0.05f32..1.0);
    if rng.gen::<bool>() {
        v
    } else {
        -v
    }
}

pub fn random_vec(len: usize, rng: &mut impl Rng) -> Vec<f32> {
    (0..len).map(|_| nonzero(rng)).collect()
}

pub fn random_dense(rows: usize, cols: usize, rng: &mut impl Rng) -> Dense {
    Dense::from_vec(rows, cols, random_vec(rows * cols, rng)).expect("synthetic dims are in range")
}

/// A mask keeping a `density` fraction of entries (of blocks, for block patterns), chosen
/// uniformly at random. For N:M the density is `n / m` by construction.
pub fn random_mask(
    rows: usize,
    cols: usize,
    density: f64,
    pattern: Pattern,
    rng: &mut impl Rng,
) -> Vec<bool> {
    let density = density.clamp(0.0, 1.0);
    match pattern {
        Pattern::Unstructured => exact_fraction(rows * cols, density, rng),
        Pattern::Blocks { br, bc } => {
            let (nbr, nbc) = (rows.div_ceil(br), cols.div_ceil(bc));
            let blocks = exact_fraction(nbr * nbc, density, rng);
            let mut mask = vec![false; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    mask[r * cols + c] = blocks[(r / br) * nbc + c / bc];
                }
            }
            mask
        }
        Pattern::Nm { n, m } => {
            let mut mask = vec![false; rows * cols];
            let mut slots: Vec<usize> = (0..m).collect();
            for g in 0..(rows * cols) / m {
                slots.shuffle(rng);
                for &j in &slots[..n.min(m)] {
                    mask[g * m + j] = true;
                }
            }
            mask
        }
    }
}

fn exact_fraction(len: usize, density: f64, rng: &mut impl Rng) -> Vec<bool> {
    let keep = (density * len as f64).round() as usize;
    let mut mask = vec![false; len];
    mask[..keep.min(len)].iter_mut().for_each(|m| *m = true);
    mask.shuffle(rng);
    mask
}
