//! `lopper prune MODEL.onnx|MODEL.lop --method ... --sparsity S [--pattern 2:4|4x1]
//! [--calib CALIB.npz] [--eval EVAL.npz] [--skip NAME,...] [--layer-sparsity NAME=S,...]
//! --out OUT.lop`: one-shot pruning of any graph model (see `lopper_model::oneshot::graph`).
//! Calibration and evaluation inputs are NumPy arrays of model inputs `[n, ...input shape]`
//! (keyed by the input name in an `.npz`). With `--eval`, the pruned model's outputs are compared
//! with the dense model's on those inputs. The report lands beside the output as
//! `OUT.report.json` and `OUT.report.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use lopper_kernels::{Dtype, Pattern};
use lopper_model::oneshot::fidelity::cosine;
use lopper_model::oneshot::graph::{prune_graph, GraphTargets};
use lopper_model::oneshot::{check_target, Method, PruneOptions, PrunedLayer, Target};
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::{Executor, Model};
use serde::Serialize;

use super::eval::argmax;
use super::prune::{sidecar, PruneArgs};

#[derive(Debug, Serialize)]
pub struct OutputFidelity {
    pub examples: usize,
    /// Mean over examples of the cosine between dense and pruned outputs.
    pub mean_cosine: f64,
    pub min_cosine: f64,
    /// Fraction of examples whose largest output (the predicted class) is unchanged.
    pub top1_agreement: f64,
    pub max_abs_diff: f64,
}

#[derive(Debug, Serialize)]
pub struct GraphPruneReport {
    pub model: String,
    pub out: String,
    pub method: Method,
    pub pattern: Option<Pattern>,
    pub target_sparsity: f64,
    /// Zero fraction over every weight layer (pruned or not), measured from the weights.
    pub sparsity: f64,
    pub params: usize,
    pub params_nonzero: usize,
    pub calib_examples: usize,
    pub dense_targets: bool,
    pub fidelity: Option<OutputFidelity>,
    pub file_bytes: u64,
    pub seconds: f64,
    pub per_layer: Vec<PrunedLayer>,
}

/// `NAME=S,...` (sparsities; `NAME=2:4` for an N:M pattern).
fn parse_layer_targets(spec: &[String]) -> anyhow::Result<BTreeMap<String, Target>> {
    let mut m = BTreeMap::new();
    for item in spec
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        let (name, v) = item.split_once('=').with_context(|| {
            format!("--layer-sparsity '{item}': give NAME=SPARSITY or NAME=N:M")
        })?;
        let ctx = || format!("--layer-sparsity '{item}'");
        let t = if v.contains(':') {
            match v.parse::<Pattern>().with_context(ctx)? {
                Pattern::Nm { n, m } => Target::Nm { n, m },
                Pattern::Block { .. } => anyhow::bail!("{}: give a sparsity or N:M", ctx()),
            }
        } else {
            Target::Unstructured(v.trim().parse().with_context(ctx)?)
        };
        check_target(t)?;
        m.insert(name.trim().to_string(), t);
    }
    Ok(m)
}

