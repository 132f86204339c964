//! `lopper bench TARGET`: `kernels` benchmarks the sparse kernels; a `.lop` path benchmarks that
//! model sparse against its densified twin (see `bench_model`, and `bench_bert` for encoders).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// `kernels` (every sparse format and kernel against the best dense baseline) or a model
    /// file (the model under its plan against the same model densified), same run.
    pub target: String,
    /// Fewer samples and repetitions (finishes in under 3 minutes on 2 cores).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON record per measurement on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Batch sizes (default 1,64).
    #[arg(long, value_delimiter = ',')]
    pub batch: Option<Vec<usize>>,
    /// Thread counts (default 1,2; at most the machine's cores unless --threads-force).
    #[arg(long, value_delimiter = ',')]
    pub threads: Option<Vec<usize>>,
    /// Allow more threads than cores.
    #[arg(long)]
    pub threads_force: bool,
    /// Densities, fractions of weights kept (default 0.5,0.3,0.1,0.05).
    #[arg(long, value_delimiter = ',')]
    pub density: Option<Vec<f64>>,
    /// Regimes: hot (one cache-resident copy) and/or cold (copies rotated, see --cold-mib).
    #[arg(long, value_delimiter = ',')]
    pub regime: Option<Vec<String>>,
    /// Total size of the weight copies rotated in the cold regime, in MiB.
    #[arg(long, default_value_t = 64)]
    pub cold_mib: usize,
    /// Seed of the random weights, masks and activations.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Model files: also print the time of each step of the planned run (to stderr).
    #[arg(long)]
    pub profile: bool,
    /// Transformer encoders: tokens per sequence (default 128, or the model's longest sequence
    /// when that is shorter).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Also write the JSON records to this file (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Model files: a second model with the same input and output (e.g. the unpruned network
    /// of a structurally pruned one), timed under its own plan in the same run, interleaved;
    /// records gain `baseline_ns` and `speedup_vs_baseline`.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
}

/// The batch sizes (`default_batch` unless `--batch`) and thread counts (1,2 unless
/// `--threads`) of a model benchmark, each from 1 to 4096.
pub fn grid(args: &BenchArgs, default_batch: &[usize]) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    let batches = args.batch.clone().unwrap_or_else(|| default_batch.to_vec());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match &args.threads {
        Some(t) => t.clone(),
        // The default pair, on a one-core machine just 1.
        None if cores == 1 => vec![1],
        None => vec![1, 2],
    };
    if batches.iter().chain(&threads).any(|&v| v == 0 || v > 4096) {
        anyhow::bail!("--batch and --threads take values from 1 to 4096");
    }
    for &t in &threads {
        super::check_threads(t, args.threads_force)?;
    }
    Ok((batches, threads))
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.target.as_str() {
        "kernels" => super::bench_kernels::run(&args),
        path => {
            let path = std::path::Path::new(path);
            if lopper_model::bert::file::sniff(path)? {
                super::bench_bert::run(path, &args)
            } else {
                super::bench_model::run(path, &args)
            }
        }
    }
}
