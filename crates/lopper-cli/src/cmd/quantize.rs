//! `lopper quantize MODEL --out MODEL-int8.lop [--eval X.npz|X.idx] [--skip NAME,...]`: int8
//! weights (symmetric per output row, in their smallest sparse encoding) and permission to
//! quantize each layer's activations per column at run time, so the planner may run the layer
//! on the int8 × int8 kernels (AVX-512 VNNI where the CPU has it) when they are faster.
//!
//! The fidelity report compares the f32 model with the int8 one on `--eval` inputs with every
//! allowed layer on int8 × int8 (the worst case: the measured plan may keep some in f32): top-1
//! agreement and mean cosine of the outputs, per example.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lopper_kernels::Dtype;
use lopper_model::runtime::plan::{int8_plan, make_plan, PlanMode};
use lopper_model::{Executor, Model, StorageChoice};
use serde::Serialize;

use super::eval::argmax;
use super::model_io::load;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Model file (.lop or .onnx).
    pub model: PathBuf,
    /// Output .lop file.
    #[arg(long)]
    pub out: PathBuf,
    /// Held-out inputs for the fidelity report (.npy/.npz keyed by the graph's input name, or IDX
    /// images preprocessed as the model file says).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Layers (node or weight names, comma-separated) to keep in f32, weights and activations.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Storage of the int8 weights: auto (smallest), csr, csr-delta8, or bsrRxC.
    #[arg(long, default_value = "auto")]
    pub format: StorageChoice,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct QuantizeReport {
    pub model: String,
    pub out: String,
    /// Weight layers whose weights are int8 and whose activations may be quantized.
    pub int8_layers: Vec<String>,
    /// Weight layers kept in f32 (`--skip`, grouped or dilated convolutions, over 65 536 inputs).
    pub f32_layers: Vec<String>,
    pub file_bytes: u64,
    pub source_weight_bytes: usize,
    pub int8_weight_bytes: usize,
    /// Examples in `--eval` (0 when not given).
    pub eval_examples: usize,
    /// Fraction of examples whose top-1 output is the same as the f32 model's.
    pub top1_agreement: Option<f64>,
    /// Mean cosine between the f32 and the int8 outputs, per example.
    pub mean_cosine: Option<f64>,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.model)?;
    let src = &loaded.model;
    let names: Vec<(String, String)> = src
        .graph
        .nodes
        .iter()
        .filter_map(|n| n.op.weight().map(|w| (n.name.clone(), w.to_string())))
        .collect();
    for s in &args.skip {
        if !names.iter().any(|(n, w)| n == s || w == s) {
            anyhow::bail!("--skip {s}: no weight layer of that node or weight name");
        }
    }
    let q = src.reencoded(args.format, Dtype::I8)?;
    let mut weights = q.weights.clone();
    let mut graph = q.graph.clone();
    let (mut int8_layers, mut f32_layers) = (Vec::new(), Vec::new());
    for node in &src.graph.nodes {
        let Some(w) = node.op.weight() else { continue };
        let skipped = args.skip.iter().any(|s| *s == node.name || s == w);
        let fits =
            !node.op.is_general_conv() && src.weights[w].cols() <= lopper_kernels::int8::MAX_IN;
        if skipped || !fits {
            weights.insert(w.to_string(), src.weights[w].clone());
            f32_layers.push(node.name.clone());
        } else {
            int8_layers.push(node.name.clone());
        }
    }
    // Specs follow the matrices (`Model::new`); the permission is set on the int8 ones.
    for name in &int8_layers {
        let node = src.graph.nodes.iter().find(|n| &n.name == name);
        if let Some(w) = node.and_then(|n| n.op.weight()) {
            if let Some(spec) = graph.weights.get_mut(w) {
                spec.int8_acts = true;
            }
        }
    }
    // `Model::new` keeps the permission where the weight stays int8 (not on the f32 ones put back).
    let model = Model::new(graph, weights, q.vectors.clone())?;
    let (mut agreement, mut mean_cos, mut n_eval) = (None, None, 0);
    if let Some(eval) = &args.eval {
        let x = super::run_model::read_input(eval, &src.graph.input)?;
        let f = src.graph.input_len();
        n_eval = x.len() / f.max(1);
        if n_eval == 0 {
            anyhow::bail!("{}: holds no examples", eval.display());
        }
        let batch = n_eval.min(64);
        let want = outputs(
            src,
            &make_plan(src, "f32", batch, 1, PlanMode::Stored)?,
            &x,
            batch,
        )?;
        let got = outputs(&model, &int8_plan(&model, batch)?, &x, batch)?;
        let o = want.len() / n_eval;
        let (mut same, mut cos) = (0usize, 0.0f64);
        for (a, b) in want.chunks_exact(o).zip(got.chunks_exact(o)) {
            same += usize::from(argmax(a) == argmax(b));
            cos += cosine(a, b);
        }
        agreement = Some(same as f64 / n_eval as f64);
        mean_cos = Some(cos / n_eval as f64);
    }
    super::check_finite(
        outputs(
            &model,
            &int8_plan(&model, 1)?,
            &vec![0.5; src.graph.input_len()],
            1,
        )?
        .into_iter(),
        &format!(
            "{}: the int8 model's outputs on a probe input",
            args.out.display()
        ),
    )?;
    let file_bytes = model.write(&args.out)?;
    let report = QuantizeReport {
        model: args.model.display().to_string(),
        out: args.out.display().to_string(),
        int8_layers,
        f32_layers,
        file_bytes,
        source_weight_bytes: src.weight_stats().2,
        int8_weight_bytes: model.weight_stats().2,
        eval_examples: n_eval,
        top1_agreement: agreement,
        mean_cosine: mean_cos,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &QuantizeReport) {
    println!(
        "{} -> {}: {} layers int8 (weights and activations), {} kept f32",
        r.model,
        r.out,
        r.int8_layers.len(),
        r.f32_layers.len()
    );
    println!(
        "weights {} -> {} bytes; file {} bytes",
        r.source_weight_bytes, r.int8_weight_bytes, r.file_bytes
    );
    match (r.top1_agreement, r.mean_cosine) {
        (Some(a), Some(c)) => println!(
            "fidelity on {} held-out examples, every int8 layer on int8 x int8: top-1 agreement \
             {:.2} %, mean cosine {c:.5}",
            r.eval_examples,
            100.0 * a
        ),
        _ => println!("fidelity not measured (give --eval X.npz or IDX images)"),
    }
}

/// The model's outputs for `x` (examples of `graph.input_len()` values), `batch` at a time.
fn outputs(
    model: &Model,
    plan: &lopper_model::Plan,
    x: &[f32],
    batch: usize,
) -> anyhow::Result<Vec<f32>> {
    let f = model.graph.input_len();
    let mut ex = Executor::new(model, plan)?;
    let mut out = Vec::new();
    for chunk in x.chunks(f * batch) {
        if chunk.len() == f * batch {
            out.extend_from_slice(ex.run(chunk)?);
        } else {
            // The last, short chunk: padded to the planned batch, the padding's outputs dropped.
            let mut padded = chunk.to_vec();
            padded.resize(f * batch, 0.0);
            let y = ex.run(&padded)?;
            out.extend_from_slice(&y[..y.len() / batch * (chunk.len() / f)]);
        }
    }
    Ok(out)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else {
        ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
    }
}
