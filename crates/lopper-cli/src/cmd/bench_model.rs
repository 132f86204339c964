//! `lopper bench MODEL`: the model under its planned sparse kernels against the same model
//! densified and run through the dense path (best dense kernel per layer, also measured), in the
//! same run, interleaved sample by sample so that machine noise hits both alike. Also times the
//! model with every layer forced to one format ("uniform" plans, the best kernel of that format
//! per layer), which shows whether the per-layer plan beats the best single choice.

use std::path::Path;

use lopper_kernels::{Dtype, FormatKind};
use lopper_model::runtime::exec::time_executors;
use lopper_model::runtime::plan::{activations, Plan, PlanMode};
use lopper_model::Executor;
use serde::Serialize;

use super::model_io::Loaded;
use crate::util::{cpu_model, utc_date};

#[derive(Debug, Clone, Serialize)]
pub struct LayerUse {
    pub node: String,
    pub format: FormatKind,
    pub dtype: Dtype,
    pub kernel: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Uniform {
    pub format: FormatKind,
    pub ns: f64,
}

/// One `lopper bench MODEL --json` record.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRecord {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub isa: String,
    pub dense_ns: f64,
    pub sparse_ns: f64,
    pub speedup: f64,
    pub file_bytes: u64,
    pub dense_file_bytes: u64,
    pub sparse_plan: Vec<LayerUse>,
    pub dense_plan: Vec<LayerUse>,
    pub uniform: Vec<Uniform>,
    /// `sparse_ns / min(uniform ns)`: at most 1.1 means the planner is within 10 % of the best
    /// single-format choice.
    pub planned_vs_best_uniform: Option<f64>,
    pub plan_from_cache: bool,
    /// With `--baseline`: that model's file, its time under its own measured plan, and
    /// `baseline_ns / sparse_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup_vs_baseline: Option<f64>,
    pub rounds: usize,
    pub cpu: String,
    pub date: String,
}

#[derive(Debug, Clone, Copy)]
pub struct TimingSpec {
    pub rounds: usize,
    pub min_sample_ns: u64,
}

fn uses(p: &Plan) -> Vec<LayerUse> {
    p.layers
        .iter()
        .map(|l| LayerUse {
            node: l.node.clone(),
            format: l.format,
            dtype: l.dtype,
            kernel: l.kernel.clone(),
        })
        .collect()
}

/// Benchmarks `loaded` at one batch size and thread count. `dense_file_bytes` is the size of the
/// densified model's file. A `baseline` model is timed under its own measured plan in the same
/// interleaved rounds.
pub fn bench_model(
    loaded: &Loaded,
    batch: usize,
    threads: usize,
    spec: TimingSpec,
    dense_file_bytes: u64,
    with_uniform: bool,
    baseline: Option<&Loaded>,
) -> anyhow::Result<ModelRecord> {
    let model = &loaded.model;
    let (sparse_plan, cached) = loaded.plan(batch, threads, PlanMode::Measured)?;
    let (dense_plan, _) = loaded.plan(batch, threads, PlanMode::Dense)?;
    let mut exs = vec![
        Executor::new(model, &dense_plan)?,
        Executor::new(model, &sparse_plan)?,
    ];
    if let Some(b) = baseline {
        let (plan, _) = b.plan(batch, threads, PlanMode::Measured)?;
        exs.push(Executor::new(&b.model, &plan)?);
    }
    let first_uniform = exs.len();
    let mut formats: Vec<FormatKind> = Vec::new();
    if with_uniform {
        formats = sparse_plan.uniform_formats();
        for f in &formats {
            if let Some(p) = sparse_plan.uniform(*f) {
                exs.push(Executor::new(model, &p)?);
            }
        }
    }
    let x = activations(batch * model.graph.input_len());
    let t = time_executors(&mut exs, &x, spec.rounds, spec.min_sample_ns)?;
    let uniform: Vec<Uniform> = formats
        .iter()
        .zip(&t[first_uniform..])
        .map(|(&f, &ns)| Uniform { format: f, ns })
        .collect();
    let best_uniform = uniform.iter().map(|u| u.ns).fold(f64::INFINITY, f64::min);
    Ok(ModelRecord {
        model: loaded.path.display().to_string(),
        batch,
        threads,
        isa: sparse_plan.isa.clone(),
        dense_ns: t[0],
        sparse_ns: t[1],
        speedup: t[0] / t[1],
        file_bytes: loaded.file_bytes,
        dense_file_bytes,
        sparse_plan: uses(&sparse_plan),
        dense_plan: uses(&dense_plan),
        planned_vs_best_uniform: best_uniform.is_finite().then(|| t[1] / best_uniform),
        uniform,
        plan_from_cache: cached,
        baseline_model: baseline.map(|b| b.path.display().to_string()),
        baseline_ns: baseline.map(|_| t[2]),
        speedup_vs_baseline: baseline.map(|_| t[2] / t[1]),
        rounds: spec.rounds,
        cpu: cpu_model(),
        date: utc_date(),
    })
}

