//! `lopper inspect MODEL [--json]` (encoders: see `inspect_bert`): per layer, the op, weight shape `[out, in]`, stored format
//! and dtype, density, bytes, and the kernel the plan for `--batch`/`--threads` chose (measured
//! and cached next to the model when no cached plan exists).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lopper_model::convert::stored_bytes;
use lopper_model::graph::StorageFormat;
use lopper_model::runtime::plan::{cache_path, PlanMode};
use serde::Serialize;

use super::model_io::load;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model file (.lop), or a Hugging Face encoder folder.
    pub model: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Batch size of the plan to show.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Thread count of the plan to show (at most the machine's cores unless --threads-force).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Allow more threads than cores.
    #[arg(long)]
    pub threads_force: bool,
    /// Transformer encoders: tokens per sequence of the plan to show (default 128, or the
    /// model's longest sequence when that is shorter).
    #[arg(long)]
    pub seq: Option<usize>,
}

#[derive(Debug, Serialize)]
struct LayerRow {
    node: String,
    op: String,
    weight: Option<String>,
    shape: Option<[usize; 2]>,
    output_shape: Vec<usize>,
    format: Option<String>,
    dtype: Option<String>,
    density: Option<f64>,
    bytes: Option<usize>,
    planned_format: Option<String>,
    planned_kernel: Option<String>,
    planned_ns: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Inspection {
    model: String,
    name: String,
    file_bytes: u64,
    input_shape: Vec<usize>,
    labels: Vec<String>,
    weights_total: usize,
    weights_nonzero: usize,
    density: f64,
    plan_batch: usize,
    plan_threads: usize,
    plan_isa: String,
    plan_file: String,
    plan_from_cache: bool,
    /// `per-layer`, or `uniform FORMAT` when one format on every layer ran faster end to end.
    plan_chosen: String,
    layers: Vec<LayerRow>,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    if args.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    super::check_threads(args.threads, args.threads_force)?;
    if lopper_model::bert::file::sniff(&args.model)? {
        return super::inspect_bert::run(
            &args.model,
            args.json,
            args.batch,
            args.seq,
            args.threads,
        );
    }
    let loaded = load(&args.model)?;
    let m = &loaded.model;
    let (plan, cached) = loaded.plan(args.batch, args.threads, PlanMode::Measured)?;
    let mut layers = Vec::new();
    for node in &m.graph.nodes {
        let w = node
            .op
            .weight()
            .map(|w| (w, &m.weights[w], &m.graph.weights[w]));
        let choice = plan.layers.iter().find(|l| l.node == node.name);
        let density = w.map(|(_, mat, _)| {
            let mut nz = 0usize;
            mat.for_each_entry(|_, _, v| nz += usize::from(v != 0.0));
            nz as f64 / (mat.rows() * mat.cols()) as f64
        });
        layers.push(LayerRow {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            weight: w.map(|(n, _, _)| n.to_string()),
            shape: w.map(|(_, mat, _)| [mat.rows(), mat.cols()]),
            output_shape: m.shapes[&node.output].clone(),
            // The format as stored in the file (csr_delta8 is decoded to CSR in memory).
            format: w.map(|(_, mat, spec)| match spec.format {
                StorageFormat::CsrDelta8 => "csr_delta8".to_string(),
                _ => mat.kind().name(),
            }),
            dtype: w.map(|(_, mat, _)| mat.dtype().name().to_string()),
            density,
            bytes: w.map(|(_, mat, spec)| stored_bytes(mat, spec.format)),
            planned_format: choice.map(|c| c.format.to_string()),
            planned_kernel: choice.map(|c| c.kernel.clone()),
            planned_ns: choice.map(|c| c.ns),
        });
    }
    let (total, nonzero, _) = m.weight_stats();
    let r = Inspection {
        model: args.model.display().to_string(),
        name: m.graph.name.clone(),
        file_bytes: loaded.file_bytes,
        input_shape: m.graph.input.shape.clone(),
        labels: m.graph.labels.clone(),
        weights_total: total,
        weights_nonzero: nonzero,
        density: nonzero as f64 / total.max(1) as f64,
        plan_batch: plan.batch,
        plan_threads: plan.threads,
        plan_isa: plan.isa.clone(),
        plan_file: cache_path(&args.model).display().to_string(),
        plan_from_cache: cached,
        plan_chosen: plan.chosen.clone(),
        layers,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} ({}): {} bytes, input {:?}, {} of {} weights nonzero (density {:.2}%)",
        r.model,
        r.name,
        r.file_bytes,
        r.input_shape,
        r.weights_nonzero,
        r.weights_total,
        r.density * 100.0
    );
    println!(
        "plan for batch {} / {} thread(s) / {} ({}): {}",
        r.plan_batch,
        r.plan_threads,
        r.plan_isa,
        if r.plan_from_cache {
            "cached"
        } else {
            "measured now"
        },
        r.plan_file
    );
    println!(
        "{:<22} {:<14} {:>12} {:>14} {:>8} {:>9} {:>10}  {:<10} {:<28} {:>9}",
        "node", "op", "weight", "output", "stored", "density", "bytes", "planned", "kernel", "us"
    );
    for l in &r.layers {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        println!(
            "{:<22} {:<14} {:>12} {:>14} {:>8} {:>9} {:>10}  {:<10} {:<28} {:>9}",
            l.node,
            l.op,
            l.shape.map_or("-".into(), |s| format!("{}x{}", s[0], s[1])),
            format!("{:?}", l.output_shape),
            l.format
                .as_ref()
                .map_or("-".into(), |f| format!("{f}/{}", opt(&l.dtype))),
            l.density
                .map_or("-".into(), |d| format!("{:.2}%", d * 100.0)),
            l.bytes.map_or("-".into(), |b| b.to_string()),
            opt(&l.planned_format),
            opt(&l.planned_kernel),
            l.planned_ns
                .map_or("-".into(), |n| format!("{:.2}", n / 1e3)),
        );
    }
    Ok(ExitCode::SUCCESS)
}
