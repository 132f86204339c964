//! Property tests: random (kernel, shape, density, seed) against the reference twin.

mod common;

use common::*;
use lopper_kernels::registry::KERNELS;
use lopper_kernels::synth::{self, random_mask};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn kernel_matches_reference(
        which in 0usize..1000,
        rows in 1usize..70,
        cols in 1usize..150,
        n in 1usize..80,
        density in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        let kernels: Vec<_> = KERNELS.iter().filter(|k| k.isa.available()).collect();
        let kernel = kernels[which % kernels.len()];
        let kinds = formats_for(kernel);
        let kind = kinds[(seed as usize) % kinds.len()];
        let n = if kernel.op == lopper_kernels::Op::Spmv { 1 } else { n };
        let cols = fit_cols(kind, cols);
        let (dense, x) = random_operands(rows, cols, n, seed);
        let mut rng = synth::rng(seed.wrapping_add(1));
        let mut mask = random_mask(rows, cols, density, pattern_for(kind), &mut rng);
        let w = encode(kernel, kind, &dense, &mut mask);
        let result = check_kernel(kernel, &w, &x, n);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