fn read_inputs(path: &Path, model: &Model) -> anyhow::Result<Vec<f32>> {
    if !lopper_model::npy::is_numpy(path) {
        bail!(
            "{}: a graph model is calibrated on its own inputs: give an .npy or .npz of \
             [n, {}] arrays (text calibration is for encoders)",
            path.display(),
            model
                .graph
                .input
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let bytes = lopper_model::limits::read_file(
        path,
        lopper_model::limits::max_input_bytes(),
        "LOPPER_MAX_INPUT_BYTES",
    )
    .map_err(|e| e.in_file(path))?;
    Ok(lopper_model::npy::read_input(
        path,
        &bytes,
        &model.graph.input.name,
        &model.graph.input.shape,
    )?)
}

fn outputs(model: &Model, x: &[f32]) -> anyhow::Result<Vec<f32>> {
    let n = x.len() / model.graph.input_len();
    let plan = make_plan(model, "eval", n, 1, PlanMode::Stored)?;
    Ok(Executor::new(model, &plan)?.run(x)?.to_vec())
}

fn compare(dense: &Model, pruned: &Model, x: &[f32]) -> anyhow::Result<OutputFidelity> {
    let (a, b) = (outputs(dense, x)?, outputs(pruned, x)?);
    let f: usize = dense.shapes[&dense.graph.output].iter().product();
    let cos: Vec<f64> = a
        .chunks(f)
        .zip(b.chunks(f))
        .map(|(p, q)| cosine(p, q))
        .collect();
    let agree = a
        .chunks(f)
        .zip(b.chunks(f))
        .filter(|(p, q)| argmax(p) == argmax(q))
        .count();
    Ok(OutputFidelity {
        examples: cos.len(),
        mean_cosine: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
        min_cosine: cos.iter().cloned().fold(f64::INFINITY, f64::min),
        top1_agreement: agree as f64 / cos.len().max(1) as f64,
        max_abs_diff: a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs() as f64)
            .fold(0.0, f64::max),
    })
}

pub fn run(args: &PruneArgs, target: Target) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let loaded = super::model_io::load(&args.model)?;
    let dense = loaded.model;
    let calib = match &args.calib {
        Some(p) => Some(read_inputs(p, &dense)?),
        None if args.method == Method::Magnitude => None,
        None => bail!(
            "--method {} needs --calib CALIB.npz (model inputs)",
            args.method.name()
        ),
    };
    let eval = match &args.eval {
        Some(p) => Some(read_inputs(p, &dense)?),
        None => None,
    };
    if let (Some(c), Some(e)) = (&calib, &eval) {
        let f = dense.graph.input_len();
        let seen: std::collections::HashSet<Vec<u32>> = c
            .chunks(f)
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect();
        let shared = e
            .chunks(f)
            .filter(|r| seen.contains(&r.iter().map(|v| v.to_bits()).collect::<Vec<_>>()))
            .count();
        if shared > 0 {
            bail!(
                "the calibration and evaluation inputs share {shared} examples; keep them disjoint"
            );
        }
    }
    let targets = GraphTargets {
        skip: args
            .skip
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        per_layer: parse_layer_targets(&args.layer_sparsity)?,
    };
    let opts = PruneOptions {
        damp: args.damp,
        dense_targets: !args.no_dense_targets,
        refit_max_kept: args.refit_max_kept,
        ..PruneOptions::new(args.method, target)
    };
    let layers = dense
        .graph
        .nodes
        .iter()
        .filter(|n| n.op.weight().is_some())
        .count() as u64;
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(layers)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} layers  {msg}  [{elapsed} / ETA {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (pruned, per_layer) = prune_graph(&dense, calib.as_deref(), &opts, &targets, &mut |rec| {
        bar.set_message(format!("{} {:.1}%", rec.name, 100.0 * rec.sparsity));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let out = pruned.reencoded(args.format, Dtype::F32)?;
    let file_bytes = out.write(&args.out)?;
    let fidelity = match &eval {
        Some(x) => Some(compare(&dense, &out, x)?),
        None => None,
    };
    let (total, nonzero, _) = out.weight_stats();
    let report = GraphPruneReport {
        model: args.model.display().to_string(),
        out: args.out.display().to_string(),
        method: args.method,
        pattern: args.pattern,
        target_sparsity: target.sparsity(),
        sparsity: 1.0 - nonzero as f64 / total.max(1) as f64,
        params: total,
        params_nonzero: nonzero,
        calib_examples: calib
            .as_ref()
            .map_or(0, |c| c.len() / dense.graph.input_len()),
        dense_targets: args.method == Method::Sparsegpt && !args.no_dense_targets,
        fidelity,
        file_bytes,
        seconds: started.elapsed().as_secs_f64(),
        per_layer,
    };
    let json = serde_json::to_string_pretty(&report)?;
    crate::util::write_atomic(&sidecar(&args.out, "json"), json.as_bytes())?;
    let md = markdown(&report);
    crate::util::write_atomic(&sidecar(&args.out, "md"), md.as_bytes())?;
    if args.json {
        println!("{json}");
    } else {
        print!("{md}");
    }
    Ok(ExitCode::SUCCESS)
}

fn markdown(r: &GraphPruneReport) -> String {
    let mut s = format!(
        "# lopper prune: {} -> {}\n\nmethod {}{}, target sparsity {:.1} %, measured {:.2} % over {} weights ({} nonzero); calibration: {} examples; file {} bytes; {:.1} s\n\n",
        r.model,
        r.out,
        r.method.name(),
        r.pattern.map(|p| format!(" ({p})")).unwrap_or_default(),
        100.0 * r.target_sparsity,
        100.0 * r.sparsity,
        r.params,
        r.params_nonzero,
        r.calib_examples,
        r.file_bytes,
        r.seconds
    );
    if let Some(f) = &r.fidelity {
        s += &format!(
            "outputs against the dense model on {} held-out examples: mean cosine {:.4}, min {:.4}, top-1 agreement {:.1} %, max |diff| {:.3e}\n\n",
            f.examples, f.mean_cosine, f.min_cosine, 100.0 * f.top1_agreement, f.max_abs_diff
        );
    }
    s + &super::prune::layer_table(&r.per_layer)
}
