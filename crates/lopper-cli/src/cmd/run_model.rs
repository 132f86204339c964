//! `lopper run MODEL --input FILE [--output OUT.npy|.npz] [--json]`: predictions and
//! probabilities for the examples in FILE. A NumPy `.npy` (or `.npz`, keyed by the graph's input
//! name) holds `[n, ...input shape]` model inputs; an IDX file of 8-bit images (raw or gzip, as
//! Fashion-MNIST ships) is preprocessed as the model file says; any other file is read as
//! little-endian f32 values already preprocessed, `[n, input size]` example after example.
//! `--output` writes the raw graph outputs `[n, ...output shape]`, under the graph's output name
//! in an `.npz`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lopper_model::graph::Op;
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::Executor;
use serde::Serialize;

use super::eval::argmax;
use super::model_io::load_checked;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model file (.lop or .onnx).
    pub model: PathBuf,
    /// Input: .npy/.npz (keyed by the graph's input name), IDX images (.gz or raw), or raw
    /// little-endian f32.
    #[arg(long)]
    pub input: PathBuf,
    /// Write the graph's outputs to this .npy or .npz (keyed by the graph's output name).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print JSON: outputs (raw graph output), predictions, labels and probabilities.
    #[arg(long)]
    pub json: bool,
    /// Threads (at most the machine's cores unless --threads-force).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Allow more threads than cores.
    #[arg(long)]
    pub threads_force: bool,
    /// Print NaN or infinite outputs instead of failing on them.
    #[arg(long)]
    pub allow_nan: bool,
}

#[derive(Debug, Serialize)]
struct RunOutput {
    model: String,
    input: String,
    batch: usize,
    outputs: Vec<Vec<f32>>,
    predictions: Vec<usize>,
    labels: Vec<String>,
    probabilities: Vec<Vec<f32>>,
}

