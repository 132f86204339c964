//! `lopper bench kernels`: every sparse format against the best dense baseline, side by side.
//!
//! For each weight shape (BERT FFN 3072x768 and 768x3072, LeNet-300-100's 300x784 and
//! 100x300), density, batch, thread count and regime, the dense baseline and every sparse
//! variant are timed back to back in the same process, so the ratio is robust to a noisy
//! machine. `speedup = dense_ns / sparse_ns` with both medians. The dense baseline is the faster
//! of lopper's AVX2 GEMV and the `gemm` crate at that batch.
//!
//! Regimes: `hot` keeps one copy of the weights (cache-resident when it fits); `cold` rotates
//! through copies totalling at least `--cold-mib` (64 MiB by default), so each call streams its
//! weights from memory as in a real model larger than the caches.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use lopper_kernels::bench::{measure_kernel, Timing, TimingOptions};
use lopper_kernels::registry::{by_name, select};
use lopper_kernels::synth::{self, Pattern};
use lopper_kernels::{Dense, Dtype, FormatKind, Isa, Kernel, WeightMatrix};
use serde::Serialize;

use super::bench::BenchArgs;
use crate::util::{cpu_model, write_atomic};

const SHAPES: [(usize, usize); 4] = [(3072, 768), (768, 3072), (300, 784), (100, 300)];

/// A sparse storage variant under test.
struct Variant {
    kind: FormatKind,
    dtype: Dtype,
    pattern: Pattern,
    /// N:M has a fixed density.
    only_density: Option<f64>,
}

const VARIANTS: [Variant; 8] = [
    v(FormatKind::Csr16, Dtype::F32, Pattern::Unstructured, None),
    v(FormatKind::Csr16, Dtype::I8, Pattern::Unstructured, None),
    v(FormatKind::Csr32, Dtype::F32, Pattern::Unstructured, None),
    v(
        FormatKind::Bsr { br: 1, bc: 8 },
        Dtype::F32,
        Pattern::Blocks { br: 1, bc: 8 },
        None,
    ),
    v(
        FormatKind::Bsr { br: 1, bc: 8 },
        Dtype::I8,
        Pattern::Blocks { br: 1, bc: 8 },
        None,
    ),
    v(
        FormatKind::Bsr { br: 4, bc: 1 },
        Dtype::F32,
        Pattern::Blocks { br: 4, bc: 1 },
        None,
    ),
    v(
        FormatKind::Bsr { br: 4, bc: 1 },
        Dtype::I8,
        Pattern::Blocks { br: 4, bc: 1 },
        None,
    ),
    v(
        FormatKind::Nm { n: 2, m: 4 },
        Dtype::F32,
        Pattern::Nm { n: 2, m: 4 },
        Some(0.5),
    ),
];

const fn v(kind: FormatKind, dtype: Dtype, pattern: Pattern, only_density: Option<f64>) -> Variant {
    Variant {
        kind,
        dtype,
        pattern,
        only_density,
    }
}

/// One measurement: a sparse variant and the dense baseline on the same shape, batch, threads
/// and regime, timed back to back.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub kernel: String,
    pub format: String,
    pub dtype: String,
    pub rows: usize,
    pub cols: usize,
    pub batch: usize,
    pub density: f64,
    pub threads: usize,
    pub regime: String,
    pub dense_kernel: String,
    pub dense_ns: f64,
    pub sparse_ns: f64,
    pub speedup: f64,
    pub dense_bytes: usize,
    pub sparse_bytes: usize,
    pub copies: usize,
    pub isa: String,
    pub samples: usize,
}

struct Weights {
    hot: Vec<WeightMatrix>,
    cold: Vec<WeightMatrix>,
}

