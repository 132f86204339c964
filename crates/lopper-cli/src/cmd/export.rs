//! `lopper export SOURCE --out FILE.lop [--format auto|dense|csr|bsrRxC] [--dtype f32|i8]`:
//! writes a `.lop` from a `lopper train` output folder (its checkpoint and `report.json`) or
//! re-encodes an existing `.lop` (another storage format, or int8 quantization).
//!
//! `--to onnx` (the default when `--out` ends in `.onnx`) writes a standard ONNX model instead:
//! pruned weights become dense initializers with exact zeros, int8 weights are dequantized, and
//! input and output keep the graph's names (see `lopper_model::export::onnx`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lopper_kernels::Dtype;
use lopper_model::{Model, StorageChoice};
use lopper_train::data::mnist;
use lopper_train::model::ZooModel;
use serde::Serialize;

use super::model_io::{export_meta, load};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A `lopper train` output folder, or a `.lop` (or `.onnx`) file to re-encode.
    pub source: PathBuf,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Output format: lop, or onnx (dense f32 initializers with exact zeros; int8 weights
    /// dequantized). Default: onnx when --out ends in .onnx, else lop.
    #[arg(long)]
    pub to: Option<String>,
    /// Storage per weight: auto (smallest encoding), planned (the format the planner runs the
    /// layer with at batch 1, 1 thread), dense, csr, csr-delta8 (one-byte relative column
    /// indices), or bsrRxC such as bsr4x1.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Weight values: f32, or i8 (symmetric per output channel, sparse formats only).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Dataset folder, for the input preprocessing recorded in the file (training folders only).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct ExportResult {
    pub source: String,
    pub out: String,
    pub format: String,
    pub dtype: String,
    pub file_bytes: u64,
    pub dense_file_bytes: u64,
    pub weights_total: usize,
    pub weights_nonzero: usize,
}

pub fn parse_dtype(s: &str) -> anyhow::Result<Dtype> {
    s.parse::<Dtype>()
        .map_err(|e| anyhow::anyhow!("--dtype: {e}"))
}

/// Exports a training folder's checkpoint (dense f32 with its zeros).
pub fn from_training_dir(
    dir: &std::path::Path,
    data: Option<&std::path::Path>,
) -> anyhow::Result<Model> {
    let report_path = dir.join("report.json");
    let text = std::fs::read_to_string(&report_path).with_context(|| {
        format!(
            "{}: not a lopper train folder (no readable report.json)",
            dir.display()
        )
    })?;
    let report: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", report_path.display()))?;
    let name = report
        .get("model")
        .and_then(|v| v.as_str())
        .with_context(|| format!("{}: has no \"model\" field", report_path.display()))?;
    let zoo: ZooModel = serde_json::from_value(serde_json::Value::String(name.into()))
        .with_context(|| format!("{}: unknown model '{name}'", report_path.display()))?;
    let data_dir = mnist::locate(data)?;
    let dataset = mnist::load(&data_dir)?;
    let meta = export_meta(zoo.name(), &dataset);
    let ckpt = lopper_train::checkpoint::open(dir)?;
    Ok(lopper_train::export::export_checkpoint(
        zoo,
        &ckpt.model,
        &meta,
    )?)
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let planned = args.format.eq_ignore_ascii_case("planned");
    let choice: StorageChoice = if planned {
        StorageChoice::Auto
    } else {
        args.format.parse().map_err(anyhow::Error::msg)?
    };
    let dtype = parse_dtype(&args.dtype)?;
    let model = if args.source.is_dir() {
        from_training_dir(&args.source, args.data.as_deref())?
    } else {
        load(&args.source)?.model
    };
    let to_onnx = match args.to.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("onnx") => true,
        Some("lop") => false,
        Some(other) => anyhow::bail!("unknown --to '{other}': use lop or onnx"),
        None => lopper_model::import::is_onnx(&args.out),
    };
    if to_onnx {
        return write_onnx(&args, &model, dtype);
    }
    let out = model.reencoded(choice, dtype).with_context(|| {
        format!(
            "encoding {} as {} {}",
            args.source.display(),
            args.format,
            args.dtype
        )
    })?;
    // `planned`: store each weight in the format the planner runs it with at batch 1, 1 thread.
    let out = if planned {
        let plan = lopper_model::runtime::make_plan(
            &out,
            "export",
            1,
            1,
            lopper_model::PlanMode::Measured,
        )?;
        out.reencoded_as_planned(&plan, dtype)?
    } else {
        out
    };
    let bytes = out.write(&args.out)?;
    let dense = model.densified()?.to_bytes()?.len() as u64;
    let (total, nonzero, _) = out.weight_stats();
    let r = ExportResult {
        source: args.source.display().to_string(),
        out: args.out.display().to_string(),
        format: args.format.clone(),
        dtype: args.dtype.clone(),
        file_bytes: bytes,
        dense_file_bytes: dense,
        weights_total: total,
        weights_nonzero: nonzero,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{}: {} bytes ({:.1}x smaller than dense f32, {} bytes); {} of {} weights nonzero",
            r.out,
            r.file_bytes,
            dense as f64 / bytes as f64,
            dense,
            nonzero,
            total
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--to onnx`: the model (quantized first with `--dtype i8`, as lopper would run it) as ONNX.
fn write_onnx(args: &ExportArgs, model: &Model, dtype: Dtype) -> anyhow::Result<ExitCode> {
    let model = model.reencoded(StorageChoice::Auto, dtype)?;
    let bytes = lopper_model::export::onnx::write(&model, &args.out)?;
    let (total, nonzero, _) = model.weight_stats();
    let int8 = model
        .weights
        .values()
        .any(|w| w.dtype() == lopper_kernels::Dtype::I8);
    if args.json {
        let r = serde_json::json!({
            "source": args.source.display().to_string(),
            "out": args.out.display().to_string(),
            "to": "onnx",
            "opset": lopper_model::export::onnx::OPSET,
            "weights": if int8 { "dequantized int8, dense f32" } else { "dense f32" },
            "file_bytes": bytes,
            "weights_total": total,
            "weights_nonzero": nonzero,
        });
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{}: ONNX opset {}, {} bytes; weights as dense f32 initializers{} ({} of {} nonzero, \
             pruned ones exact zeros)",
            args.out.display(),
            lopper_model::export::onnx::OPSET,
            bytes,
            if int8 { ", int8 dequantized" } else { "" },
            nonzero,
            total
        );
    }
    Ok(ExitCode::SUCCESS)
}
