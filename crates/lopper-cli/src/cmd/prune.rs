//! `lopper prune MODEL --method magnitude|wanda|sparsegpt --sparsity S [--pattern 2:4 | 4x1]
//! --calib FILE --out X.lop [--eval FILE]`: one-shot pruning of a pretrained encoder without
//! retraining. Layers are pruned in sequence, each calibrated on the outputs of the already
//! pruned layers before it. With `--eval`, the pruned model's embeddings of held-out sentences
//! are compared with the dense model's (cosine, Spearman of pairwise similarities). The report
//! lands next to the model as `X.report.json` and `X.report.md`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lopper_kernels::{Dtype, Pattern};
use lopper_model::bert::file::load;
use lopper_model::bert::{BertRunner, Encoded};
use lopper_model::oneshot::fidelity::{fidelity, Fidelity};
use lopper_model::oneshot::{check_target, prune_bert, Method, PruneOptions, PrunedLayer, Target};
use lopper_model::StorageChoice;
use serde::Serialize;

use super::embed::{embed_all, read_lines};

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Model folder (Hugging Face BERT family), encoder .lop, or any graph model (.onnx or
    /// .lop): every Linear (MatMul/Gemm with a constant weight) and plain Conv is pruned.
    pub model: PathBuf,
    /// magnitude, wanda (|W|·‖X‖ per output row) or sparsegpt (OBS with weight reconstruction).
    #[arg(long)]
    pub method: Method,
    /// Fraction of every encoder Linear's weights to remove, in [0, 1). With --pattern it may
    /// be left out (it is then 1 - N/M).
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// N:M pattern instead of unstructured sparsity, for example 2:4; or Rx1 blocks (R
    /// consecutive output rows pruned together per input, for example 4x1, with --sparsity), which
    /// the BSR 4x1 kernels run with one input load per block.
    #[arg(long)]
    pub pattern: Option<Pattern>,
    /// Calibration data (needed by wanda and sparsegpt): sentences, one per line, for encoders;
    /// model inputs as .npy/.npz for graph models.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Held-out data for the fidelity report, as --calib (must not overlap it).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Graph models: layers (node or weight names, comma-separated) to leave dense.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Graph models: per-layer targets, NAME=SPARSITY or NAME=N:M, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub layer_sparsity: Vec<String>,
    /// Output model file (.lop).
    #[arg(long)]
    pub out: PathBuf,
    /// Storage of the pruned Linear weights: auto (smallest), dense, csr, csr-delta8, bsrRxC.
    #[arg(long, default_value = "auto")]
    pub format: StorageChoice,
    /// SparseGPT dampening (fraction of the mean Hessian diagonal).
    #[arg(long, default_value_t = 0.01)]
    pub damp: f64,
    /// SparseGPT: fit each layer to its own outputs on the pruned model's inputs (the paper's
    /// loss) instead of the dense model's outputs. The dense targets need enough calibration
    /// text: on all-MiniLM-L6-v2 they helped with 1024 sentences and hurt with 256.
    #[arg(long)]
    pub no_dense_targets: bool,
    /// SparseGPT: solve kept weights exactly per row once the mask is chosen, for rows keeping
    /// at most this many weights (0: off).
    #[arg(long, default_value_t = 1024)]
    pub refit_max_kept: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub model: String,
    pub out: String,
    pub method: Method,
    pub pattern: Option<Pattern>,
    pub target_sparsity: f64,
    /// Zero fraction over all encoder Linear weights, measured from the weights.
    pub sparsity: f64,
    pub params_linear: usize,
    pub params_linear_nonzero: usize,
    pub calib_sentences: usize,
    pub calib_tokens: usize,
    /// SparseGPT fitted each layer to the dense model's outputs.
    pub dense_targets: bool,
    pub eval_sentences: usize,
    pub fidelity: Option<Fidelity>,
    pub file_bytes: u64,
    pub seconds: f64,
    pub per_layer: Vec<PrunedLayer>,
}

/// `N:M`, or `Rx1` for blocks of R output rows (with `sparsity`, which the block form needs).
fn pattern_target(p: Pattern, sparsity: Option<f64>) -> anyhow::Result<Target> {
    match p {
        Pattern::Nm { n, m } => Ok(Target::Nm { n, m }),
        Pattern::Block { cols, .. } if cols != 1 => anyhow::bail!(
            "--pattern {p}: only Rx1 blocks (R output rows sharing one input) are supported"
        ),
        Pattern::Block { rows, .. } => {
            let sparsity = sparsity.ok_or_else(|| {
                anyhow::anyhow!(
                    "--pattern {p} needs --sparsity S (the fraction of blocks to remove)"
                )
            })?;
            Ok(Target::Block { sparsity, rows })
        }
    }
}