/// Reads the examples in `path` as model input `[n, features]`.
pub(crate) fn read_input(path: &Path, spec: &lopper_model::InputSpec) -> anyhow::Result<Vec<f32>> {
    let features: usize = spec.shape.iter().product();
    let pre = spec.preprocess;
    let limit = lopper_model::limits::max_input_bytes();
    // One bounded read: the file itself is at most the limit, and so is a gzip IDX payload.
    let bytes = lopper_model::limits::read_file(path, limit, "LOPPER_MAX_INPUT_BYTES")
        .with_context(|| format!("{}: cannot read the input", path.display()))?;
    if lopper_model::npy::is_numpy(path) {
        return Ok(lopper_model::npy::read_input(
            path,
            &bytes,
            &spec.name,
            &spec.shape,
        )?);
    }
    let is_gzip = bytes.starts_with(&[0x1f, 0x8b]);
    let is_idx = bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08;
    if is_gzip || is_idx {
        let idx = lopper_train::data::idx::parse_idx_limited(
            path,
            &bytes,
            usize::try_from(limit).unwrap_or(usize::MAX),
        )
        .map_err(|e| match e {
            lopper_train::data::idx::IdxError::TooLarge { .. } => {
                anyhow::anyhow!("{e} (set LOPPER_MAX_INPUT_BYTES to raise it)")
            }
            e => e.into(),
        })?;
        let per: usize = idx.dims.iter().skip(1).product();
        if idx.dims.len() < 2 || per != features {
            anyhow::bail!(
                "{}: IDX images of shape {:?} do not fit the model's {features} inputs per example",
                path.display(),
                idx.dims
            );
        }
        let Some(p) = pre else {
            anyhow::bail!(
                "{}: the model file has no input preprocessing, so it cannot take 8-bit images; give raw f32 input",
                path.display()
            );
        };
        return Ok(idx
            .data
            .iter()
            .map(|&v| (v as f32 * p.scale - p.mean) / p.std)
            .collect());
    }
    if bytes.len() % 4 != 0 || bytes.is_empty() || (bytes.len() / 4) % features != 0 {
        anyhow::bail!(
            "{}: {} bytes is not a whole number of examples of {features} f32 values (and not an IDX file)",
            path.display(),
            bytes.len()
        );
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    check_raw_f32(path, &v)?;
    Ok(v)
}

/// Refuses raw input that cannot be preprocessed f32 values: NaN or infinity, or bytes that are
/// plainly something else read four at a time (8-bit pixels without an IDX header give tiny
/// subnormals and huge magnitudes).
fn check_raw_f32(path: &Path, v: &[f32]) -> anyhow::Result<()> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        anyhow::bail!(
            "{}: value {i} is {}: inputs must be finite",
            path.display(),
            v[i]
        );
    }
    let odd = v
        .iter()
        .filter(|x| x.is_subnormal() || x.abs() > 1e8)
        .count();
    if odd * 100 > v.len() {
        anyhow::bail!(
            "{}: {odd} of {} values are subnormal or above 1e8 in magnitude: this does not look \
             like little-endian f32 input (8-bit pixels need an IDX header; see `lopper run --help`)",
            path.display(),
            v.len()
        );
    }
    Ok(())
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = row.iter().map(|&v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_checked(&args.model, args.allow_nan)?;
    let model = &loaded.model;
    let f = model.graph.input_len();
    let x = read_input(&args.input, &model.graph.input)?;
    let n = x.len() / f;
    if n == 0 {
        anyhow::bail!("{}: holds 0 examples", args.input.display());
    }
    let threads = super::check_threads(args.threads, args.threads_force)?;
    let mut outputs = Vec::with_capacity(n);
    // Chunks of up to 256 examples keep buffers small for large inputs.
    let chunk = n.min(256);
    let mut ex: Option<Executor> = None;
    for start in (0..n).step_by(chunk) {
        let b = chunk.min(n - start);
        if ex.as_ref().is_none_or(|e| e.batch() != b) {
            let plan = make_plan(model, &loaded.digest, b, threads, PlanMode::Stored)?;
            ex = Some(Executor::new(model, &plan)?);
        }
        let Some(e) = ex.as_mut() else { unreachable!() };
        let classes = e.out_features();
        let out = e.run(&x[start * f..(start + b) * f])?;
        outputs.extend(out.chunks(classes).map(<[f32]>::to_vec));
    }
    if !args.allow_nan {
        super::check_finite(
            outputs.iter().flatten().copied(),
            &format!("{}: output", args.model.display()),
        )?;
    }
    if let Some(path) = &args.output {
        let mut dims = vec![n];
        dims.extend(&model.shapes[&model.graph.output]);
        let flat: Vec<f32> = outputs.iter().flatten().copied().collect();
        lopper_model::npy::write_output(path, &model.graph.output, &dims, &flat)?;
    }
    let already_softmax = model
        .graph
        .nodes
        .iter()
        .any(|nd| nd.output == model.graph.output && nd.op == Op::Softmax);
    let probabilities: Vec<Vec<f32>> = outputs
        .iter()
        .map(|o| {
            if already_softmax {
                o.clone()
            } else {
                softmax(o)
            }
        })
        .collect();
    let predictions: Vec<usize> = outputs.iter().map(|o| argmax(o)).collect();
    let label = |i: usize| {
        model
            .graph
            .labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    };
    let out = RunOutput {
        model: args.model.display().to_string(),
        input: args.input.display().to_string(),
        batch: n,
        labels: predictions.iter().map(|&p| label(p)).collect(),
        outputs,
        predictions,
        probabilities,
    };
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer(&mut w, &out)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(w))
    } else {
        out.predictions
            .iter()
            .zip(&out.probabilities)
            .enumerate()
            .try_for_each(|(i, (&p, probs))| {
                writeln!(w, "{i}: {} (class {p}, p = {:.4})", label(p), probs[p])
            })
    };
    match written.and_then(|()| w.flush()) {
        // A closed pipe (`lopper run ... | head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => {
            r.context("writing the predictions")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
