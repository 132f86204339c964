//! Helpers shared by the kernel test files: which matrices each registry entry is tested on,
//! and how a mask is made to fit a format.
#![allow(dead_code)]

use lopper_kernels::format::FormatKind;
use lopper_kernels::kernels::Accepts;
use lopper_kernels::reference::reference;
use lopper_kernels::synth::{self, Pattern};
use lopper_kernels::{Dense, Kernel, WeightMatrix};

/// The storage formats a kernel is tested on.
pub fn formats_for(kernel: &Kernel) -> Vec<FormatKind> {
    match kernel.accepts {
        Accepts::Dense => vec![FormatKind::Dense],
        Accepts::Csr16 => vec![FormatKind::Csr16],
        Accepts::Csr32 => vec![FormatKind::Csr32],
        Accepts::Bsr { br, bc } => vec![FormatKind::Bsr { br, bc }],
        Accepts::BsrAny => vec![
            FormatKind::Bsr { br: 1, bc: 8 },
            FormatKind::Bsr { br: 4, bc: 1 },
            FormatKind::Bsr { br: 2, bc: 3 },
            FormatKind::Bsr { br: 3, bc: 5 },
        ],
        Accepts::NmDiv8 => vec![
            FormatKind::Nm { n: 2, m: 4 },
            FormatKind::Nm { n: 1, m: 4 },
            FormatKind::Nm { n: 4, m: 8 },
        ],
        Accepts::NmAny => vec![
            FormatKind::Nm { n: 2, m: 4 },
            FormatKind::Nm { n: 3, m: 8 },
            FormatKind::Nm { n: 1, m: 2 },
        ],
    }
}

/// Smallest column count `>= cols` the format accepts (N:M needs a multiple of M).
pub fn fit_cols(kind: FormatKind, cols: usize) -> usize {
    match kind {
        FormatKind::Nm { m, .. } => cols.div_ceil(m).max(1) * m,
        _ => cols,
    }
}

/// Random pattern matching the format at about `density`.
pub fn pattern_for(kind: FormatKind) -> Pattern {
    match kind {
        FormatKind::Bsr { br, bc } => Pattern::Blocks { br, bc },
        _ => Pattern::Unstructured,
    }
}

/// Trims each N:M group to its first `n` kept entries so any mask can be encoded.
pub fn fit_mask(kind: FormatKind, mask: &mut [bool]) {
    if let FormatKind::Nm { n, m } = kind {
        for group in mask.chunks_mut(m) {
            let mut kept = 0;
            for b in group.iter_mut() {
                if *b {
                    kept += 1;
                    if kept > n {
                        *b = false;
                    }
                }
            }
        }
    }
}

pub fn encode(kernel: &Kernel, kind: FormatKind, dense: &Dense, mask: &mut [bool]) -> WeightMatrix {
    fit_mask(kind, mask);
    WeightMatrix::encode(dense, mask, kind, kernel.dtype).expect("test matrices are valid")
}

/// Runs `kernel` over all rows and checks it against the reference twin.
pub fn check_kernel(kernel: &Kernel, w: &WeightMatrix, x: &[f32], n: usize) -> Result<(), String> {
    let mut y = vec![f32::NAN; w.rows() * n];
    kernel
        .run(w, x, n, &mut y, 0..w.rows())
        .map_err(|e| e.to_string())?;
    reference(w, x, n).check(&y).map_err(|e| {
        format!(
            "{} on {} {}x{} n={n}: {e}",
            kernel.name,
            w.kind().name(),
            w.rows(),
            w.cols()
        )
    })
}

/// Batch sizes a kernel is tested with.
pub fn batches_for(kernel: &Kernel, extra: &[usize]) -> Vec<usize> {
    if kernel.op == lopper_kernels::Op::Spmv {
        return vec![1];
    }
    let t = kernel.tile.n;
    let mut v = vec![1, t.saturating_sub(1).max(1), t, t + 1, 2 * t + 1];
    v.extend_from_slice(extra);
    v.sort_unstable();
    v.dedup();
    v
}

pub fn random_operands(rows: usize, cols: usize, n: usize, seed: u64) -> (Dense, Vec<f32>) {
    let mut rng = synth::rng(seed);
    (
        synth::random_dense(rows, cols, &mut rng),
        synth::random_vec(cols * n, &mut rng),
    )
}