fn target_of(args: &PruneArgs) -> anyhow::Result<Target> {
    let t = match (args.pattern, args.sparsity) {
        (Some(p), s) => {
            let t = pattern_target(p, s)?;
            check_target(t)?;
            if let Some(s) = s {
                if (s - t.sparsity()).abs() > 1e-9 {
                    anyhow::bail!(
                        "--sparsity {s} disagrees with --pattern {p} (which removes {})",
                        t.sparsity()
                    );
                }
            }
            t
        }
        (None, Some(s)) => Target::Unstructured(s),
        (None, None) => anyhow::bail!("give --sparsity S (in [0, 1)) or --pattern N:M"),
    };
    check_target(t)?;
    Ok(t)
}

/// `X.lop` -> `X.report.json` / `X.report.md`.
pub fn sidecar(out: &Path, ext: &str) -> PathBuf {
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    out.with_file_name(format!("{stem}.report.{ext}"))
}

pub fn run(args: PruneArgs) -> anyhow::Result<ExitCode> {
    let target = target_of(&args)?;
    if !(args.damp > 0.0 && args.damp < 1.0) {
        anyhow::bail!("--damp {} is outside (0, 1)", args.damp);
    }
    let encoder = !lopper_model::import::is_onnx(&args.model)
        && lopper_model::bert::file::sniff(&args.model)?;
    if !encoder {
        return super::prune_graph::run(&args, target);
    }
    if !args.skip.is_empty() || !args.layer_sparsity.is_empty() {
        anyhow::bail!("--skip and --layer-sparsity apply to graph models (.onnx or graph .lop)");
    }
    let calib_lines = match &args.calib {
        Some(p) => read_lines(p, "calibration")?,
        None if args.method == Method::Magnitude => Vec::new(),
        None => anyhow::bail!(
            "--method {} needs --calib FILE (real sentences, one per line)",
            args.method.name()
        ),
    };
    let eval_lines = match &args.eval {
        Some(p) => read_lines(p, "evaluation")?,
        None => Vec::new(),
    };
    let calib_set: HashSet<&str> = calib_lines.iter().map(String::as_str).collect();
    let shared = eval_lines
        .iter()
        .filter(|l| calib_set.contains(l.as_str()))
        .count();
    if shared > 0 {
        anyhow::bail!(
            "the calibration and evaluation files share {shared} sentences; keep them disjoint"
        );
    }
    let started = Instant::now();
    let (bert, _) = load(&args.model)?;
    lopper_model::bert::verify::probe(&bert).with_context(|| args.model.display().to_string())?;
    let dense = bert.clone();
    let probe = BertRunner::stored(bert.clone())?;
    let refs: Vec<&str> = calib_lines.iter().map(String::as_str).collect();
    let calib: Encoded = probe.encode(&refs)?;
    drop(probe);
    let opts = PruneOptions {
        damp: args.damp,
        dense_targets: !args.no_dense_targets,
        refit_max_kept: args.refit_max_kept,
        ..PruneOptions::new(args.method, target)
    };
    let layers = bert.linears().len() as u64;
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(layers)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} layers  {msg}  [{elapsed} / ETA {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (pruned, per_layer) = prune_bert(bert, &calib, &opts, &mut |rec| {
        bar.set_message(format!("{} {:.1}%", rec.name, 100.0 * rec.sparsity));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let (total, nnz) = pruned.linear_stats();
    let pattern = args.pattern;
    let notes: BTreeMap<String, String> = [
        ("source".to_string(), args.model.display().to_string()),
        ("method".to_string(), args.method.name().to_string()),
        (
            "target".to_string(),
            pattern
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("{:.4}", target.sparsity())),
        ),
    ]
    .into();
    let file_bytes = pruned.write_lop(&args.out, args.format, Dtype::F32, notes)?;
    let fid = if eval_lines.is_empty() {
        None
    } else {
        let mut d = BertRunner::stored(dense)?;
        let mut p = BertRunner::stored(pruned)?;
        let ed = embed_all(&mut d, &eval_lines, 32)?;
        let ep = embed_all(&mut p, &eval_lines, 32)?;
        Some(fidelity(&ed, &ep, d.hidden()))
    };
    let report = PruneReport {
        model: args.model.display().to_string(),
        out: args.out.display().to_string(),
        method: args.method,
        pattern,
        target_sparsity: target.sparsity(),
        sparsity: 1.0 - nnz as f64 / total.max(1) as f64,
        params_linear: total,
        params_linear_nonzero: nnz,
        calib_sentences: calib_lines.len(),
        calib_tokens: calib.tokens(),
        dense_targets: args.method == Method::Sparsegpt && !args.no_dense_targets,
        eval_sentences: eval_lines.len(),
        fidelity: fid,
        file_bytes,
        seconds: started.elapsed().as_secs_f64(),
        per_layer,
    };
    let json = serde_json::to_string_pretty(&report)?;
    crate::util::write_atomic(&sidecar(&args.out, "json"), json.as_bytes())?;
    let md = markdown(&report);
    crate::util::write_atomic(&sidecar(&args.out, "md"), md.as_bytes())?;
    let plot = fidelity_plot(&args.out)?;
    if args.json {
        println!("{json}");
    } else {
        print!("{md}");
        if let Some(p) = plot {
            println!(
                "\nfidelity plot of every report in this folder: {}",
                p.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Redraws `fidelity.png` beside `out` from every `*.report.json` there that has a fidelity
/// (so a sweep of `lopper prune` runs into one folder builds up one plot). Crosses mark N:M;
/// row-block patterns get a line per method and block shape.
fn fidelity_plot(out: &Path) -> anyhow::Result<Option<PathBuf>> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut by_method: BTreeMap<String, crate::plots::FidelitySeries> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".report.json") {
            continue;
        }
        // Other files in the folder are not ours to judge; unreadable ones are skipped.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let (Some(method), Some(s), Some(cos)) = (
            v["method"].as_str(),
            v["sparsity"].as_f64(),
            v["fidelity"]["mean_cosine"].as_f64(),
        ) else {
            continue;
        };
        // Row blocks (`4x1`) sweep sparsity like unstructured pruning: a line of their own.
        // N:M fixes the sparsity: crosses on the method's line.
        let label = match v["pattern"].as_str() {
            Some(p) if p.contains('x') => format!("{method} {p}"),
            _ => method.to_string(),
        };
        let e = by_method
            .entry(label.clone())
            .or_insert_with(|| (label, Vec::new(), Vec::new()));
        match v["pattern"].as_str() {
            Some(p) if !p.contains('x') => e.2.push((100.0 * s, cos)),
            _ => e.1.push((100.0 * s, cos)),
        }
    }
    if by_method.is_empty() {
        return Ok(None);
    }
    let series: Vec<_> = by_method.into_values().collect();
    let path = dir.join("fidelity.png");
    crate::plots::fidelity_vs_sparsity(&path, "one-shot pruning: embedding fidelity", &series)?;
    Ok(Some(path))
}

fn markdown(r: &PruneReport) -> String {
    let mut s = format!(
        "# lopper prune: {} -> {}\n\nmethod {}{}, target sparsity {:.1} %, measured {:.2} % over {} encoder Linear weights ({} nonzero)\n\ncalibration: {} sentences, {} tokens; file {} bytes; {:.1} s\n\n",
        r.model,
        r.out,
        r.method.name(),
        r.pattern.map(|p| format!(" ({p})")).unwrap_or_default(),
        100.0 * r.target_sparsity,
        100.0 * r.sparsity,
        r.params_linear,
        r.params_linear_nonzero,
        r.calib_sentences,
        r.calib_tokens,
        r.file_bytes,
        r.seconds
    );
    if let Some(f) = &r.fidelity {
        s += &format!(
            "fidelity on {} held-out sentences: mean cosine {:.4}, min cosine {:.4}, Spearman of pairwise similarities {:.4}\n\n",
            f.sentences, f.mean_cosine, f.min_cosine, f.spearman
        );
    }
    s + &layer_table(&r.per_layer)
}

/// The per-layer table of a prune report (encoders and graphs).
pub fn layer_table(layers: &[PrunedLayer]) -> String {
    let mut s = String::from(
        "| layer | shape [out, in] | sparsity | rel. error | note |\n|---|---|---|---|---|\n",
    );
    for l in layers {
        s += &format!(
            "| {} | {}x{} | {:.2} % | {} | {} |\n",
            l.name,
            l.shape[0],
            l.shape[1],
            100.0 * l.sparsity,
            l.rel_error
                .map(|e| format!("{e:.4}"))
                .unwrap_or_else(|| "-".into()),
            l.note.as_deref().unwrap_or("")
        );
    }
    s
}