impl Weights {
    fn new(w: WeightMatrix, cold_bytes: usize, want_cold: bool) -> Self {
        let copies = if want_cold {
            cold_bytes.div_ceil(w.storage_bytes().max(1)).max(2)
        } else {
            0
        };
        Self {
            cold: vec![w.clone(); copies],
            hot: vec![w],
        }
    }
    fn get(&self, regime: &str) -> &[WeightMatrix] {
        if regime == "cold" {
            &self.cold
        } else {
            &self.hot
        }
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let batches = args.batch.clone().unwrap_or_else(|| vec![1, 64]);
    let threads = args.threads.clone().unwrap_or_else(|| vec![1, 2]);
    let densities = args
        .density
        .clone()
        .unwrap_or_else(|| vec![0.5, 0.3, 0.1, 0.05]);
    let regimes = args
        .regime
        .clone()
        .unwrap_or_else(|| vec!["hot".into(), "cold".into()]);
    validate(&batches, &threads, &densities, &regimes)?;
    let opts = if args.quick {
        TimingOptions {
            samples: 5,
            min_sample_ns: 1_000_000,
            warmup_calls: 2,
            min_inner: 1,
        }
    } else {
        TimingOptions {
            samples: 11,
            min_sample_ns: 4_000_000,
            warmup_calls: 3,
            min_inner: 1,
        }
    };
    let isa = Isa::selected();
    let cold_bytes = args.cold_mib << 20;
    let want_cold = regimes.iter().any(|r| r == "cold");
    eprintln!(
        "lopper bench kernels: {} | isa {isa} | seed {} | cold {} MiB | {}",
        cpu_model(),
        args.seed,
        args.cold_mib,
        if args.quick { "quick" } else { "full" }
    );
    let pools = threads
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .map(|p| (t, p))
        })
        .collect::<Result<Vec<_>, _>>()
        .context("building thread pools")?;
    let started = Instant::now();
    let mut records = Vec::new();
    if !args.json {
        println!(
            "{:>10} {:>7} {:>5} {:>3} {:>4}  {:<14} {:>11} {:>11} {:>8}",
            "shape", "density", "batch", "thr", "reg", "format", "dense us", "sparse us", "speedup"
        );
    }
    for (si, &(rows, cols)) in SHAPES.iter().enumerate() {
        let mut rng = synth::rng(args.seed.wrapping_add(si as u64));
        let dense = synth::random_dense(rows, cols, &mut rng);
        let xs: Vec<Vec<f32>> = batches
            .iter()
            .map(|&b| synth::random_vec(cols * b, &mut rng))
            .collect();
        let dense_w = Weights::new(WeightMatrix::Dense(dense.clone()), cold_bytes, want_cold);
        for (di, &density) in densities.iter().enumerate() {
            let variants = encode_variants(&dense, density, args.seed, cold_bytes, want_cold)?;
            let q8 = super::bench_int8::variants(
                &dense,
                density,
                args.seed,
                cold_bytes,
                want_cold,
                di == 0,
            )?;
            for (bi, &batch) in batches.iter().enumerate() {
                for (t_count, pool) in &pools {
                    for regime in &regimes {
                        let x = &xs[bi];
                        let (dense_kernel, dense_t) =
                            best_dense(dense_w.get(regime), x, batch, pool, &opts)?;
                        // One record: this variant against the dense baseline of this condition.
                        let record = |(kernel, format, dtype): (String, String, &str),
                                      density: f64,
                                      t: Timing,
                                      sparse_bytes: usize,
                                      copies: usize| Record {
                            kernel,
                            format,
                            dtype: dtype.into(),
                            rows,
                            cols,
                            batch,
                            density,
                            threads: *t_count,
                            regime: regime.clone(),
                            dense_kernel: dense_kernel.name.into(),
                            dense_ns: dense_t.median_ns,
                            sparse_ns: t.median_ns,
                            speedup: dense_t.median_ns / t.median_ns,
                            dense_bytes: dense_w.hot[0].storage_bytes(),
                            sparse_bytes,
                            copies,
                            isa: isa.name().into(),
                            samples: t.samples,
                        };
                        for (w, variant) in &variants {
                            let copies = w.get(regime);
                            let kernel =
                                select(&copies[0], batch, isa).context("no kernel for variant")?;
                            let sparse_t = measure_kernel(kernel, copies, x, batch, pool, &opts)?;
                            let rec = record(
                                (
                                    kernel.name.into(),
                                    variant.kind.name(),
                                    variant.dtype.name(),
                                ),
                                density,
                                sparse_t,
                                copies[0].storage_bytes(),
                                copies.len(),
                            );
                            if !args.json {
                                print_row(&rec);
                            }
                            records.push(rec);
                        }
                        for v in &q8 {
                            let copies = v.get(regime);
                            let q8_t = pool
                                .install(|| super::bench_int8::measure(copies, x, batch, &opts));
                            let density = if v.format == "dense" { 1.0 } else { density };
                            let rec = record(
                                (v.kernel_name(), v.format.into(), "i8i8"),
                                density,
                                q8_t,
                                copies[0].storage_bytes(),
                                copies.len(),
                            );
                            if !args.json {
                                print_row(&rec);
                            }
                            records.push(rec);
                        }
                    }
                }
            }
            if args.json {
                eprintln!(
                    "  {rows}x{cols} density {density}: done ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let json = records_json(&records)?;
    if args.json {
        let mut out = std::io::stdout().lock();
        out.write_all(json.as_bytes())?;
        out.flush()?;
    }
    if let Some(path) = &args.out {
        write_atomic(path, json.as_bytes())?;
    }
    let summary = super::bench_targets::summary(&records);
    if args.json {
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    eprintln!("finished in {:.0} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn validate(
    batches: &[usize],
    threads: &[usize],
    densities: &[f64],
    regimes: &[String],
) -> anyhow::Result<()> {
    if batches.is_empty() || batches.iter().any(|&b| b == 0 || b > 4096) {
        anyhow::bail!("--batch: each batch must be in 1..=4096");
    }
    if threads.is_empty() || threads.iter().any(|&t| t == 0 || t > 256) {
        anyhow::bail!("--threads: each thread count must be in 1..=256");
    }
    if densities.is_empty() || densities.iter().any(|d| !(*d > 0.0 && *d <= 1.0)) {
        anyhow::bail!("--density: each density must be in (0, 1]");
    }
    if regimes.is_empty() || regimes.iter().any(|r| r != "hot" && r != "cold") {
        anyhow::bail!("--regime: use hot, cold or hot,cold");
    }
    Ok(())
}

fn encode_variants(
    dense: &Dense,
    density: f64,
    seed: u64,
    cold_bytes: usize,
    want_cold: bool,
) -> anyhow::Result<Vec<(Weights, &'static Variant)>> {
    let (rows, cols) = (dense.rows(), dense.cols());
    let mut out = Vec::new();
    for (vi, variant) in VARIANTS.iter().enumerate() {
        if variant
            .only_density
            .is_some_and(|d| (d - density).abs() > 1e-9)
        {
            continue;
        }
        // The same mask for f32 and int8 of one pattern, so their ratio isolates the dtype.
        let mask_seed = seed
            ^ ((rows * 31 + cols) as u64) << 8
            ^ (density * 1e6) as u64
            ^ pattern_id(variant.pattern);
        let mut rng = synth::rng(mask_seed);
        let mask = synth::random_mask(rows, cols, density, variant.pattern, &mut rng);
        let w = WeightMatrix::encode(dense, &mask, variant.kind, variant.dtype)
            .with_context(|| format!("encoding variant {vi} ({})", variant.kind.name()))?;
        out.push((Weights::new(w, cold_bytes, want_cold), variant));
    }
    Ok(out)
}

fn pattern_id(p: Pattern) -> u64 {
    match p {
        Pattern::Unstructured => 1,
        Pattern::Blocks { br, bc } => 100 + (br * 16 + bc) as u64,
        Pattern::Nm { n, m } => 1000 + (n * 16 + m) as u64,
    }
}

/// The fastest dense kernel at this batch: AVX2 GEMV (batch 1), AVX-512 GEMM, or the `gemm` crate.
fn best_dense(
    copies: &[WeightMatrix],
    x: &[f32],
    batch: usize,
    pool: &rayon::ThreadPool,
    opts: &TimingOptions,
) -> anyhow::Result<(&'static Kernel, Timing)> {
    let mut best: Option<(&'static Kernel, Timing)> = None;
    for name in [
        "f32_spmv_dense_avx2",
        "f32_spmm_dense_avx512",
        "f32_spmm_dense_gemm",
    ] {
        let Some(k) = by_name(name) else { continue };
        if !k.isa.available() || k.supports(&copies[0], batch).is_err() {
            continue;
        }
        let t = measure_kernel(k, copies, x, batch, pool, opts)?;
        if best.as_ref().is_none_or(|(_, b)| t.median_ns < b.median_ns) {
            best = Some((k, t));
        }
    }
    best.context("no dense kernel available")
}

fn print_row(r: &Record) {
    let suffix = match r.dtype.as_str() {
        "f32" => "",
        other => other,
    };
    let fmt = format!(
        "{}{}{suffix}",
        r.format,
        if suffix.is_empty() { "" } else { "-" }
    );
    println!(
        "{:>10} {:>7.2} {:>5} {:>3} {:>4}  {:<14} {:>11.1} {:>11.1} {:>7.2}x",
        format!("{}x{}", r.rows, r.cols),
        r.density,
        r.batch,
        r.threads,
        r.regime,
        fmt,
        r.dense_ns / 1e3,
        r.sparse_ns / 1e3,
        r.speedup
    );
}

/// A JSON array with one record per line.
fn records_json(records: &[Record]) -> anyhow::Result<String> {
    let mut s = String::from("[\n");
    for (i, r) in records.iter().enumerate() {
        s.push_str(&serde_json::to_string(r)?);
        s.push_str(if i + 1 < records.len() { ",\n" } else { "\n" });
    }
    s.push_str("]\n");
    Ok(s)
}
