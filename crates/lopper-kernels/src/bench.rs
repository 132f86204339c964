//! Timing harness shared by `lopper bench` and the planner.
//!
//! A measurement runs the closure repeatedly: each *sample* times `inner` consecutive calls and
//! records the mean per call; the result is the median of the samples. `inner` is calibrated
//! so that a sample lasts at least `min_sample_ns`, which keeps timer resolution out of the
//! figures. The closure receives a running call index so the caller can rotate through weight
//! copies (the `cold` regime) or keep one copy (`hot`).

use std::time::Instant;

/// How long and how often to measure.
#[derive(Debug, Clone, Copy)]
pub struct TimingOptions {
    pub samples: usize,
    pub min_sample_ns: u64,
    /// Calls made before timing, to warm caches, branch predictors and thread pools.
    pub warmup_calls: usize,
    /// Lower bound for `inner` (e.g. the number of weight copies, so that a cold sample visits
    /// each copy).
    pub min_inner: usize,
}

impl Default for TimingOptions {
    fn default() -> Self {
        Self {
            samples: 15,
            min_sample_ns: 2_000_000,
            warmup_calls: 3,
            min_inner: 1,
        }
    }
}

/// Median time per call, and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub median_ns: f64,
    pub min_ns: f64,
    pub samples: usize,
    pub inner: usize,
}

/// Times `f` (see the module docs).
pub fn time_median(mut f: impl FnMut(usize), opts: &TimingOptions) -> Timing {
    let mut call = 0usize;
    let warm = opts.warmup_calls.max(1);
    let t0 = Instant::now();
    for _ in 0..warm {
        f(call);
        call += 1;
    }
    let per_call = (t0.elapsed().as_nanos() as f64 / warm as f64).max(1.0);
    let inner = ((opts.min_sample_ns as f64 / per_call).ceil() as usize)
        .max(opts.min_inner)
        .max(1);
    let mut per = Vec::with_capacity(opts.samples.max(1));
    for _ in 0..opts.samples.max(1) {
        let t = Instant::now();
        for _ in 0..inner {
            f(call);
            call += 1;
        }
        per.push(t.elapsed().as_nanos() as f64 / inner as f64);
    }
    per.sort_by(f64::total_cmp);
    Timing {
        median_ns: median_sorted(&per),
        min_ns: per[0],
        samples: per.len(),
        inner,
    }
}

/// Whole-run timing of several candidates side by side, the one routine the planner, the
/// encoder's verify step and `lopper bench` share: one untimed call of each (caches, pools,
/// buffers), then `rounds` rounds in which every candidate takes one sample in turn, so that a
/// noisy neighbour slows all alike. A sample repeats its candidate until `min_sample_ns` have
/// passed (at least once) and is the mean per call; the result is each candidate's median
/// sample, in nanoseconds. The first error stops the timing.
pub fn time_interleaved<E>(
    candidates: &mut [&mut dyn FnMut() -> Result<(), E>],
    rounds: usize,
    min_sample_ns: u64,
) -> Result<Vec<f64>, E> {
    for f in candidates.iter_mut() {
        f()?;
    }
    let mut samples = vec![Vec::with_capacity(rounds.max(1)); candidates.len()];
    for _ in 0..rounds.max(1) {
        for (f, s) in candidates.iter_mut().zip(&mut samples) {
            let t = Instant::now();
            let mut calls = 0u64;
            loop {
                f()?;
                calls += 1;
                if t.elapsed().as_nanos() >= u128::from(min_sample_ns) {
                    break;
                }
            }
            s.push(t.elapsed().as_nanos() as f64 / calls as f64);
        }
    }
    Ok(samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            median_sorted(&s)
        })
        .collect())
}

/// Median of an ascending slice (mean of the two middle values for even lengths).
pub fn median_sorted(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Times `kernel` on `copies` of one weight matrix (rotated call by call; one copy is the
/// `hot` regime, copies larger than the last-level cache together the `cold` one), with `X`
/// of batch `n`, split over the threads of `pool` by a balanced [`crate::Partition`].
pub fn measure_kernel(
    kernel: &crate::Kernel,
    copies: &[crate::WeightMatrix],
    x: &[f32],
    n: usize,
    pool: &rayon::ThreadPool,
    opts: &TimingOptions,
) -> Result<Timing, crate::KernelError> {
    let Some(first) = copies.first() else {
        return Err(crate::KernelError::ShapeMismatch {
            what: "weight copies",
            expected: 1,
            actual: 0,
        });
    };
    let partition = crate::Partition::balanced(first, pool.current_num_threads());
    let mut y = vec![0.0f32; first.rows() * n];
    for w in copies {
        crate::execute(kernel, w, x, n, &mut y, &partition)?;
    }
    let opts = TimingOptions {
        min_inner: opts.min_inner.max(copies.len()),
        ..*opts
    };
    let timing = pool.install(|| {
        time_median(
            |i| {
                let w = &copies[i % copies.len()];
                // Checked above for every copy; the result cannot change between calls.
                let _ = crate::execute(kernel, w, x, n, &mut y, &partition);
            },
            &opts,
        )
    });
    std::hint::black_box(&y);
    Ok(timing)
}
