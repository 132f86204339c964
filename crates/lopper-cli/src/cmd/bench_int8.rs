//! The int8 × int8 rows of `lopper bench kernels`: weights packed in 16 × 4 tiles
//! (`lopper_kernels::int8`), dense (every tile) and 16x4-block sparse (a random block mask of
//! the row's density), timed on the same shapes, batches and regimes as the other variants and
//! against the same dense f32 baseline. A timed call includes quantizing the activations
//! (`[in, n]` f32 to u8 per column, on one thread), as a real layer pays it; the product splits
//! its row blocks over the pool's threads.

use lopper_kernels::bench::{time_median, Timing, TimingOptions};
use lopper_kernels::int8::{matmul, quantize_acts, Q8Matrix, Q8Path, QuantActs};
use lopper_kernels::synth::{self, Pattern};
use lopper_kernels::Dense;

/// An int8 variant: its format name and its hot (one) and cold (rotated) copies.
pub struct Q8Variant {
    pub format: &'static str,
    pub hot: Vec<Q8Matrix>,
    pub cold: Vec<Q8Matrix>,
}

impl Q8Variant {
    pub fn get(&self, regime: &str) -> &[Q8Matrix] {
        if regime == "cold" {
            &self.cold
        } else {
            &self.hot
        }
    }

    /// `i8i8_{format}_{path}`, in the registry's naming grammar.
    pub fn kernel_name(&self) -> String {
        format!("i8i8_spmm_{}_{}", self.format, Q8Path::selected().name())
    }
}

/// The dense and the 16x4-block variants of `dense` at `density` (the dense one only once, at
/// density 1 or at the first density the caller asks for).
pub fn variants(
    dense: &Dense,
    density: f64,
    seed: u64,
    cold_bytes: usize,
    want_cold: bool,
    with_dense: bool,
) -> anyhow::Result<Vec<Q8Variant>> {
    let (rows, cols) = (dense.rows(), dense.cols());
    let mut out = Vec::new();
    let mut rng = synth::rng(seed ^ 0x1688 ^ (density * 1e6) as u64);
    let mask = synth::random_mask(
        rows,
        cols,
        density,
        Pattern::Blocks { br: 16, bc: 4 },
        &mut rng,
    );
    let masked: Vec<f32> = dense
        .data()
        .iter()
        .zip(&mask)
        .map(|(&v, &m)| if m { v } else { 0.0 })
        .collect();
    let mut add = |format, w: Q8Matrix| {
        let copies = if want_cold {
            cold_bytes.div_ceil(w.storage_bytes().max(1)).max(2)
        } else {
            0
        };
        out.push(Q8Variant {
            format,
            cold: vec![w.clone(); copies],
            hot: vec![w],
        });
    };
    if with_dense {
        add("dense", Q8Matrix::quantize(rows, cols, dense.data(), true)?);
    }
    add("bsr16x4", Q8Matrix::quantize(rows, cols, &masked, false)?);
    Ok(out)
}

/// Median time of quantizing `x: [cols, n]` and multiplying, rotating through `copies`.
pub fn measure(copies: &[Q8Matrix], x: &[f32], n: usize, opts: &TimingOptions) -> Timing {
    let first = &copies[0];
    let mut qa = QuantActs::new();
    let mut y = vec![0.0f32; first.rows() * n];
    let opts = TimingOptions {
        min_inner: opts.min_inner.max(copies.len()),
        ..*opts
    };
    let t = time_median(
        |i| {
            quantize_acts(x, first.cols(), n, &mut qa);
            matmul(&copies[i % copies.len()], &qa, None, &mut y);
        },
        &opts,
    );
    std::hint::black_box(&y);
    t
}