/// Mean time of each step of the planned run at `batch`/`threads`, to stderr.
fn print_profile(loaded: &Loaded, batch: usize, threads: usize) -> anyhow::Result<()> {
    let model = &loaded.model;
    let (plan, _) = loaded.plan(batch, threads, PlanMode::Measured)?;
    let mut ex = Executor::new(model, &plan)?;
    let x = activations(batch * model.graph.input_len());
    let iters = (20_000_000 / (batch * model.graph.input_len()).max(1)).clamp(10, 2000);
    let steps = ex.profile(&x, iters)?;
    let total: f64 = steps.iter().map(|s| s.1).sum();
    eprintln!("  profile, batch {batch}, {threads} thread(s), {iters} runs:");
    for (name, ns) in steps {
        eprintln!(
            "    {name:<24} {:>10.2} us {:>5.1}%",
            ns / 1e3,
            100.0 * ns / total
        );
    }
    Ok(())
}

/// Size of the densified model's file, computed in memory.
pub fn dense_file_bytes(loaded: &Loaded) -> anyhow::Result<u64> {
    Ok(loaded.model.densified()?.to_bytes()?.len() as u64)
}

/// `lopper bench MODEL` with the kernel-bench flags that apply.
pub fn run(path: &Path, args: &super::bench::BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let loaded = super::model_io::load(path)?;
    let (batches, threads) = super::bench::grid(args, &[1, 64])?;
    let spec = TimingSpec {
        rounds: if args.quick { 7 } else { 21 },
        min_sample_ns: if args.quick { 2_000_000 } else { 5_000_000 },
    };
    let dense_bytes = dense_file_bytes(&loaded)?;
    let baseline = match &args.baseline {
        Some(p) => {
            let b = super::model_io::load(p)?;
            let (a, bb) = (&loaded.model.graph, &b.model.graph);
            if a.input_len() != bb.input_len() || a.labels.len() != bb.labels.len() {
                anyhow::bail!(
                    "--baseline {}: its input ({} values) or labels ({}) differ from {}'s ({}, {})",
                    p.display(),
                    bb.input_len(),
                    bb.labels.len(),
                    path.display(),
                    a.input_len(),
                    a.labels.len()
                );
            }
            Some(b)
        }
        None => None,
    };
    eprintln!(
        "lopper bench {}: {} | isa {} | {} rounds, median per call",
        path.display(),
        cpu_model(),
        lopper_kernels::Isa::selected().name(),
        spec.rounds
    );
    if !args.json {
        println!(
            "{:>6} {:>7} {:>12} {:>12} {:>8} {:>10}  plan",
            "batch", "threads", "dense us", "sparse us", "speedup", "vs uniform"
        );
    }
    let mut records = Vec::new();
    for &b in &batches {
        for &t in &threads {
            let r = bench_model(&loaded, b, t, spec, dense_bytes, true, baseline.as_ref())?;
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let plan: Vec<String> = r
                    .sparse_plan
                    .iter()
                    .map(|l| format!("{}={}", l.node, l.format))
                    .collect();
                println!(
                    "{:>6} {:>7} {:>12.2} {:>12.2} {:>7.2}x {:>10}  {}",
                    b,
                    t,
                    r.dense_ns / 1e3,
                    r.sparse_ns / 1e3,
                    r.speedup,
                    r.planned_vs_best_uniform
                        .map_or("-".into(), |v| format!("{v:.2}")),
                    plan.join(" ")
                );
                if let (Some(ns), Some(x)) = (r.baseline_ns, r.speedup_vs_baseline) {
                    println!(
                        "{:>6} {:>7} baseline {:.2} us: {x:.2}x faster than the baseline",
                        b,
                        t,
                        ns / 1e3
                    );
                }
            }
            if args.profile {
                print_profile(&loaded, b, t)?;
            }
            records.push(r);
        }
    }
    if !args.json {
        println!(
            "file: {} bytes; densified: {} bytes ({:.1}x smaller)",
            loaded.file_bytes,
            dense_bytes,
            dense_bytes as f64 / loaded.file_bytes as f64
        );
    }
    if let Some(out) = &args.out {
        let text: String = records
            .iter()
            .map(|r| serde_json::to_string(r).map(|s| s + "\n"))
            .collect::<Result<_, _>>()?;
        crate::util::write_atomic(out, text.as_bytes())?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
