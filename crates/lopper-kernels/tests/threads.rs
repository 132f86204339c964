//! Multithreaded results equal single-threaded ones, bit for bit, for every kernel.

mod common;

use common::*;
use lopper_kernels::registry::KERNELS;
use lopper_kernels::synth::{self, random_mask};
use lopper_kernels::{execute, Partition};

#[test]
fn partitions_give_identical_results() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for kernel in KERNELS.iter().filter(|k| k.isa.available()) {
        for kind in formats_for(kernel) {
            let (rows, cols) = (67, fit_cols(kind, 90));
            for n in batches_for(kernel, &[]) {
                let (dense, x) = random_operands(rows, cols, n, 21);
                let mut rng = synth::rng(22);
                let mut mask = random_mask(rows, cols, 0.2, pattern_for(kind), &mut rng);
                let w = encode(kernel, kind, &dense, &mut mask);
                let mut one = vec![0.0f32; rows * n];
                execute(kernel, &w, &x, n, &mut one, &Partition::balanced(&w, 1)).unwrap();
                for parts in [2, 3, 7] {
                    let p = Partition::balanced(&w, parts);
                    let mut many = vec![0.0f32; rows * n];
                    pool.install(|| execute(kernel, &w, &x, n, &mut many, &p))
                        .unwrap();
                    let same = one
                        .iter()
                        .zip(&many)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} {:?} n={n} parts={parts}", kernel.name, kind);
                }
            }
        }
    }
}
