//! One module per subcommand (plus `model_io`, shared loading of model files, and
//! `bench_model`, the model benchmark shared by `bench` and `demo`).

pub mod bench;
pub mod bench_bert;
pub mod bench_int8;
pub mod bench_kernels;
pub mod bench_model;
pub mod bench_targets;
pub mod demo;
pub mod embed;
pub mod eval;
pub mod export;
pub mod import;
pub mod inspect;
pub mod inspect_bert;
pub mod model_io;
pub mod prune;
pub mod prune_graph;
pub mod quantize;
pub mod run_model;
pub mod sensitivity;
pub mod sweep;
pub mod train;

/// Threads to run with: at least 1, and at most the machine's cores unless `force` (more
/// threads than cores only slow a run down, and an absurd count exhausts memory for stacks).
pub fn check_threads(threads: usize, force: bool) -> anyhow::Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 0 {
        anyhow::bail!("--threads 0: give at least 1");
    }
    if threads > cores && !force {
        anyhow::bail!(
            "--threads {threads} is more than this machine's {cores} cores (add --threads-force to run anyway)"
        );
    }
    if threads > 1024 {
        anyhow::bail!("--threads {threads}: at most 1024");
    }
    Ok(threads)
}

/// Fails when any value is NaN or infinite, naming where (`what`) and how many: a model whose
/// arithmetic overflows must not print results as if they were numbers (`--allow-nan` skips).
pub fn check_finite(values: impl Iterator<Item = f32>, what: &str) -> anyhow::Result<()> {
    let (mut bad, mut total, mut first) = (0usize, 0usize, None);
    for (i, v) in values.enumerate() {
        total += 1;
        if !v.is_finite() {
            bad += 1;
            first.get_or_insert((i, v));
        }
    }
    if let Some((i, v)) = first {
        anyhow::bail!(
            "{what}: {bad} of {total} values are NaN or infinite (the first, value {i}, is {v}): \
             the model's arithmetic overflows on this input; --allow-nan prints them anyway"
        );
    }
    Ok(())
}
